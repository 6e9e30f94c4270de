"""The synthetic generator writes A2D2's own on-disk layout, deterministically and self-consistently.

Most tests read one small generated data set (1 scene x 2 frames) the way a reader of the real
data set would; a few build tiny hand-made scenes to check the LiDAR and camera geometry exactly.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtl_perception_ros.core.boxes import points_in_boxes, transform_boxes
from mtl_perception_ros.core.camera import transform_points
from training.data.a2d2_calibration import DEFAULT_CALIBRATION_PATH, front_center_camera, load_calibration
from training.synthetic.synthesize import main, synthesize
from training.synthetic.geometry import SceneArrays, frame_geometry
from training.synthetic.ground import GroundMap
from training.synthetic.lidar import LidarRig, cast_rays
from training.synthetic.render import CameraRig, distortion_maps, render_camera, scene_look
from training.synthetic.shapes import CLASS_LIST_PATH, ShapeBuilder, a2d2_classes, class_index
from training.synthetic.world import (GROUND_Z_M, Scene, SceneObject, generate_scene, integrate_path,
                                      random_layout, random_lighting, rectangles_overlap)
from training.synthetic.writer import label3d_json, npz_bytes

CONFIG = Path(DEFAULT_CALIBRATION_PATH).parent
NPZ_DTYPES = {'points': np.float64, 'reflectance': np.int64, 'timestamp': np.int64, 'row': np.float64,
              'col': np.float64, 'depth': np.float64, 'distance': np.float64, 'lidar_id': np.float64,
              'azimuth': np.float64}
BOX_KEYS = {'center', '3d_points', 'size', 'axis', 'rot_angle', 'class', 'id', '2d_bbox', 'truncation',
            'occlusion', 'alpha', 'track_id'}
SEMANTIC_OF_BOX = {'Car': 'Car', 'VanSUV': 'Car', 'Truck': 'Truck', 'Pedestrian': 'Pedestrian',
                   'Cyclist': 'Bicycle', 'Bicycle': 'Bicycle'}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('a2d2_synthetic')
    summary = synthesize(root, scenes=1, frames=2, seed=0, show_progress=False)
    assert summary.frames == 2
    return root


@pytest.fixture(scope='module')
def camera():
    return front_center_camera(load_calibration())


def frames_of(root: Path) -> list[dict]:
    """Per frame (sorted by id): paths of the five files, found through the camera PNGs."""
    frames = []
    for image in sorted(root.glob('*/camera/cam_front_center/*_camera_frontcenter_*.png')):
        scene = image.parents[2]
        stem = image.stem
        frames.append({
            'image': image, 'camera_json': image.with_suffix('.json'),
            'lidar': scene / 'lidar' / 'cam_front_center' / (stem.replace('_camera_', '_lidar_') + '.npz'),
            'label': scene / 'label' / 'cam_front_center' / (stem.replace('_camera_', '_label_') + '.png'),
            'label3d': scene / 'label3D' / 'cam_front_center' / (stem.replace('_camera_', '_label3D_') + '.json'),
        })
    return frames


def load_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def load_json(path: Path):
    with open(path, encoding='utf-8') as stream:
        return json.load(stream)


def view_box_to_vehicle(box: dict, view_to_vehicle: np.ndarray) -> np.ndarray:
    """A label3D box -> (7,) vehicle-frame box, as a reader of the real data set does it."""
    yaw = box['axis'][2] * box['rot_angle']
    view_box = np.array(box['center'] + box['size'] + [yaw])
    return transform_boxes(view_box[None], view_to_vehicle)[0]


# --------------------------------------------------------------------------------------------
# Layout, names, keys

def test_root_files_are_the_real_calibration_and_class_list(dataset):
    assert (dataset / 'cams_lidars.json').read_bytes() == (CONFIG / 'cams_lidars.json').read_bytes()
    assert (dataset / 'class_list.json').read_bytes() == Path(CLASS_LIST_PATH).read_bytes()


def test_layout_and_file_names_follow_a2d2(dataset):
    scenes = [p for p in dataset.iterdir() if p.is_dir()]
    assert len(scenes) == 1
    scene = scenes[0]
    assert re.fullmatch(r'\d{8}_\d{6}', scene.name)
    prefix = scene.name.replace('_', '')
    patterns = {'camera': r'_camera_frontcenter_(\d{9})\.(png|json)', 'lidar': r'_lidar_frontcenter_(\d{9})\.npz',
                'label': r'_label_frontcenter_(\d{9})\.png', 'label3D': r'_label3D_frontcenter_(\d{9})\.json'}
    ids = {}
    for kind, pattern in patterns.items():
        folder = scene / kind / 'cam_front_center'
        names = sorted(p.name for p in folder.iterdir())
        assert names, f'{folder} is empty'
        matches = [re.fullmatch(re.escape(prefix) + pattern, name) for name in names]
        assert all(matches), names
        ids[kind] = sorted({int(m.group(1)) for m in matches})
    assert sorted(p.name for p in scene.iterdir()) == sorted(patterns)
    assert ids['camera'] == ids['lidar'] == ids['label'] == ids['label3D']
    assert len(ids['camera']) == 2
    assert ids['camera'][1] - ids['camera'][0] == 3          # 30 Hz camera, a frame every 0.1 s
    assert len(list((scene / 'camera' / 'cam_front_center').glob('*.json'))) == 2


def test_camera_json_has_name_timestamp_and_lidar_ids(dataset):
    stamps = []
    for frame in frames_of(dataset):
        content = load_json(frame['camera_json'])
        assert content['cam_name'] == 'front_center'
        assert isinstance(content['cam_tstamp'], int)
        assert content['lidar_ids'] == {'0': 'front_left', '1': 'rear_right', '2': 'front_right',
                                        '3': 'front_center', '4': 'rear_left'}
        stamps.append(content['cam_tstamp'])
    assert 1.5e15 < stamps[0] < 1.6e15                          # TAI microseconds in 2018 / 2019
    assert abs(stamps[1] - stamps[0] - 100_000) <= 1_000        # frames 0.1 s apart


def test_npz_keys_dtypes_and_shapes(dataset):
    for frame in frames_of(dataset):
        data = load_npz(frame['lidar'])
        assert set(data) == set(NPZ_DTYPES)
        count = len(data['points'])
        assert 3_000 <= count <= 15_000
        assert data['points'].shape == (count, 3)
        for key, dtype in NPZ_DTYPES.items():
            assert data[key].dtype == dtype, key
            if key != 'points':
                assert data[key].shape == (count,), key
        assert data['reflectance'].min() >= 1 and data['reflectance'].max() <= 255
        assert set(np.unique(data['lidar_id'])) <= {0.0, 2.0, 3.0}
        tstamp = load_json(frame['camera_json'])['cam_tstamp']
        assert data['timestamp'].max() <= tstamp
        assert data['timestamp'].min() >= tstamp - 100_000
        assert data['timestamp'].max() - data['timestamp'].min() > 30_000   # three LiDARs, phased


def test_depth_distance_row_col_follow_the_format(dataset):
    cam_matrix = np.array(load_json(CONFIG / 'cams_lidars.json')['cameras']['front_center']['CamMatrix'])
    fx, fy, cx, cy = cam_matrix[0, 0], cam_matrix[1, 1], cam_matrix[0, 2], cam_matrix[1, 2]
    for frame in frames_of(dataset):
        data = load_npz(frame['lidar'])
        x, y, z = data['points'].T
        np.testing.assert_array_equal(data['depth'], x)
        np.testing.assert_allclose(data['distance'], np.linalg.norm(data['points'], axis=1), rtol=1e-12)
        np.testing.assert_allclose(data['col'], cx - fx * y / x, atol=1e-6)
        np.testing.assert_allclose(data['row'], cy - fy * z / x, atol=1e-6)
        assert (data['col'] >= 0).all() and (data['col'] < 1920).all()
        assert (data['row'] >= 0).all() and (data['row'] < 1208).all()
        assert (x > 0).all()


def test_lidar_ground_points_lie_on_the_ground(dataset, camera):
    """Points seen far below the camera are ground hits at z = -0.9 m in the vehicle frame."""
    data = load_npz(frames_of(dataset)[0]['lidar'])
    vehicle = transform_points(data['points'], camera.view_to_vehicle)
    low = vehicle[:, 2] < GROUND_Z_M + 0.05
    assert low.sum() > 1000
    assert np.abs(vehicle[low, 2] - GROUND_Z_M).max() < 0.1


def test_images_and_labels_are_full_size_rgb_with_exact_class_colours(dataset):
    _, colors = a2d2_classes()
    allowed = {tuple(c) for c in colors.tolist()}
    for frame in frames_of(dataset):
        image = cv2.imread(str(frame['image']), cv2.IMREAD_UNCHANGED)
        label = cv2.imread(str(frame['label']), cv2.IMREAD_UNCHANGED)
        assert image.shape == (1208, 1920, 3) and image.dtype == np.uint8
        assert label.shape == (1208, 1920, 3) and label.dtype == np.uint8
        assert image.std() > 20
        packed = np.unique((label[..., 2].astype(np.int32) << 16) | (label[..., 1].astype(np.int32) << 8)
                           | label[..., 0])
        rgb = {(int(v) >> 16, (int(v) >> 8) & 255, int(v) & 255) for v in packed}
        assert rgb <= allowed, rgb - allowed
        names = {a2d2_classes()[0][[tuple(c) for c in colors.tolist()].index(c)] for c in rgb}
        assert {'Sky', 'RD normal street', 'Buildings'} <= names


def test_label3d_boxes_have_the_a2d2_keys_and_consistent_geometry(dataset, camera):
    k = camera.camera_matrix
    count = 0
    for frame in frames_of(dataset):
        boxes = load_json(frame['label3d'])
        assert list(boxes) == [f'box_{i}' for i in range(len(boxes))]
        for index, box in enumerate(boxes.values()):
            count += 1
            assert set(box) == BOX_KEYS
            assert box['id'] == index and isinstance(box['track_id'], int)
            assert box['class'] in SEMANTIC_OF_BOX
            assert box['axis'] in ([0.0, 0.0, 1.0], [0.0, 0.0, -1.0]) and box['rot_angle'] >= 0
            assert all(s > 0 for s in box['size'])
            corners = np.array(box['3d_points'])
            assert corners.shape == (8, 3)
            np.testing.assert_allclose(corners.mean(axis=0), box['center'], atol=1e-9)
            # corners 0..3 bottom (front-left, front-right, rear-right, rear-left): heading = front - rear
            heading = corners[0] - corners[3]
            yaw = box['axis'][2] * box['rot_angle']
            assert np.cos(np.arctan2(heading[1], heading[0]) - yaw) > 0.999
            assert np.linalg.norm(heading) == pytest.approx(box['size'][0], rel=1e-6)
            assert np.linalg.norm(corners[0] - corners[1]) == pytest.approx(box['size'][1], rel=1e-6)
            cols = k[0, 2] - k[0, 0] * corners[:, 1] / corners[:, 0]
            rows = k[1, 2] - k[1, 1] * corners[:, 2] / corners[:, 0]
            np.testing.assert_allclose(box['2d_bbox'], [cols.min(), rows.min(), cols.max(), rows.max()], atol=1e-9)
            assert 0.0 <= box['truncation'] <= 1.0 and 0.0 <= box['occlusion'] <= 1.0
    assert count >= 4


def test_lidar_points_in_a_box_footprint_mostly_lie_within_the_box(dataset, camera):
    inside_height = total = near_total = near_inside = 0
    for frame in frames_of(dataset):
        data = load_npz(frame['lidar'])
        points = transform_points(data['points'], camera.view_to_vehicle)
        boxes = np.array([view_box_to_vehicle(b, camera.view_to_vehicle)
                          for b in load_json(frame['label3d']).values()]).reshape(-1, 7)
        tall = boxes.copy()
        tall[:, 5] += 100.0                                  # footprint column: any height
        in_column = points_in_boxes(points, tall)
        in_box = points_in_boxes(points, boxes, margin_m=0.05)
        total += in_column.sum()
        inside_height += (in_column & in_box).sum()
        # points above the ground within 0.3 m of a box are hits on that object: inside the box
        near = points_in_boxes(points, boxes, margin_m=0.3).any(axis=1) & (points[:, 2] > GROUND_Z_M + 0.15)
        near_total += near.sum()
        near_inside += (near & in_box.any(axis=1)).sum()
    assert total > 100 and near_total > 100
    assert inside_height / total > 0.8
    assert near_inside / near_total > 0.99


def test_unoccluded_boxes_cover_label_pixels_of_their_class(dataset, camera):
    """A box nobody hides is painted with its class in the label image (undistorted)."""
    names, colors = a2d2_classes()
    checked = 0
    for frame in frames_of(dataset):
        label = camera.undistort_label(cv2.imread(str(frame['label']))[..., ::-1])
        for box in load_json(frame['label3d']).values():
            x0, y0, x1, y1 = box['2d_bbox']
            if box['occlusion'] > 0.05 or box['truncation'] > 0 or (x1 - x0) * (y1 - y0) < 400:
                continue
            region = label[int(y0):int(y1) + 1, int(x0):int(x1) + 1].reshape(-1, 3)
            family = SEMANTIC_OF_BOX[box['class']]
            wanted = np.array([c for n, c in zip(names, colors) if n.startswith(family + ' ')])
            share = (region[:, None, :] == wanted[None]).all(-1).any(-1).mean()
            assert share > 0.2, (box['class'], share)
            checked += 1
    assert checked >= 2


def test_tracks_keep_identity_class_and_size_and_move_plausibly(dataset, camera):
    first, second = (load_json(f['label3d']) for f in frames_of(dataset))
    by_track = [{b['track_id']: b for b in boxes.values()} for boxes in (first, second)]
    for boxes, tracks in zip((first, second), by_track):
        assert len(tracks) == len(boxes)                       # identities are unique within a frame
    common = set(by_track[0]) & set(by_track[1])
    assert len(common) >= 3
    for track in common:
        a, b = by_track[0][track], by_track[1][track]
        assert a['class'] == b['class']
        assert a['size'] == b['size']
        # 0.1 s apart: object + ego speed stays below 35 m/s
        assert np.linalg.norm(np.subtract(a['center'], b['center'])) < 3.5


# --------------------------------------------------------------------------------------------
# Determinism and the writer

def test_same_seed_writes_byte_identical_files(dataset, tmp_path, capsys):
    main(['--out', str(tmp_path), '--scenes', '1', '--frames', '2', '--seed', '0', '--no-progress'])
    assert 'wrote 2 frames' in capsys.readouterr().out
    first = sorted(p.relative_to(dataset) for p in dataset.rglob('*') if p.is_file())
    second = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*') if p.is_file())
    assert first == second and len(first) == 12
    for relative in first:
        assert (dataset / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative


def test_worker_processes_write_the_same_files_as_one(tmp_path):
    serial, parallel = tmp_path / 'serial', tmp_path / 'parallel'
    one = synthesize(serial, scenes=2, frames=1, seed=3, show_progress=False)
    two = synthesize(parallel, scenes=2, frames=1, seed=3, show_progress=False, workers=2)
    assert two.scenes == one.scenes and two.frames == one.frames == 2 and two.box_classes == one.box_classes
    files = sorted(p.relative_to(serial) for p in serial.rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(parallel) for p in parallel.rglob('*') if p.is_file())
    for relative in files:
        assert (serial / relative).read_bytes() == (parallel / relative).read_bytes(), relative


def test_npz_bytes_load_like_numpy_savez_compressed_and_never_change():
    arrays = {'points': np.arange(12, dtype=np.float64).reshape(4, 3), 'reflectance': np.array([1, 2, 3, 255])}
    data = npz_bytes(arrays)
    assert npz_bytes(arrays) == data
    reference = io.BytesIO()
    np.savez_compressed(reference, **arrays)
    with zipfile.ZipFile(io.BytesIO(data)) as ours, zipfile.ZipFile(io.BytesIO(reference.getvalue())) as theirs:
        assert ours.namelist() == theirs.namelist() == ['points.npy', 'reflectance.npy']
        assert [i.compress_type for i in ours.infolist()] == [zipfile.ZIP_DEFLATED] * 2
        assert [i.date_time for i in ours.infolist()] == [(1980, 1, 1, 0, 0, 0)] * 2
        for name in ours.namelist():
            assert ours.read(name) == theirs.read(name)
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        for key, value in arrays.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype


def test_yaw_sign_is_carried_by_the_axis_and_both_signs_occur(camera):
    signs = set()
    for seed in range(3):
        scene = generate_scene(np.random.default_rng(seed), 1)
        arrays = SceneArrays.from_scene(scene)
        geometry = frame_geometry(scene, arrays, 0)
        users = [i for i, obj in enumerate(scene.objects) if obj.box_class is not None]
        boxes = geometry.object_boxes[users]
        content = label3d_json(boxes, ['Car'] * len(users), users, camera, np.zeros(len(users)), np.zeros(len(users)))
        expected = transform_boxes(boxes, camera.vehicle_to_view)[:, 6]
        for box, yaw, vehicle_box in zip(content.values(), expected, boxes):
            assert box['axis'][2] * box['rot_angle'] == pytest.approx(yaw, abs=1e-12)
            signs.add(box['axis'][2])
            back = view_box_to_vehicle(box, camera.view_to_vehicle)
            assert np.cos(back[6] - vehicle_box[6]) > 0.9999
    assert signs == {1.0, -1.0}


def test_distortion_maps_match_the_calibration_module(camera):
    image = np.random.default_rng(0).integers(0, 255, (1208, 1920, 3), dtype=np.uint8)
    map_x, map_y = distortion_maps(camera)
    ours = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(ours, camera.distort_image(image))


# --------------------------------------------------------------------------------------------
# World and geometry on hand-made cases

def test_rectangles_overlap_on_hand_made_cases():
    unit = [0.0, 0.0, 2.0, 2.0, 0.0]
    assert rectangles_overlap(np.array([unit]), np.array([[1.5, 1.5, 2.0, 2.0, 0.0]]))[0]
    assert not rectangles_overlap(np.array([unit]), np.array([[2.1, 0.0, 2.0, 2.0, 0.0]]))[0]
    # a diamond (the square turned 45 deg, half-diagonal sqrt 2) reaches x - 1.41: misses at 2.5, hits at 2.3
    assert not rectangles_overlap(np.array([unit]), np.array([[2.5, 0.0, 2.0, 2.0, np.pi / 4]]))[0]
    assert rectangles_overlap(np.array([unit]), np.array([[2.3, 0.0, 2.0, 2.0, np.pi / 4]]))[0]
    assert rectangles_overlap(np.array([unit]), np.array([[2.1, 0.0, 2.0, 2.0, 0.0]]), margin_m=0.3)[0]


def test_integrate_path_straight_and_quarter_circle():
    frames = 21                                       # 2 s
    steps = (frames - 1) * 5 + 1
    poses, distance = integrate_path(1.0, 2.0, 0.0, np.full(steps, 5.0), np.zeros(steps), frames)
    np.testing.assert_allclose(poses[-1], [11.0, 2.0, 0.0], atol=1e-9)
    assert distance[-1] == pytest.approx(10.0)
    radius, speed = 10.0, np.pi * 10.0 / 2 / 2.0       # a quarter circle in 2 s
    poses, _ = integrate_path(0.0, 0.0, 0.0, np.full(steps, speed), np.full(steps, speed / radius), frames)
    np.testing.assert_allclose(poses[-1], [radius, radius, np.pi / 2], atol=0.15)


def test_road_users_never_overlap_each_other():
    scene = generate_scene(np.random.default_rng(5), 30)
    users = scene.annotated()
    assert len(users) > 10
    footprints = [obj.footprints(scene.frame_count) for obj in users]
    for i in range(len(users)):
        for j in range(i + 1, len(users)):
            assert not rectangles_overlap(footprints[i], footprints[j]).any()


def test_road_users_stay_on_the_road_and_the_sidewalks_over_a_long_scene():
    """20 s: vehicles along the road keep to the paved road, walkers along it to their sidewalk."""
    checked = 0
    for seed in (1, 2):
        scene = generate_scene(np.random.default_rng(seed), 200)
        layout = scene.layout
        road = sorted((layout.road_edge(-1), layout.road_edge(1)))
        for obj in scene.annotated():
            along_road = abs(np.sin(obj.poses[0, 2])) < 0.3
            moving = np.ptp(obj.poses[:, 0]) > 5.0
            if not (along_road and moving):
                continue
            y = obj.poses[:, 1]
            if obj.box_class in ('Car', 'VanSUV', 'Truck', 'Cyclist'):
                assert road[0] <= y.min() and y.max() <= road[1], (obj.box_class, y.min(), y.max(), road)
                checked += 1
            elif obj.box_class == 'Pedestrian':
                side = -1 if y[0] < layout.centre_y else 1
                walk = sorted(layout.sidewalk(side))
                assert walk[0] - 0.3 <= y.min() and y.max() <= walk[1] + 0.3, (y.min(), y.max(), walk)
                checked += 1
    assert checked >= 10


def _single_box_scene(box_local, yaw: float, x: float, y: float) -> tuple[Scene, GroundMap]:
    rng = np.random.default_rng(0)
    builder = ShapeBuilder()
    builder.part(box_local, (200, 30, 30), 'Car 1', 50.0)
    shape = builder.build((box_local[3], box_local[4], box_local[5]))
    obj = SceneObject(shape, 2, np.array([[x, y, yaw]]), np.zeros(1), 'Car', 1)
    layout = random_layout(rng, (-20.0, 200.0))
    scene = Scene(layout, random_lighting(rng), [obj], np.zeros((1, 3)), 1)
    label = np.full((100, 200), class_index('RD normal street'), np.uint8)
    ground = GroundMap(x0=-50.0, y_max=50.0, resolution_m=1.0, color=np.full((100, 200, 3), 90, np.uint8),
                       label=label, reflectance=np.full((100, 200), 12, np.uint8),
                       border_label=class_index('Nature object'), border_color=(60, 90, 40), border_reflectance=20)
    return scene, ground


def test_lidar_points_lie_on_the_ground_or_on_the_box_surface(camera):
    scene, ground = _single_box_scene((0.0, 0.0, 0.0, 4.0, 2.0, 1.5), yaw=0.4, x=15.0, y=1.0)
    arrays = SceneArrays.from_scene(scene)
    geometry = frame_geometry(scene, arrays, 0)
    rig = LidarRig.build(load_calibration(), camera)
    scan = cast_rays(rig, arrays, geometry, ground, np.random.default_rng(1))
    on_box = scan.part == 0
    assert on_box.sum() > 50
    np.testing.assert_allclose(scan.points_vehicle[~on_box, 2], GROUND_Z_M, atol=0.08)
    box = geometry.part_boxes[0]
    local = transform_points(scan.points_vehicle[on_box],
                             np.linalg.inv(_pose(box[0], box[1], box[2], box[6])))
    signed = np.max(np.abs(local) - box[3:6] / 2, axis=1)       # ~0 on the surface
    assert np.abs(signed).max() < 0.08
    assert (scan.reflectance[on_box] > 15).all() and (scan.reflectance[on_box] < 80).all()


def _pose(x, y, z, yaw):
    transform = np.eye(4)
    transform[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    transform[:3, 3] = x, y, z
    return transform


def render_first_frame(camera, scene, ground):
    """(rig, rendered CameraFrame, label image RGB) of frame 0 of `scene` seen by `camera`."""
    arrays = SceneArrays.from_scene(scene)
    geometry = frame_geometry(scene, arrays, 0)
    rig = CameraRig.build(camera)
    look = scene_look(rig, arrays, scene.lighting, np.random.default_rng(0))
    frame = render_camera(rig, look, arrays, geometry, ground, np.random.default_rng(0))
    return rig, frame, frame.label_bgr[..., ::-1]


def test_rendered_box_is_labelled_at_its_projection_and_sky_above(camera):
    scene, ground = _single_box_scene((0.0, 0.0, 0.0, 4.0, 2.0, 1.5), yaw=0.0, x=12.0, y=0.0)
    rig, frame, label_rgb = render_first_frame(camera, scene, ground)
    names, colors = a2d2_classes()
    # the rear face centre (x = 10 m, z = -0.9 + 0.75) in the distorted image, as the format notes say
    centre_view = transform_points(np.array([[10.0, 0.0, GROUND_Z_M + 0.75]]), camera.vehicle_to_view)
    optical = np.array([[-centre_view[0, 1], -centre_view[0, 2], centre_view[0, 0]]])
    pixel, _ = cv2.projectPoints(optical, np.zeros(3), np.zeros(3), camera.camera_matrix_original, camera.distortion)
    col, row = np.round(pixel.reshape(2)).astype(int)
    assert tuple(label_rgb[row, col]) == tuple(colors[names.index('Car 1')])
    assert tuple(label_rgb[20, 960]) == tuple(colors[names.index('Sky')])
    assert tuple(label_rgb[1200, 960]) == tuple(colors[names.index('RD normal street')])
    assert frame.visible_px[0] > 1000 and frame.own_px[0] == pytest.approx(frame.visible_px[0], rel=0.05)
