"""A2D2 reader with several cameras: grouping by cam_tstamp, one merged cloud, boxes once, fisheye views."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtl_perception_ros.core.boxes import transform_boxes
from mtl_perception_ros.core.camera import transform_points
from training.data.a2d2_calibration import a2d2_camera, camera_file_token, camera_folder, load_calibration
from training.data.a2d2_reader import A2D2Reader

CONFIG = Path(__file__).resolve().parent.parent / 'config' / 'a2d2'
SHRINK = 8
SCENE = '20180807_145028'
ROAD, CAR = (255, 0, 255), (255, 0, 0)   # RGB colours of class_list.json
ROAD_ID, CAR_ID = 0, 8


def make_root(root: Path) -> Path:
    """A set folder with the real calibration, every camera shrunk SHRINK times (fast tests)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG / 'class_list.json', root / 'class_list.json')
    calibration = json.loads((CONFIG / 'cams_lidars.json').read_text())
    for camera in calibration['cameras'].values():
        camera['Resolution'] = [size // SHRINK for size in camera['Resolution']]
        for key in ('CamMatrix', 'CamMatrixOriginal'):
            camera[key] = (np.diag([1 / SHRINK, 1 / SHRINK, 1]) @ np.array(camera[key])).tolist()
    (root / 'cams_lidars.json').write_text(json.dumps(calibration))
    return root


def path(root, camera, kind, frame_id, ext) -> Path:
    folder = root / SCENE / kind / camera_folder(camera)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f'20180807145028_{kind}_{camera_file_token(camera)}_{frame_id:09d}.{ext}'


def write_camera_frame(root, camera, frame_id, stamp_us, *, points_vehicle=None, point_stamps=None,
                       boxes_vehicle=(), image=True, label=True, cam_name=None):
    """One camera's files; points and boxes given in the vehicle frame, stored in its view frame."""
    cam = a2d2_camera(load_calibration(root / 'cams_lidars.json'), camera)
    rows, cols = cam.image_size_hw
    if image:
        picture = np.full((rows, cols, 3), 90, np.uint8)
        cv2.imwrite(str(path(root, camera, 'camera', frame_id, 'png')), picture)
    doc = {'cam_name': cam_name or camera, 'cam_tstamp': int(stamp_us)}
    path(root, camera, 'camera', frame_id, 'json').write_text(json.dumps(doc))
    if label:
        rgb = np.empty((rows, cols, 3), np.uint8)
        rgb[:] = ROAD
        rgb[rows // 3:rows // 2, cols // 3:cols // 2] = CAR
        cv2.imwrite(str(path(root, camera, 'label', frame_id, 'png')), np.ascontiguousarray(rgb[..., ::-1]))
    if points_vehicle is not None:
        points_view = transform_points(np.asarray(points_vehicle, np.float64), cam.vehicle_to_view)
        n = len(points_view)
        np.savez_compressed(path(root, camera, 'lidar', frame_id, 'npz'), points=points_view,
                            reflectance=np.full(n, 100, np.int64), timestamp=np.asarray(point_stamps, np.int64),
                            row=np.zeros(n), col=np.zeros(n), lidar_id=np.full(n, 3.0))
    if boxes_vehicle is not None and len(boxes_vehicle):
        view = transform_boxes(np.asarray([b[0] for b in boxes_vehicle], np.float64), cam.vehicle_to_view)
        doc = {f'box_{i}': {'center': row[:3].tolist(), 'size': row[3:6].tolist(),
                            'axis': [0, 0, 1 if row[6] >= 0 else -1], 'rot_angle': abs(float(row[6])),
                            'class': box[1], 'id': i}
               for i, (row, box) in enumerate(zip(view, boxes_vehicle))}
        path(root, camera, 'label3D', frame_id, 'json').write_text(json.dumps(doc))


CAR_AHEAD = ([12.0, 2.0, -0.2, 4.5, 1.8, 1.5, 0.2], 'Car')
CAR_LEFT = ([6.0, 4.5, -0.2, 4.4, 1.8, 1.5, 0.0], 'Car')


@pytest.fixture
def surround_root(tmp_path):
    """front_center at IDs 100, 103, 106; front_left with its own counter, 7 ms later, missing the
    third frame, plus one frame 60 ms away from any; side_left only with the first frame."""
    root = make_root(tmp_path / 'a2d2')
    shared = [10.0, 1.5, 0.0]          # seen by front_center and front_left
    for k in range(3):
        stamp = 1_600_000_000_000_000 + 100_000 * k
        write_camera_frame(root, 'front_center', 100 + 3 * k, stamp,
                           points_vehicle=[shared, [20.0, 0.0, 0.5]], point_stamps=[stamp - 900, stamp - 800],
                           boxes_vehicle=[CAR_AHEAD])
        if k < 2:
            write_camera_frame(root, 'front_left', 5000 + 3 * k, stamp + 7000,
                               points_vehicle=[shared, [8.0, 6.0, 0.0]], point_stamps=[stamp - 900, stamp - 700],
                               boxes_vehicle=[CAR_AHEAD, CAR_LEFT])
    write_camera_frame(root, 'front_left', 5009, 1_600_000_000_000_000 + 260_000, points_vehicle=[[9.0, 5.0, 0.0]],
                       point_stamps=[0])
    write_camera_frame(root, 'side_left', 77, 1_600_000_000_000_000 - 4000, points_vehicle=[[1.0, 6.0, 0.0]],
                       point_stamps=[1_600_000_000_000_000 - 5000])
    return root


def test_cameras_join_a_frame_by_cam_tstamp_whatever_their_ids(surround_root):
    reader = A2D2Reader(surround_root, cameras=['front_center', 'front_left', 'side_left'])
    frames = list(reader)
    assert [f.name for f in frames] == [f'{SCENE}/000000100', f'{SCENE}/000000103', f'{SCENE}/000000106']
    assert [f.camera_names for f in frames] == [['front_center', 'front_left', 'side_left'],
                                                ['front_center', 'front_left'], ['front_center']]
    assert [v.timestamp_us - frames[0].camera_timestamp_us for v in frames[0].views] == [0, 7000, -4000]
    assert reader.grouping_report() == {
        'front_left': {'frames_without_this_camera': 1, 'grouped': 2, 'left_over': 1, 'unreadable_camera_json': 0},
        'side_left': {'frames_without_this_camera': 2, 'grouped': 1, 'left_over': 0, 'unreadable_camera_json': 0}}
    # a tighter tolerance leaves front_left (7 ms late) out
    tight = A2D2Reader(surround_root, cameras=['front_center', 'front_left'], group_tolerance_us=5000)
    assert [f.camera_names for f in tight] == [['front_center']] * 3
    assert tight.grouping_report()['front_left']['left_over'] == 3


def test_one_cloud_in_the_vehicle_frame_with_shared_points_once(surround_root):
    reader = A2D2Reader(surround_root, cameras=['front_center', 'front_left', 'side_left'])
    first, second, third = list(reader)
    expected = np.array([[10.0, 1.5, 0.0], [20.0, 0.0, 0.5], [8.0, 6.0, 0.0], [1.0, 6.0, 0.0]])
    np.testing.assert_allclose(first.points[:, :3], expected, atol=1e-4)
    assert len(second.points) == 3 and len(third.points) == 2
    assert reader.stats.degraded['duplicate_points'] == 2
    assert first.lidar_timestamp_us == 1_600_000_000_000_000 - 700


def test_a_box_labelled_in_two_cameras_is_kept_once(surround_root):
    reader = A2D2Reader(surround_root, cameras=['front_center', 'front_left'])
    frame = next(iter(reader))
    np.testing.assert_allclose(frame.boxes, np.array([CAR_AHEAD[0], CAR_LEFT[0]], np.float32), atol=1e-3)  # tilted views: yaw only
    assert frame.box_classes.tolist() == [0, 0]
    assert reader.stats.degraded['duplicate_boxes'] == 1


def test_each_view_is_undistorted_with_its_own_lens_and_calibration(surround_root):
    reader = A2D2Reader(surround_root, cameras=['front_center', 'front_left'])
    frame = next(iter(reader))
    left = frame.views[1]
    camera = reader.cameras['front_left']
    assert camera.fisheye and not reader.cameras['front_center'].fisheye
    np.testing.assert_allclose(left.camera_matrix, camera.camera_matrix)
    np.testing.assert_allclose(left.vehicle_to_camera, camera.vehicle_to_camera)
    assert left.image.shape == (151, 240, 3) and left.class_map.shape == (151, 240)
    assert set(np.unique(left.class_map)) <= {ROAD_ID, CAR_ID}       # nearest neighbour: exact ids
    ids = np.where((cv2.imread(str(path(surround_root, 'front_left', 'label', 5000, 'png')))[..., ::-1]
                    == CAR).all(-1), CAR_ID, ROAD_ID).astype(np.uint8)
    np.testing.assert_array_equal(left.class_map, camera.undistort_label(ids))


def test_a_broken_part_of_another_camera_drops_only_that_part(surround_root):
    path(surround_root, 'front_left', 'camera', 5000, 'png').write_bytes(b'\x89PNG broken')
    path(surround_root, 'front_left', 'lidar', 5003, 'npz').write_bytes(b'PK broken')
    reader = A2D2Reader(surround_root, cameras=['front_center', 'front_left'])
    first, second, _ = list(reader)
    assert first.camera_names == ['front_center'] and len(first.points) == 3   # its LiDAR still counts
    assert second.camera_names == ['front_center', 'front_left'] and len(second.points) == 2
    assert reader.stats.degraded['camera_part_dropped'] == 2 and reader.stats.frames_skipped == 0
    # the reference camera's broken parts still skip the frame
    path(surround_root, 'front_center', 'camera', 106, 'png').write_bytes(b'broken')
    assert len(list(A2D2Reader(surround_root, cameras=['front_center', 'front_left']))) == 2


def test_camera_choice_all_and_bad_names(surround_root):
    assert A2D2Reader(surround_root, cameras='all').camera_names == ['front_center', 'front_left', 'side_left']
    assert A2D2Reader(surround_root, cameras=['front_left']).camera_names == ['front_left']
    with pytest.raises(ValueError, match='distinct A2D2 camera names'):
        A2D2Reader(surround_root, cameras=['front_centre'])
    with pytest.raises(ValueError, match='distinct A2D2 camera names'):
        A2D2Reader(surround_root, cameras=['front_left', 'front_left'])
    # a camera JSON naming another camera is refused for that camera's part
    write_camera_frame(surround_root, 'side_left', 77, 1_600_000_000_000_000 - 4000, cam_name='front_center',
                       points_vehicle=[[1.0, 6.0, 0.0]], point_stamps=[0])
    reader = A2D2Reader(surround_root, cameras=['front_center', 'side_left'])
    assert next(iter(reader)).camera_names == ['front_center']
    assert 'wrong_camera' in ' '.join(reader.stats.examples['camera_part_dropped'])
