"""The surround rig (`--rig surround`): six A2D2 cameras and five LiDARs, in A2D2's own layout.

Most tests read one small generated data set (2 scenes x 2 frames, written through the CLI)
the way a reader of the real data set would: per camera folder, file names, camera JSONs,
per-camera LiDAR files in each camera's view frame, labels and boxes. A few build a hand-made
scene to check the fisheye rendering exactly.
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from mtl_perception_ros.core.boxes import points_in_boxes, transform_boxes
from mtl_perception_ros.core.camera import transform_points
from training.data.a2d2_calibration import (CAMERA_NAMES, a2d2_camera, camera_file_token, camera_folder,
                                            load_calibration)
from training.synthetic.ground import GroundMap
from training.synthetic.lidar import LidarRig
from training.synthetic.render import MAX_CANVAS_PX, CameraRig
from training.synthetic.shapes import ShapeBuilder, a2d2_classes, class_index
from training.synthetic.synthesize import CAMERA_OFFSET_US, TSTAMP_JITTER_US, Synthesizer, main, synthesize
from training.synthetic.world import (GROUND_Z_M, Scene, SceneObject, generate_scene, random_layout,
                                      random_lighting)
from training.synthetic.writer import camera_json, frame_paths, frame_stem
from test_synthesize import load_json, load_npz, render_first_frame

SEED, SCENES, FRAMES = 3, 2, 2
KINDS = {'camera': ('png', 'json'), 'lidar': ('npz',), 'label': ('png',), 'label3D': ('json',)}
GROUND_CLASSES = {'RD normal street', 'Sidewalk', 'Curbstone', 'Parking area', 'Solid line', 'Dashed line',
                  'Zebra crossing', 'Painted driv. instr.', 'Nature object'}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('a2d2_surround')
    main(['--out', str(root), '--scenes', str(SCENES), '--frames', str(FRAMES), '--seed', str(SEED),
          '--rig', 'surround', '--no-progress'])
    return root


@pytest.fixture(scope='module')
def cameras():
    calibration = load_calibration()
    return {name: a2d2_camera(calibration, name) for name in CAMERA_NAMES}


def scene_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def camera_frames(scene: Path, camera: str) -> list[dict]:
    """Per frame of `camera` (sorted by ID): its ID and the paths of its five files."""
    frames = []
    for image in sorted((scene / 'camera' / camera_folder(camera)).glob('*.png')):
        stem = image.stem

        def sibling(kind, suffix):
            return scene / kind / camera_folder(camera) / (stem.replace('_camera_', f'_{kind}_') + suffix)

        frames.append({'id': int(stem[-9:]), 'image': image, 'camera_json': image.with_suffix('.json'),
                       'lidar': sibling('lidar', '.npz'), 'label': sibling('label', '.png'),
                       'label3d': sibling('label3D', '.json')})
    return frames


def points_vehicle(data: dict, camera) -> np.ndarray:
    """A camera's LiDAR points in the vehicle frame (the reader's transform)."""
    return transform_points(data['points'], camera.view_to_vehicle)


def view_box_to_vehicle(box: dict, view_to_vehicle: np.ndarray) -> np.ndarray:
    yaw = box['axis'][2] * box['rot_angle']
    return transform_boxes(np.array(box['center'] + box['size'] + [yaw])[None], view_to_vehicle)[0]


def label_classes(label_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB label -> (H, W) class index (-1 for colours not in class_list.json)."""
    _, colors = a2d2_classes()
    packed = (label_rgb[..., 0].astype(np.int64) << 16) | (label_rgb[..., 1].astype(np.int64) << 8) | label_rgb[..., 2]
    keys = (colors[:, 0].astype(np.int64) << 16) | (colors[:, 1].astype(np.int64) << 8) | colors[:, 2]
    order = np.argsort(keys)
    position = np.clip(np.searchsorted(keys[order], packed), 0, len(keys) - 1)
    found = keys[order][position] == packed
    return np.where(found, order[position], -1)


