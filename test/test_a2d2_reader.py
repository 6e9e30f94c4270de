"""A2D2 reader on tiny hand-made frames in the real on-disk layout (docs/a2d2_format.md)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtl_perception_ros.core.boxes import transform_boxes
from training.data.a2d2_calibration import front_center_camera, load_calibration
from training.data.a2d2_reader import A2D2Reader
from training.data.label_mapping import BoxClassMapping, SemanticMapping, pack_rgb

CONFIG = Path(__file__).resolve().parent.parent / 'config' / 'a2d2'
FULL_HW = (1208, 1920)
ROAD, CAR, EGO_CAR, UNKNOWN = (255, 0, 255), (255, 0, 0), (72, 209, 204), (1, 2, 3)  # RGB
ROAD_ID, CAR_ID = 0, 8                       # config/a2d2/semantic_classes.yaml order
# A different stamp prefix per kind, as in real A2D2: pairing must use scene + ID only.
PREFIX = {'camera': '20180807145028', 'lidar': '20180807145031', 'label': '20180807145029',
          'label3D': '20180807145030'}

BOX_CAR = {'center': [12.0, 1.0, -0.9], 'size': [4.5, 1.8, 1.5], 'axis': [0, 0, 1], 'rot_angle': 0.3,
           'class': 'Car', 'id': 0, 'track_id': 7}
BOX_PEDESTRIAN = {'center': [8.0, -2.0, -1.0], 'size': [0.6, 0.7, 1.8], 'axis': [0, 0, -1],
                  'rot_angle': 0.5, 'class': 'Pedestrian', 'id': 1}
BOX_ANIMAL = {'center': [20.0, 3.0, -1.4], 'size': [1.0, 0.4, 0.8], 'axis': [0, 0, 1], 'rot_angle': 0.0,
              'class': 'Animal', 'id': 2}


def _path(root: Path, scene: str, kind: str, frame_id: int, ext: str) -> Path:
    folder = root / scene / kind / 'cam_front_center'
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f'{PREFIX[kind]}_{kind}_frontcenter_{frame_id:09d}.{ext}'


def make_root(root: Path, shrink: int = 1) -> Path:
    """An A2D2 set folder with the real cams_lidars.json and class_list.json.

    shrink > 1 divides the front-center Resolution and camera matrices by it (faster tests
    where the exact calibration does not matter); images must then be written that small.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG / 'class_list.json', root / 'class_list.json')
    calibration = json.loads((CONFIG / 'cams_lidars.json').read_text())
    if shrink > 1:
        camera = calibration['cameras']['front_center']
        camera['Resolution'] = [size // shrink for size in camera['Resolution']]
        for key in ('CamMatrix', 'CamMatrixOriginal'):
            camera[key] = (np.diag([1 / shrink, 1 / shrink, 1]) @ np.array(camera[key])).tolist()
    (root / 'cams_lidars.json').write_text(json.dumps(calibration))
    return root


def label_image(size_hw=FULL_HW) -> np.ndarray:
    """(1208, 1920, 3) RGB: road, a car block around the image centre, unknown colour at the left."""
    rows, cols = size_hw
    r, c = rows / 1208, cols / 1920   # block corners are given for the full size
    label = np.empty((rows, cols, 3), dtype=np.uint8)
    label[:] = ROAD
    label[int(500 * r):int(900 * r), int(800 * c):int(1200 * c)] = CAR
    label[int(400 * r):int(1000 * r), 0:int(400 * c)] = UNKNOWN
    label[int(1150 * r):, int(1700 * c):] = EGO_CAR
    return label


def lidar_arrays(points_view: np.ndarray, first_stamp_us: int = 1_000_000) -> dict:
    """The keys and dtypes of a real front-center LiDAR npz."""
    n = len(points_view)
    return {'points': np.asarray(points_view, dtype=np.float64),
            'reflectance': np.arange(1, n + 1, dtype=np.int64) * 50 % 256,
            'timestamp': first_stamp_us + np.arange(n, dtype=np.int64) * 1000,
            'row': np.full(n, 600.0), 'col': np.full(n, 900.0),
            'depth': np.asarray(points_view, dtype=np.float64)[:, 0],
            'distance': np.linalg.norm(points_view, axis=1),
            'lidar_id': np.full(n, 3.0), 'azimuth': np.zeros(n)}


def write_frame(root: Path, scene: str, frame_id: int, *, points_view=None, boxes=None,
                image=True, camera_json=True, lidar=True, label=True, label3d=True,
                rgba_label=False, drop_lidar_keys=(), cam_tstamp=None, lidar_stamp_us=1_000_000,
                size_hw=FULL_HW):
    """Write one frame's files; each part can be left out or altered."""
    rows, cols = size_hw
    if points_view is None:
        points_view = np.array([[10.0, 0.0, 0.0], [5.0, 2.0, -1.75]])
    if image:
        picture = np.zeros((rows, cols, 3), dtype=np.uint8)
        picture[:, :, 1] = 90
        picture[rows // 2:rows * 7 // 12, cols * 15 // 32:cols * 17 // 32] = (200, 30, 10)
        cv2.imwrite(str(_path(root, scene, 'camera', frame_id, 'png')), picture[..., ::-1])
    if camera_json:
        doc = {'cam_name': 'front_center', 'cam_tstamp': cam_tstamp or 1_100_000 + frame_id,
               'lidar_ids': {'0': 'front_left', '3': 'front_center'}}
        _path(root, scene, 'camera', frame_id, 'json').write_text(json.dumps(doc))
    if lidar:
        arrays = lidar_arrays(points_view, lidar_stamp_us)
        for key in drop_lidar_keys:
            arrays.pop(key)
        np.savez_compressed(_path(root, scene, 'lidar', frame_id, 'npz'), **arrays)
    if label:
        rgb = label_image(size_hw)
        bgr = rgb[..., ::-1]
        if rgba_label:
            bgr = np.concatenate([bgr, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        cv2.imwrite(str(_path(root, scene, 'label', frame_id, 'png')), np.ascontiguousarray(bgr))
    if label3d:
        boxes = [BOX_CAR, BOX_PEDESTRIAN] if boxes is None else boxes
        doc = {f'box_{i}': box for i, box in enumerate(boxes)}
        _path(root, scene, 'label3D', frame_id, 'json').write_text(json.dumps(doc))


@pytest.fixture(scope='module')
def camera():
    return front_center_camera(load_calibration(CONFIG / 'cams_lidars.json'))


def test_frames_are_paired_by_scene_and_id_across_different_prefixes(tmp_path):
    root = make_root(tmp_path / 'a2d2')
    write_frame(root, '20180807_145028', 91, points_view=np.ones((3, 3)) * [10, 0, 0])
    write_frame(root, '20180807_145028', 92, points_view=np.ones((4, 3)) * [10, 0, 0])
    write_frame(root, '20180810_142822', 91, points_view=np.ones((5, 3)) * [10, 0, 0])
    reader = A2D2Reader(root)
    frames = list(reader)
    assert [f.name for f in frames] == ['20180807_145028/000000091', '20180807_145028/000000092',
                                        '20180810_142822/000000091']
    assert [f.scene for f in frames] == ['20180807_145028'] * 2 + ['20180810_142822']
    assert [len(f.points) for f in frames] == [3, 4, 5]
    assert [f.camera_timestamp_us for f in frames] == [1_100_091, 1_100_092, 1_100_091]
    assert reader.stats.frames_read == 3 and reader.stats.frames_skipped == 0


def test_points_go_to_the_vehicle_frame_with_reflectance_in_0_1(tmp_path, camera):
    root = make_root(tmp_path / 'a2d2')
    points_view = np.array([[10.0, 0.0, 0.0], [5.0, 2.0, -1.75]])
    write_frame(root, 's1', 1, points_view=points_view, lidar_stamp_us=5_000_000)
    frame = next(iter(A2D2Reader(root)))
    assert frame.points.dtype == np.float32 and frame.points.shape == (2, 4)
    # On paper: the camera origin (1.711, 0, 0.943) plus 10 m along x-axis (0.99976, 0.02137, -0.0049).
    np.testing.assert_allclose(frame.points[0, :3], [11.7086, 0.2137, 0.8941], atol=2e-3)
    expected = points_view @ camera.view_to_vehicle[:3, :3].T + camera.view_to_vehicle[:3, 3]
    np.testing.assert_allclose(frame.points[:, :3], expected, atol=1e-5)
    np.testing.assert_allclose(frame.points[:, 3], [50 / 255, 100 / 255], rtol=1e-6)
    assert frame.lidar_timestamp_us == 5_001_000   # the last point of the sweep
    np.testing.assert_allclose(frame.camera_matrix, camera.camera_matrix)
    np.testing.assert_allclose(frame.vehicle_to_camera, camera.vehicle_to_camera)


def test_boxes_yaw_uses_the_axis_sign_and_moves_to_the_vehicle_frame(tmp_path, camera):
    root = make_root(tmp_path / 'a2d2')
    write_frame(root, 's1', 1, boxes=[BOX_CAR, BOX_PEDESTRIAN, BOX_ANIMAL])
    reader = A2D2Reader(root)
    frame = next(iter(reader))
    view_boxes = np.array([[12.0, 1.0, -0.9, 4.5, 1.8, 1.5, 0.3],      # axis +z: yaw = +0.3
                           [8.0, -2.0, -1.0, 0.6, 0.7, 1.8, -0.5]])    # axis -z: yaw = -0.5
    np.testing.assert_allclose(frame.boxes, transform_boxes(view_boxes, camera.view_to_vehicle), atol=1e-5)
    centre = camera.view_to_vehicle @ np.array([8.0, -2.0, -1.0, 1.0])
    np.testing.assert_allclose(frame.boxes[1, :3], centre[:3], atol=1e-5)
    # The camera looks ~0.0214 rad to the left of the vehicle's x axis: yaw turns by that much.
    np.testing.assert_allclose(frame.boxes[:, 6], [0.3 + 0.0214, -0.5 + 0.0214], atol=1e-3)
    np.testing.assert_allclose(frame.boxes[:, 3:6], view_boxes[:, 3:6], atol=1e-6)   # l, w, h kept
    assert frame.box_classes.tolist() == [0, 2]                   # car, pedestrian; Animal dropped
    assert frame.track_ids.tolist() == [7, -1]
    assert reader.stats.dropped_boxes == {'Animal': 1}


def test_label_colours_map_to_classes_after_undistortion(tmp_path, camera):
    root = make_root(tmp_path / 'a2d2')
    write_frame(root, 's1', 1)
    frame = next(iter(A2D2Reader(root)))
    assert frame.class_map.shape == (1208, 1920) and frame.class_map.dtype == np.uint8
    assert frame.class_map[684, 965] == CAR_ID           # the principal point, inside the car block
    assert frame.class_map[684, 100] == 255              # unknown colour (u_distorted ~ 83)
    assert frame.class_map[1100, 965] == ROAD_ID
    assert set(np.unique(frame.class_map)) == {ROAD_ID, CAR_ID, 255}     # Ego car -> 255 too
    expected = camera.undistort_label(np.where(
        (label_image() == CAR).all(-1), CAR_ID, np.where((label_image() == ROAD).all(-1), ROAD_ID, 255)
    ).astype(np.uint8))
    np.testing.assert_array_equal(frame.class_map, expected)
    assert frame.image.shape == (1208, 1920, 3) and frame.image.dtype == np.uint8
    assert frame.image[650, 950].tolist() == [200, 30, 10]   # RGB order kept (near the centre)


def test_rgba_label_is_read_as_rgb_and_counted(tmp_path):
    root = make_root(tmp_path / 'a2d2')
    write_frame(root, 's1', 1, rgba_label=True)
    reader = A2D2Reader(root)
    frame = next(iter(reader))
    assert frame.class_map[684, 965] == CAR_ID and frame.class_map[1100, 965] == ROAD_ID
    assert reader.stats.degraded['rgba_label'] == 1


def test_semantic_lookup_table_on_hand_made_pixels():
    mapping = SemanticMapping.from_files()
    pixels = np.array([[ROAD, CAR, UNKNOWN, EGO_CAR, (135, 206, 255)]], dtype=np.uint8)  # last = Sky
    assert mapping.colors_to_classes(pixels).tolist() == [[0, 8, 255, 255, 5]]
    assert pack_rgb(np.array([[[1, 2, 3]]], np.uint8))[0, 0] == 0x010203


def test_grouping_configs_with_unknown_names_are_rejected(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('classes:\n  - {name: road, color: [1, 2, 3], a2d2: [RD normal streets]}\n')
    with pytest.raises(ValueError, match='RD normal streets'):
        SemanticMapping.from_files(bad)
    bad.write_text('classes:\n  - {name: car, color: [1, 2, 3], a2d2: [Cars]}\n')
    with pytest.raises(ValueError, match='Cars'):
        BoxClassMapping.from_yaml(bad)


def test_missing_and_broken_parts_are_skipped_or_degraded_and_counted(tmp_path):
    root = make_root(tmp_path / 'a2d2')
    write_frame(root, 's1', 1)                                   # good
    write_frame(root, 's1', 2, lidar=False)                      # no LiDAR -> skip
    write_frame(root, 's1', 3, label3d=False)                    # no boxes in a boxes set -> skip
    write_frame(root, 's1', 4, drop_lidar_keys=('row',))         # no `row` -> fine, counted
    write_frame(root, 's1', 5)
    _path(root, 's1', 'lidar', 5, 'npz').write_bytes(b'PK\x03\x04 not really a zip')   # corrupt
    write_frame(root, 's1', 6, drop_lidar_keys=('points',))      # npz without points -> corrupt
    write_frame(root, 's1', 7, camera_json=False)
    _path(root, 's1', 'camera', 7, 'json').write_text('{"cam_name": "front_center"}')  # no cam_tstamp
    write_frame(root, 's1', 8)
    image_path = _path(root, 's1', 'camera', 8, 'png')
    image_path.write_bytes(image_path.read_bytes()[:200])        # truncated PNG
    write_frame(root, 's1', 9, label=False)                      # no label -> class_map None
    reader = A2D2Reader(root)
    frames = list(reader)
    assert [f.name for f in frames] == ['s1/000000001', 's1/000000004', 's1/000000009']
    assert frames[2].class_map is None
    assert dict(reader.stats.skipped) == {'missing_lidar': 1, 'missing_label3d': 1, 'corrupt_lidar': 2,
                                          'corrupt_camera_json': 1, 'corrupt_image': 1}
    assert reader.stats.degraded['lidar_without_row'] == 1
    assert reader.stats.degraded['missing_label'] == 1
    report = reader.report()
    assert report['frames_read'] == 3 and report['frames_skipped'] == 6
    assert any('000000005' in example for example in report['examples']['corrupt_lidar'])
    json.dumps(report)   # serialisable for the manifest


def test_a_set_without_label3d_keeps_frames_with_empty_boxes(tmp_path):
    root = make_root(tmp_path / 'a2d2')
    write_frame(root, 's1', 1, label3d=False)
    write_frame(root, 's1', 2, label3d=False)
    reader = A2D2Reader(root)
    frames = list(reader)
    assert len(frames) == 2 and frames[0].boxes.shape == (0, 7) and frames[0].box_classes.shape == (0,)
    assert reader.stats.degraded['no_label3d'] == 2
    assert len(list(A2D2Reader(root, keep_frames_without_boxes=False))) == 0
