"""The real converter path end to end on synthetic data in A2D2's layout:
training.synthetic.synthesize (CLI) -> A2D2Reader -> training.data.convert (CLI) -> ChunkReader."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mtl_perception_ros.core.boxes import box_corners, points_in_boxes
from mtl_perception_ros.core.camera import project_points
from training.data.a2d2_reader import A2D2Reader
from training.data.chunks import ChunkReader

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('a2d2')
    subprocess.run([sys.executable, '-m', 'training.synthetic.synthesize', '--out', str(root), '--scenes', '2',
                    '--frames', '2', '--seed', '7', '--no-progress'], check=True, capture_output=True)
    return root


@pytest.fixture(scope='module')
def frames(synthetic_root):
    reader = A2D2Reader(synthetic_root)
    frames = list(reader)
    assert reader.stats.frames_skipped == 0, reader.report()
    return frames


def test_every_synthetic_frame_is_read(frames):
    assert len(frames) == 4
    for frame in frames:
        assert frame.image.shape == (1208, 1920, 3) and frame.class_map.shape == (1208, 1920)
        assert frame.points.dtype == np.float32 and frame.points.shape[1] == 4 and len(frame.points) > 3000
        assert 0.0 <= frame.points[:, 3].min() and frame.points[:, 3].max() <= 1.0
        assert len(frame.boxes) > 0 and (frame.track_ids >= 0).all()


def test_lidar_points_project_into_the_undistorted_image(frames):
    for frame in frames:
        _, _, valid = project_points(frame.points, frame.vehicle_to_camera, frame.camera_matrix, frame.image.shape[:2])
        assert valid.mean() > 0.98


def test_box_corners_project_onto_the_2d_bbox_of_label3d(synthetic_root, frames):
    for frame in frames:
        scene, frame_id = frame.name.split('/')
        label_file, = (synthetic_root / scene / 'label3D' / 'cam_front_center').glob(f'*_{frame_id}.json')
        raw = {box['track_id']: box for box in json.loads(label_file.read_text()).values()}
        for box, track_id in zip(frame.boxes, frame.track_ids):
            corners = box_corners(box[None])[0]
            uv, _, _ = project_points(corners, frame.vehicle_to_camera, frame.camera_matrix)
            expected = raw[int(track_id)]['2d_bbox']
            np.testing.assert_allclose([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()],
                                       expected, atol=1.0)


def test_points_inside_car_boxes_land_on_car_pixels(frames):
    car_id = 8   # config/a2d2/semantic_classes.yaml: car
    hits = on_car = 0
    for frame in frames:
        cars = frame.boxes[frame.box_classes == 0]
        inside = points_in_boxes(frame.points, cars).any(axis=1)
        uv, _, valid = project_points(frame.points[inside], frame.vehicle_to_camera, frame.camera_matrix,
                                      frame.image.shape[:2])
        cols, rows = uv[valid, 0].astype(int), uv[valid, 1].astype(int)
        hits += valid.sum()
        on_car += (frame.class_map[rows, cols] == car_id).sum()
    assert hits > 100
    assert on_car / hits > 0.8


def test_convert_cli_writes_chunks_that_read_back_identically(synthetic_root, frames, tmp_path):
    out = tmp_path / 'chunks'
    subprocess.run([sys.executable, '-m', 'training.data.convert', '--root', str(synthetic_root), '--out', str(out),
                    '--val-fraction', '0.5'], check=True, capture_output=True)
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['complete']
    by_name = {frame.name: frame for frame in frames}
    seen_scenes = {'train': set(), 'val': set()}
    for chunk_file in sorted(out.glob('*.npz')):
        split = chunk_file.name.split('_')[0]
        chunk = ChunkReader(chunk_file)
        for i in range(len(chunk)):
            frame = chunk.frame(i)
            original = by_name.pop(frame.name)
            seen_scenes[split].add(frame.scene)
            np.testing.assert_array_equal(frame.points, original.points)
            np.testing.assert_array_equal(frame.image, original.image)
            np.testing.assert_array_equal(frame.class_map, original.class_map)
            np.testing.assert_array_equal(frame.boxes, original.boxes)
            np.testing.assert_array_equal(frame.track_ids, original.track_ids)
            assert frame.camera_timestamp_us == original.camera_timestamp_us
    assert not by_name, f'frames missing from the chunks: {sorted(by_name)}'
    assert seen_scenes['train'] and seen_scenes['val'] and not seen_scenes['train'] & seen_scenes['val']