# --------------------------------------------------------------------------------------------
# Layout, names, camera JSON

def test_every_camera_has_its_folders_and_a2d2_file_names(dataset):
    scenes = scene_folders(dataset)
    assert len(scenes) == SCENES
    for scene in scenes:
        prefix = scene.name.replace('_', '')
        assert sorted(p.name for p in scene.iterdir()) == sorted(KINDS)
        ids = {}
        for kind, suffixes in KINDS.items():
            assert sorted(p.name for p in (scene / kind).iterdir()) == sorted(camera_folder(c) for c in CAMERA_NAMES)
            for camera in CAMERA_NAMES:
                token = camera_file_token(camera)
                names = sorted(p.name for p in (scene / kind / camera_folder(camera)).iterdir())
                pattern = re.escape(prefix) + f'_{kind}_{token}_' + r'(\d{9})\.(' + '|'.join(suffixes) + ')'
                matches = [re.fullmatch(pattern, name) for name in names]
                assert all(matches), (kind, camera, names)
                assert len(names) == FRAMES * len(suffixes)
                found = sorted({int(m.group(1)) for m in matches})
                assert ids.setdefault(camera, found) == found          # the same IDs for every kind
        for camera, found in ids.items():
            assert np.diff(found).tolist() == [3] * (FRAMES - 1), camera     # 30 Hz, a frame every 0.1 s
        for frame in range(FRAMES):                          # per-camera counters: not the same IDs
            assert len({found[frame] for found in ids.values()}) == len(CAMERA_NAMES)


def test_camera_json_names_its_camera_and_stamps_within_a_few_ms(dataset):
    for scene in scene_folders(dataset):
        stamps = {}
        for camera in CAMERA_NAMES:
            stamps[camera] = []
            for frame in camera_frames(scene, camera):
                content = load_json(frame['camera_json'])
                assert content['cam_name'] == camera
                assert content['lidar_ids'] == {'0': 'front_left', '1': 'rear_right', '2': 'front_right',
                                                '3': 'front_center', '4': 'rear_left'}
                assert isinstance(content['cam_tstamp'], int)
                stamps[camera].append(content['cam_tstamp'])
        reference = np.array(stamps['front_center'])
        assert 1.5e15 < reference[0] < 1.6e15
        assert np.all(np.abs(np.diff(reference) - 100_000) <= 2 * TSTAMP_JITTER_US)
        offsets = {camera: np.array(values) - reference for camera, values in stamps.items()}
        for camera, offset in offsets.items():
            # a constant offset of a few ms per camera (the jitter of both cameras on top)
            assert np.all(np.abs(offset) <= CAMERA_OFFSET_US + 2 * TSTAMP_JITTER_US), (camera, offset)
            assert np.ptp(offset) <= 4 * TSTAMP_JITTER_US, (camera, offset)
        assert max(abs(offset[0]) for offset in offsets.values()) > 4 * TSTAMP_JITTER_US   # not synchronised


# --------------------------------------------------------------------------------------------
# LiDAR per camera

