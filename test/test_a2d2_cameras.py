"""The six A2D2 cameras from cams_lidars.json: pinhole and fisheye lenses, undistortion."""
import cv2
import numpy as np
import pytest

from training.data.a2d2_calibration import (CAMERA_NAMES, a2d2_camera, camera_file_token, camera_folder,
                                            load_calibration)


@pytest.fixture(scope='module')
def calibration():
    return load_calibration()


def _view_points_at(camera, pixels, depth_m):
    """View-frame points (x fwd, y left, z up) that CamMatrix projects to `pixels` (col, row)."""
    k = camera.camera_matrix
    x = np.full(len(pixels), float(depth_m))
    return np.stack([x, -(pixels[:, 0] - k[0, 2]) / k[0, 0] * x, -(pixels[:, 1] - k[1, 2]) / k[1, 1] * x], axis=1)


def test_the_six_cameras_and_their_lenses(calibration):
    cameras = [a2d2_camera(calibration, name) for name in CAMERA_NAMES]
    assert [c.fisheye for c in cameras] == [False, True, True, True, True, True]
    assert all(c.distortion.shape == (4,) for c in cameras[1:])
    assert camera_folder('side_left') == 'cam_side_left' and camera_file_token('rear_center') == 'rearcenter'
    # the rear camera looks backwards, the side ones sideways (optical axis in the vehicle frame)
    axis = {c.name: c.view_to_vehicle[:3, 0] for c in cameras}
    assert axis['rear_center'][0] < -0.99 and axis['side_left'][1] > 0.95 and axis['side_right'][1] < -0.95


@pytest.mark.parametrize('name', ['front_left', 'side_right', 'rear_center'])
def test_fisheye_undistortion_puts_known_points_where_cam_matrix_projects_them(calibration, name):
    """Dots drawn where OpenCV's fisheye model projects 3D points into the on-disk (distorted)
    image land, after undistortion, where CamMatrix projects the same points."""
    camera = a2d2_camera(calibration, name)
    height, width = camera.image_size_hw
    rng = np.random.default_rng(3)
    expected = rng.uniform([150, 120], [width - 150, height - 120], (12, 2))
    points = _view_points_at(camera, expected, rng.uniform(4.0, 40.0))
    distorted_px = cv2.fisheye.projectPoints(
        np.stack([-points[:, 1], -points[:, 2], points[:, 0]], axis=1).reshape(-1, 1, 3),
        np.zeros(3), np.zeros(3), camera.camera_matrix_original, camera.distortion)[0].reshape(-1, 2)
    np.testing.assert_allclose(camera.distorted_pixels(points), distorted_px, atol=1e-9)
    image = np.zeros((height, width), np.uint8)
    for col, row in distorted_px:
        cv2.circle(image, (int(round(col)), int(round(row))), 6, 255, -1)
    undistorted = camera.undistort_image(image)
    for col, row in expected:
        patch = undistorted[int(row) - 12:int(row) + 13, int(col) - 12:int(col) + 13].astype(np.float64)
        ys, xs = np.mgrid[-12:13, -12:13]
        centroid = np.array([(patch * xs).sum(), (patch * ys).sum()]) / patch.sum()
        assert np.abs(centroid + [int(col), int(row)] - [col, row]).max() < 1.5
    # labels: nearest-neighbour keeps every value exact
    labels = (np.arange(height * width) % 7).astype(np.uint8).reshape(height, width)
    assert set(np.unique(camera.undistort_label(labels))) <= set(range(7))


@pytest.mark.parametrize('name', CAMERA_NAMES)
def test_distortion_maps_invert_the_lens(calibration, name):
    camera = a2d2_camera(calibration, name)
    height, width = camera.image_size_hw
    rng = np.random.default_rng(5)
    undistorted = rng.uniform([300, 200], [width - 300, height - 200], (40, 2))
    distorted = camera.distorted_pixels(_view_points_at(camera, undistorted, 10.0))
    map_x, map_y = camera.distortion_maps()
    index = np.round(distorted).astype(int)
    # the map at a distorted pixel is the undistorted position of that pixel (within its rounding)
    back = camera.normalized_from_distorted(index) @ camera.camera_matrix[:2, :2].T + camera.camera_matrix[:2, 2]
    np.testing.assert_allclose(np.stack([map_x[index[:, 1], index[:, 0]], map_y[index[:, 1], index[:, 0]]], 1),
                               back, atol=1e-2)
    np.testing.assert_allclose(camera.normalized_from_distorted(distorted) @ camera.camera_matrix[:2, :2].T
                               + camera.camera_matrix[:2, 2], undistorted, atol=0.05)


def test_a_fisheye_camera_with_five_coefficients_is_refused(calibration):
    broken = {'cameras': {'front_left': dict(calibration['cameras']['front_left'],
                                             Distortion=[[0.1, 0.0, 0.0, 0.0, 0.0]])}}
    with pytest.raises(ValueError, match='cameras.front_left.*4 distortion coefficients'):
        a2d2_camera(broken, 'front_left')
    with pytest.raises(ValueError, match='cameras.rear_left is missing'):
        a2d2_camera(calibration, 'rear_left')
