"""Augmentations keep LiDAR, image, class map, boxes and calibration consistent."""
from __future__ import annotations

import numpy as np
import pytest

from mtl_perception_ros.core.boxes import points_in_boxes
from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP, invert_rigid, project_points
from training.data.augment import (AugmentConfig, augment_frame, drop_points, flip_frame_horizontally,
                                   photometric_jitter, rotate_scale_frame)
from training.data.frame import Frame

HEIGHT, WIDTH = 40, 60
PIXEL_POINTS = 200  # the first points of the synthetic frame, made to project onto pixel centres
COLORS = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0], [0, 200, 200], [200, 0, 200]],
                  np.uint8)


def synthetic_frame() -> Frame:
    """A 40 x 60 camera 1.5 m up, 1 m ahead of the vehicle origin, slightly yawed.

    Class map: six regions (left / middle / right third x top / bottom half), the image is the
    class map drawn in colours. Points: back-projected from chosen pixel centres (all six regions)
    at different depths; plus a box with some points inside it.
    """
    v, u = np.divmod(np.arange(HEIGHT * WIDTH), WIDTH)
    class_map = (3 * (v >= HEIGHT // 2) + u // (WIDTH // 3)).astype(np.uint8).reshape(HEIGHT, WIDTH)
    camera_matrix = np.array([[30.0, 0, 29.5], [0, 30.0, 19.5], [0, 0, 1]])
    yaw = 0.05
    camera_to_vehicle_flu = np.eye(4)
    camera_to_vehicle_flu[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
    camera_to_vehicle_flu[:3, 3] = [1.0, 0.2, 1.5]
    vehicle_to_camera = OPTICAL_FROM_FORWARD_LEFT_UP @ invert_rigid(camera_to_vehicle_flu)

    rng = np.random.default_rng(3)
    # Pixel centres off the image border, so rounding noise cannot push a point out of the image.
    pixels = np.stack([rng.integers(1, WIDTH - 1, PIXEL_POINTS), rng.integers(1, HEIGHT - 1, PIXEL_POINTS)],
                      axis=1).astype(np.float64)
    depth = rng.uniform(3.0, 40.0, PIXEL_POINTS)
    rays = np.linalg.inv(camera_matrix) @ np.concatenate([pixels, np.ones((PIXEL_POINTS, 1))], axis=1).T
    cam = (rays * depth).T
    vehicle = cam @ invert_rigid(vehicle_to_camera)[:3, :3].T + invert_rigid(vehicle_to_camera)[:3, 3]
    boxes = np.array([[15.0, 3.0, 0.0, 4.0, 2.0, 2.0, 0.5]], np.float32)
    inside = boxes[0, :3] + rng.uniform(-0.7, 0.7, (20, 3))
    points = np.concatenate([vehicle, inside])
    points = np.concatenate([points, rng.uniform(0, 1, (len(points), 1))], axis=1).astype(np.float32)
    return Frame(name='synthetic', scene='s', points=points, image=COLORS[class_map], class_map=class_map,
                 boxes=boxes, box_classes=np.array([0]), track_ids=np.array([-1]),
                 camera_matrix=camera_matrix, vehicle_to_camera=vehicle_to_camera)


def classes_under_points(frame: Frame):
    """Class id and image colour at the pixel each of the PIXEL_POINTS points projects to."""
    uv, _, valid = project_points(frame.points[:PIXEL_POINTS], frame.vehicle_to_camera, frame.camera_matrix,
                                  (HEIGHT, WIDTH))
    cols, rows = np.round(uv[valid]).astype(int).T
    cols, rows = np.clip(cols, 0, WIDTH - 1), np.clip(rows, 0, HEIGHT - 1)
    return valid, frame.class_map[rows, cols], frame.image[rows, cols]


def test_synthetic_frame_points_land_where_they_were_made():
    frame = synthetic_frame()
    valid, classes, _ = classes_under_points(frame)
    assert valid.all()
    assert set(classes.tolist()) == set(range(6))


@pytest.mark.parametrize('transform', [
    flip_frame_horizontally,
    lambda f: rotate_scale_frame(f, 0.3, 1.1),
    lambda f: rotate_scale_frame(flip_frame_horizontally(f), -0.2, 0.9),
], ids=['flip', 'rotate_scale', 'flip_rotate_scale'])
def test_points_keep_their_semantic_class_and_box_after_augmentation(transform):
    frame = synthetic_frame()
    augmented = transform(frame)
    valid, classes, colors = classes_under_points(frame)
    valid_after, classes_after, colors_after = classes_under_points(augmented)
    np.testing.assert_array_equal(valid_after, valid)
    np.testing.assert_array_equal(classes_after, classes)
    np.testing.assert_array_equal(colors_after, colors)
    np.testing.assert_array_equal(points_in_boxes(augmented.points, augmented.boxes),
                                  points_in_boxes(frame.points, frame.boxes))
    # The transform really moved things, and the input frame is untouched.
    assert not np.allclose(augmented.points[:, :3], frame.points[:, :3])
    np.testing.assert_array_equal(frame.class_map, synthetic_frame().class_map)


def test_flip_mirrors_y_yaw_and_the_pictures():
    frame = synthetic_frame()
    flipped = flip_frame_horizontally(frame)
    np.testing.assert_allclose(flipped.boxes[0], [15.0, -3.0, 0.0, 4.0, 2.0, 2.0, -0.5])
    np.testing.assert_array_equal(flipped.points[:, 1], -frame.points[:, 1])
    np.testing.assert_array_equal(flipped.class_map[:, 0], frame.class_map[:, -1])
    assert flipped.camera_matrix[0, 2] == pytest.approx(WIDTH - 1 - 29.5)
    np.testing.assert_allclose(flipped.vehicle_to_camera[:3, :3] @ flipped.vehicle_to_camera[:3, :3].T,
                               np.eye(3), atol=1e-12)
    assert np.linalg.det(flipped.vehicle_to_camera[:3, :3]) == pytest.approx(1.0)


def test_rotate_scale_moves_boxes_and_keeps_the_image():
    frame = synthetic_frame()
    moved = rotate_scale_frame(frame, np.pi / 2, 2.0)
    # Centre (15, 3, 0) rotated 90 deg -> (-3, 15, 0), times 2; sizes doubled; yaw + pi/2.
    np.testing.assert_allclose(moved.boxes[0], [-6.0, 30.0, 0.0, 8.0, 4.0, 4.0, 0.5 + np.pi / 2], atol=1e-5)
    assert moved.image is frame.image


def test_augment_frame_is_seeded_and_consistent():
    frame = synthetic_frame()
    config = AugmentConfig(flip_probability=1.0, rotation_max_rad=0.3, scale_range=(0.9, 1.1),
                           point_dropout_max=0.0)
    a = augment_frame(frame, np.random.default_rng(7), config)
    b = augment_frame(frame, np.random.default_rng(7), config)
    c = augment_frame(frame, np.random.default_rng(8), config)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    np.testing.assert_array_equal(classes_under_points(a)[1], classes_under_points(frame)[1])


def test_photometric_jitter_changes_only_colours():
    image = synthetic_frame().image
    rng = np.random.default_rng(0)
    unchanged = photometric_jitter(image, rng, brightness=0, contrast=0, saturation=0, noise_std_max=0)
    np.testing.assert_array_equal(unchanged, image)
    jittered = photometric_jitter(image, rng)
    assert jittered.dtype == np.uint8 and jittered.shape == image.shape
    assert not np.array_equal(jittered, image)
    assert np.abs(jittered.astype(int) - image).mean() < 60


def test_drop_points_removes_about_the_fraction():
    points = np.zeros((10000, 4), np.float32)
    kept = drop_points(points, np.random.default_rng(1), 0.25)
    assert 7300 < len(kept) < 7700
    assert drop_points(points, np.random.default_rng(1), 0.0) is points