def test_each_camera_lidar_file_projects_into_its_cam_matrix_image(dataset, cameras):
    for scene in scene_folders(dataset):
        for name, camera in cameras.items():
            k = camera.camera_matrix
            for frame in camera_frames(scene, name):
                data = load_npz(frame['lidar'])
                x, y, z = data['points'].T
                assert len(x) > 3000, name
                assert (x > 0.5).all()
                np.testing.assert_array_equal(data['depth'], x)
                np.testing.assert_allclose(data['distance'], np.linalg.norm(data['points'], axis=1), rtol=1e-12)
                np.testing.assert_allclose(data['col'], k[0, 2] - k[0, 0] * y / x, atol=1e-6)
                np.testing.assert_allclose(data['row'], k[1, 2] - k[1, 1] * z / x, atol=1e-6)
                assert (data['col'] >= 0).all() and (data['col'] < 1920).all()
                assert (data['row'] >= 0).all() and (data['row'] < 1208).all()
                assert data['points'].dtype == np.float64 and data['timestamp'].dtype == np.int64
                assert set(np.unique(data['lidar_id'])) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_points_lie_where_each_camera_looks(dataset, cameras):
    scene = scene_folders(dataset)[0]
    found = {}
    for name, camera in cameras.items():
        points = np.concatenate([points_vehicle(load_npz(f['lidar']), camera) for f in camera_frames(scene, name)])
        found[name] = points
    assert (found['front_center'][:, 0] > 1.7).all()
    assert (found['rear_center'][:, 0] < -0.4).all()
    assert (found['side_left'][:, 1] > 0.58).all() and np.median(found['side_left'][:, 1]) > 3.0
    assert (found['side_right'][:, 1] < -0.58).all() and np.median(found['side_right'][:, 1]) < -3.0
    # rear LiDARs reach the rear camera, the front ones the front camera
    rear_ids = set(np.unique(load_npz(camera_frames(scene, 'rear_center')[0]['lidar'])['lidar_id']))
    assert {1.0, 4.0} <= rear_ids


@pytest.mark.parametrize('first, second', [('front_center', 'front_left'), ('side_left', 'rear_center')])
def test_a_point_seen_by_two_cameras_is_in_both_files(dataset, cameras, first, second):
    scene = scene_folders(dataset)[0]
    frame_a, frame_b = camera_frames(scene, first)[0], camera_frames(scene, second)[0]
    a, b = load_npz(frame_a['lidar']), load_npz(frame_b['lidar'])
    points_a, points_b = points_vehicle(a, cameras[first]), points_vehicle(b, cameras[second])
    distance, index = cKDTree(points_b).query(points_a)
    shared = distance < 1e-6
    assert shared.sum() > 200, shared.sum()
    if first == 'front_center':          # front_left's wide view holds nearly all of front_center's
        assert shared.mean() > 0.8
    for key in ('timestamp', 'reflectance', 'lidar_id', 'azimuth'):
        np.testing.assert_array_equal(a[key][shared], b[key][index[shared]], err_msg=key)


def test_lidar_points_precede_every_camera_image(dataset):
    for scene in scene_folders(dataset):
        for frame in range(FRAMES):
            stamps = [load_json(camera_frames(scene, c)[frame]['camera_json'])['cam_tstamp'] for c in CAMERA_NAMES]
            times = np.concatenate([load_npz(camera_frames(scene, c)[frame]['lidar'])['timestamp']
                                    for c in CAMERA_NAMES])
            assert times.max() < min(stamps)
            assert times.min() > max(stamps) - 130_000        # one revolution (100 ms) before, plus the lead
            assert np.ptp(times) > 60_000                      # the spins spread over the revolution


def test_ground_and_object_points_hit_their_label_classes(dataset, cameras):
    """Each LiDAR point looks up the class under it in the undistorted label (CamMatrix image)."""
    names, _ = a2d2_classes()
    ground = [names.index(n) for n in GROUND_CLASSES]
    scene = scene_folders(dataset)[0]
    for name, camera in cameras.items():
        frame = camera_frames(scene, name)[0]
        data = load_npz(frame['lidar'])
        label = label_classes(camera.undistort_label(cv2.imread(str(frame['label'])))[..., ::-1])
        rows = np.clip(np.round(data['row']).astype(int), 0, 1207)
        cols = np.clip(np.round(data['col']).astype(int), 0, 1919)
        classes = label[rows, cols]
        z = points_vehicle(data, camera)[:, 2]
        on_ground, high = np.abs(z - GROUND_Z_M) < 0.05, z > GROUND_Z_M + 0.5
        assert on_ground.sum() > 1000 and high.sum() > 200, name
        # not all: a LiDAR (mounted higher) sees ground behind cars that the camera sees as the car
        assert np.isin(classes[on_ground], ground).mean() > 0.9, name
        assert (~np.isin(classes[high], [names.index('Sky'), names.index('RD normal street')])).mean() > 0.98, name


