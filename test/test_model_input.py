"""The one map from a received camera image to the model input (undistortion + resize in one remap)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtl_perception_ros.core.camera import project_points, scale_camera_matrix
from mtl_perception_ros.core.camera_calibration import CameraCalibration
from mtl_perception_ros.core.model_input import ModelInputMap, model_input, supersample_factor

OPTICAL = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
K = np.array([[1687.3, 0.0, 965.4], [0.0, 1783.4, 684.4], [0.0, 0.0, 1.0]])


def scene_image(hw=(1208, 1920), seed=0) -> np.ndarray:
    """Smooth gradients, sharp-edged blocks and pixel-level texture (foliage, gravel): detail at every scale."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:hw[0], 0:hw[1]]
    image = np.stack([cols * 255 // hw[1], rows * 255 // hw[0], (cols + rows) * 127 // sum(hw)], -1).astype(np.uint8)
    for _ in range(60):
        y, x = rng.integers(0, hw[0] - 80), rng.integers(0, hw[1] - 80)
        image[y:y + rng.integers(5, 80), x:x + rng.integers(5, 80)] = rng.integers(0, 256, 3)
    return np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)


def test_a_large_downscale_supersamples_and_stays_close_to_an_area_average():
    image = scene_image()
    assert supersample_factor((1208, 1920), (320, 512)) == 2 and supersample_factor((640, 1024), (320, 512)) == 1
    resized, k = model_input(image, K, (320, 512))
    area = cv2.resize(image, (512, 320), interpolation=cv2.INTER_AREA)
    plain_bilinear = cv2.resize(image, (512, 320), interpolation=cv2.INTER_LINEAR)
    error = np.abs(resized.astype(int) - area).mean()
    assert resized.shape == (320, 512, 3) and resized.dtype == np.uint8
    # pixel noise of sigma 20: the area average keeps ~5 of it, plain bilinear sampling ~20 (aliasing)
    assert error < 3.5 and error < 0.4 * np.abs(plain_bilinear.astype(int) - area).mean()
    np.testing.assert_allclose(k, scale_camera_matrix(K, (1208, 1920), (320, 512)))


def test_an_upscale_is_bilinear_and_the_same_size_is_the_image_itself():
    image = scene_image((100, 160))
    enlarged = ModelInputMap((100, 160), K, (200, 320))(image)
    assert np.abs(enlarged.astype(int) - cv2.resize(image, (320, 200), interpolation=cv2.INTER_LINEAR)).max() <= 2
    assert ModelInputMap((100, 160), K, (100, 160))(image) is image
    with pytest.raises(ValueError, match='160x100'):
        ModelInputMap((100, 160), K, (50, 80))(np.zeros((10, 10, 3), np.uint8))


@pytest.mark.parametrize('model, distortion', [('plumb_bob', [-0.25, 0.08, 0.001, -0.001, 0.0]),
                                               ('equidistant', [-0.05, 0.01, -0.004, 0.0005])])
def test_undistortion_and_resize_in_one_remap_match_the_two_passes(model, distortion):
    k = np.array([[600.0, 0, 480], [0, 600.0, 302], [0, 0, 1]])
    image = cv2.GaussianBlur(scene_image((604, 960)), (0, 0), 2)
    if model == 'equidistant':
        undistorted = cv2.fisheye.undistortImage(image, k, np.array(distortion), Knew=k)
    else:
        undistorted = cv2.undistort(image, k, np.array(distortion))
    two_passes = cv2.resize(undistorted, (480, 302), interpolation=cv2.INTER_AREA)
    one_map = ModelInputMap((604, 960), k, (302, 480), distortion, model)
    got = one_map(image)
    inner = (slice(20, -20), slice(20, -20))
    assert np.abs(got.astype(int) - cv2.resize(image, (480, 302), interpolation=cv2.INTER_AREA))[inner].max() > 20
    assert np.abs(got.astype(int) - two_passes)[inner].mean() < 1.5
    np.testing.assert_allclose(one_map.camera_matrix, scale_camera_matrix(k, (604, 960), (302, 480)))


@pytest.mark.parametrize('model, distortion', [('plumb_bob', [-0.3, 0.09, 0.0, 0.0, 0.0]),
                                               ('equidistant', [0.1, -0.02, 0.004, -0.0005])])
def test_a_point_lands_in_the_model_input_where_its_camera_matrix_projects_it(model, distortion):
    """A bright dot drawn where the distorting lens images a 3D point ends up, after the map, at
    the model input's pinhole projection of that point."""
    k = np.array([[700.0, 0, 640], [0, 700.0, 400], [0, 0, 1]])
    point = np.array([[10.0, -5.5, 2.5, 0.0]])                      # vehicle frame: ahead, right, up
    transform = np.array(OPTICAL).reshape(4, 4)
    camera = (transform[:3, :3] @ point[0, :3])[None, None]
    if model == 'equidistant':
        pixel = cv2.fisheye.projectPoints(camera, np.zeros(3), np.zeros(3), k, np.array(distortion))[0][0, 0]
    else:
        pixel = cv2.projectPoints(camera, np.zeros(3), np.zeros(3), k, np.array(distortion))[0][0, 0]
    image = np.zeros((800, 1280, 3), np.uint8)
    cv2.circle(image, (int(round(pixel[0] * 16)), int(round(pixel[1] * 16))), 6 * 16, (255, 255, 255), -1,
               cv2.LINE_AA, shift=4)
    calibration = CameraCalibration(transform, k, np.array(distortion), (1280, 800), model)
    mapped, k_model = calibration.model_input(image, (200, 320))
    weights = mapped[..., 0].astype(float)
    rows, cols = np.mgrid[0:200, 0:320]
    centroid = np.array([(cols * weights).sum(), (rows * weights).sum()]) / weights.sum()
    expected, _, _ = project_points(point, transform, k_model)
    assert np.linalg.norm(expected[0] - pixel * 0.25) > 2           # the distortion moved it
    assert np.linalg.norm(centroid - expected[0]) < 0.35


def test_the_calibration_keeps_its_tables_per_image_size():
    calibration = CameraCalibration.from_parameters(OPTICAL, K.ravel(), [-0.2, 0.05, 0, 0, 0], [1920, 1208])
    image = cv2.GaussianBlur(scene_image(), (0, 0), 2)
    first, _ = calibration.model_input(image, (320, 512))
    assert len(calibration._maps) == 1
    second, k_half = calibration.model_input(cv2.resize(image, (960, 604)), (320, 512))
    assert len(calibration._maps) == 2 and np.abs(first.astype(int) - second).mean() < 3
    np.testing.assert_allclose(k_half, scale_camera_matrix(K, (1208, 1920), (320, 512)), atol=1e-9)