# --------------------------------------------------------------------------------------------
# Labels and boxes

def test_rear_camera_sees_road_users_behind_the_car(dataset, cameras):
    camera = cameras['rear_center']
    scene = scene_folders(dataset)[0]
    centres = []
    k = camera.camera_matrix
    for frame in camera_frames(scene, 'rear_center'):
        boxes = load_json(frame['label3d'])
        assert list(boxes) == [f'box_{i}' for i in range(len(boxes))]
        for box in boxes.values():
            assert isinstance(box['track_id'], int) and box['axis'] in ([0.0, 0.0, 1.0], [0.0, 0.0, -1.0])
            corners = np.array(box['3d_points'])
            assert (corners[:, 0] > 0.5).all()                          # in front of the rear camera
            cols = k[0, 2] - k[0, 0] * corners[:, 1] / corners[:, 0]
            rows = k[1, 2] - k[1, 1] * corners[:, 2] / corners[:, 0]
            np.testing.assert_allclose(box['2d_bbox'], [cols.min(), rows.min(), cols.max(), rows.max()], atol=1e-9)
            centres.append(view_box_to_vehicle(box, camera.view_to_vehicle)[:3])
    centres = np.array(centres).reshape(-1, 3)
    assert len(centres) >= 1
    assert (centres[:, 0] < -1.0).all()


def test_boxes_of_a_road_user_agree_between_cameras(dataset, cameras):
    """A road user boxed by two cameras has one vehicle-frame box (same track, class and pose)."""
    scene = scene_folders(dataset)[0]
    by_track: dict = {}
    for name, camera in cameras.items():
        for box in load_json(camera_frames(scene, name)[0]['label3d']).values():
            by_track.setdefault(box['track_id'], []).append((box['class'], box['size'],
                                                             view_box_to_vehicle(box, camera.view_to_vehicle)))
    shared = [entries for entries in by_track.values() if len(entries) > 1]
    assert len(shared) >= 3
    for entries in shared:
        assert len({(cls, tuple(size)) for cls, size, _ in entries}) == 1
        np.testing.assert_allclose([e[2][:3] for e in entries], [entries[0][2][:3]] * len(entries), atol=1e-9)


def test_lidar_points_near_boxes_lie_inside_them(dataset, cameras):
    near_total = near_inside = 0
    scene = scene_folders(dataset)[0]
    for name, camera in cameras.items():
        frame = camera_frames(scene, name)[0]
        points = points_vehicle(load_npz(frame['lidar']), camera)
        boxes = np.array([view_box_to_vehicle(b, camera.view_to_vehicle)
                          for b in load_json(frame['label3d']).values()]).reshape(-1, 7)
        near = points_in_boxes(points, boxes, margin_m=0.3).any(axis=1) & (points[:, 2] > GROUND_Z_M + 0.15)
        near_total += near.sum()
        near_inside += (near & points_in_boxes(points, boxes, margin_m=0.05).any(axis=1)).sum()
    assert near_total > 300
    assert near_inside / near_total > 0.99


def test_label_colours_are_a2d2_classes(dataset):
    names, _ = a2d2_classes()
    scene = scene_folders(dataset)[0]
    for camera in CAMERA_NAMES:
        label = cv2.imread(str(camera_frames(scene, camera)[0]['label']))[..., ::-1]
        classes = label_classes(label)
        assert (classes >= 0).all(), camera
        present = {names[i] for i in np.unique(classes)}
        assert {'Sky', 'RD normal street'} <= present, (camera, present)


@pytest.mark.parametrize('camera_name', ['side_left', 'rear_center'])
def test_undistorted_fisheye_label_and_image_stay_aligned(dataset, cameras, camera_name):
    """The sky's lower edge in the undistorted label is an edge of the undistorted image too."""
    camera = cameras[camera_name]
    frame = camera_frames(scene_folders(dataset)[0], camera_name)[0]
    image = camera.undistort_image(cv2.imread(str(frame['image']))).astype(np.float32)
    label = label_classes(camera.undistort_label(cv2.imread(str(frame['label'])))[..., ::-1])
    not_sky = label != a2d2_classes()[0].index('Sky')
    height, width = not_sky.shape
    edge = np.argmax(not_sky, axis=0)                           # first non-sky row per column
    gradient = np.abs(np.diff(image, axis=0)).sum(axis=2)       # (H - 1, W): row r -> r + 1
    offsets = []
    for col in range(0, width, 8):
        row = edge[col]
        if not (20 <= row < height - 20) or not_sky[:row, col].any():
            continue
        above, below = image[row - 6:row - 2, col].mean(0), image[row + 2:row + 6, col].mean(0)
        if np.abs(above - below).sum() < 40:                    # too little contrast to find the edge
            continue
        window = gradient[row - 10:row + 10, col]
        offsets.append(int(np.argmax(window)) - 10 + 1)         # + 1: gradient row r is the step to r + 1
    offsets = np.array(offsets)
    assert len(offsets) > 50
    assert np.median(np.abs(offsets)) <= 1
    assert np.mean(np.abs(offsets) <= 2) > 0.8


# --------------------------------------------------------------------------------------------
# Determinism and the rig

def test_worker_processes_write_the_same_files_as_one(dataset, tmp_path):
    summary = synthesize(tmp_path, scenes=SCENES, frames=FRAMES, seed=SEED, show_progress=False, workers=2,
                         rig='surround')
    assert summary.frames == SCENES * FRAMES
    files = sorted(p.relative_to(dataset) for p in dataset.rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*') if p.is_file())
    assert len(files) == 2 + SCENES * FRAMES * len(CAMERA_NAMES) * 5
    for relative in files:
        assert (dataset / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative


def test_writer_names_files_after_their_camera():
    start = datetime(2018, 8, 7, 14, 50, 28)
    assert frame_stem(start, 'label3D', 91, 'side_left') == '20180807145028_label3D_sideleft_000000091'
    paths = frame_paths(Path('/root'), start, 7, 'rear_center')
    assert paths['lidar'] == Path('/root/20180807_145028/lidar/cam_rear_center/'
                                  '20180807145028_lidar_rearcenter_000000007.npz')
    assert camera_json(5, {}, 'front_right')['cam_name'] == 'front_right'
    with pytest.raises(ValueError, match='rear_left'):
        frame_paths(Path('/root'), start, 7, 'rear_left')        # a LiDAR, not a camera


def test_unknown_rig_is_rejected(tmp_path):
    with pytest.raises(ValueError, match='rig'):
        synthesize(tmp_path, scenes=1, frames=1, seed=0, show_progress=False, rig='sideways')
    with pytest.raises(ValueError, match='sideways'):
        Synthesizer(rig='sideways')


def test_surround_lidar_rig_fires_all_five_lidars_all_around():
    rig = LidarRig.build_surround(load_calibration())
    assert rig.full_circle
    assert set(np.unique(rig.lidar_id)) == {0.0, 1.0, 2.0, 3.0, 4.0}
    assert len(rig.heading) == 5 * 16 * 1800
    counts, _ = np.histogram(rig.heading, bins=36, range=(-np.pi, np.pi))
    assert counts.min() > 0.5 * counts.mean()                    # no gap in any direction
    assert (rig.time_offset_us < 0).all() and (rig.time_offset_us >= -110_000).all()


def test_surround_scene_has_road_users_and_buildings_behind_the_car():
    scene = generate_scene(np.random.default_rng(4), 2, surround=True)
    users = np.array([obj.pose(0)[:2] for obj in scene.annotated()])
    assert (users[:, 0] < -10.0).sum() >= 3
    assert scene.layout.x_range[0] <= -100.0
    buildings = [obj.pose(0)[0] for obj in scene.objects if obj.layer == 1]
    assert min(buildings) < -100.0                                   # the rear backdrop
    front = generate_scene(np.random.default_rng(4), 2)
    assert front.layout.x_range[0] == -40.0


def test_fisheye_canvas_covers_its_distortion_map(cameras):
    for name, camera in cameras.items():
        rig = CameraRig.build(camera)
        height, width = rig.canvas_hw
        assert rig.map_x.min() >= 0 and rig.map_x.max() <= width - 1
        assert rig.map_y.min() >= 0 and rig.map_y.max() <= height - 1
        if camera.fisheye:
            assert rig.scale < 1 and height * width <= 1.02 * MAX_CANVAS_PX      # + the pads
        else:
            assert rig.scale == 1.0


def _box_scene(x: float, y: float) -> tuple[Scene, GroundMap]:
    """One 4 x 2 x 1.5 m 'Car 1' box at (x, y) on a road-coloured ground."""
    rng = np.random.default_rng(0)
    builder = ShapeBuilder()
    builder.part((0.0, 0.0, 0.0, 4.0, 2.0, 1.5), (200, 30, 30), 'Car 1', 50.0)
    obj = SceneObject(builder.build((4.0, 2.0, 1.5)), 2, np.array([[x, y, 0.0]]), np.zeros(1), 'Car', 1)
    scene = Scene(random_layout(rng, (-200.0, 200.0)), random_lighting(rng), [obj], np.zeros((1, 3)), 1)
    ground = GroundMap(x0=-100.0, y_max=50.0, resolution_m=1.0, color=np.full((100, 200, 3), 90, np.uint8),
                       label=np.full((100, 200), class_index('RD normal street'), np.uint8),
                       reflectance=np.full((100, 200), 12, np.uint8), border_label=class_index('Nature object'),
                       border_color=(60, 90, 40), border_reflectance=20)
    return scene, ground


@pytest.mark.parametrize('camera_name, x, y', [('rear_center', -12.0, 0.0), ('side_right', 1.0, -9.0)])
def test_fisheye_render_labels_a_box_at_its_lens_projection(cameras, camera_name, x, y):
    camera = cameras[camera_name]
    scene, ground = _box_scene(x, y)
    rig, frame, label_rgb = render_first_frame(camera, scene, ground)
    names, colors = a2d2_classes()
    # the face towards the camera: its centre, 0.75 m above the ground, through the fisheye lens
    towards = rig.position[:2] - np.array([x, y])
    towards = towards / np.abs(towards).max()
    face_centre = np.array([[x + 2.0 * towards[0], y + 1.0 * towards[1], GROUND_Z_M + 0.75]])
    col, row = np.round(camera.distorted_pixels(transform_points(face_centre, camera.vehicle_to_view))[0]).astype(int)
    assert tuple(label_rgb[row, col]) == tuple(colors[names.index('Car 1')])
    # the road 1.5 m in front of that face and the sky 3 m above it
    road = np.array([[face_centre[0, 0] + 1.5 * towards[0], face_centre[0, 1] + 1.5 * towards[1], GROUND_Z_M]])
    below = camera.distorted_pixels(transform_points(road, camera.vehicle_to_view))[0]
    above = camera.distorted_pixels(transform_points(face_centre + [0, 0, 3.0], camera.vehicle_to_view))[0]
    assert (0 <= above).all() and (above < (1920, 1208)).all() and (0 <= below).all() and (below < (1920, 1208)).all()
    assert tuple(label_rgb[int(below[1]), int(below[0])]) == tuple(colors[names.index('RD normal street')])
    assert tuple(label_rgb[int(above[1]), int(above[0])]) == tuple(colors[names.index('Sky')])
    assert frame.visible_px[0] > 1000 and frame.own_px[0] == pytest.approx(frame.visible_px[0], rel=0.1)
