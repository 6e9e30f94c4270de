"""NPZ chunks: round trip, schema details, damaged and foreign files."""
from __future__ import annotations

import os

import numpy as np
import pytest

from training.data.chunks import CHUNK_VERSION, ChunkError, ChunkReader, frame_arrays, write_chunk
from training.data.frame import CameraView, Frame


def make_frame(seed: int, points: int = 5, boxes: int = 2, with_class_map: bool = True,
               scene: str = 'scene_a') -> Frame:
    rng = np.random.default_rng(seed)
    height, width = 24, 40
    k = np.array([[30.0, 0, 19.5], [0, 31.0, 11.5], [0, 0, 1]])
    v2c = np.eye(4)
    v2c[:3, 3] = [0.1 * seed, -0.2, 0.3]
    return Frame(
        name=f'{scene}/{seed:09d}', scene=scene,
        points=rng.normal(size=(points, 4)).astype(np.float32),
        image=rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8),
        class_map=(rng.integers(0, 13, size=(height, width)).astype(np.uint8) if with_class_map else None),
        boxes=rng.normal(size=(boxes, 7)).astype(np.float32),
        box_classes=rng.integers(0, 4, size=boxes).astype(np.int64),
        track_ids=np.arange(boxes, dtype=np.int64) - 1,
        camera_matrix=k, vehicle_to_camera=v2c,
        camera_timestamp_us=1_534_000_000_000_000 + seed, lidar_timestamp_us=1_534_000_000_000_000 - seed)


def assert_same_frame(actual: Frame, expected: Frame) -> None:
    assert actual.name == expected.name and actual.scene == expected.scene
    for key in ('points', 'image', 'boxes', 'box_classes', 'track_ids', 'camera_matrix', 'vehicle_to_camera'):
        a, e = getattr(actual, key), np.asarray(getattr(expected, key))
        assert a.dtype == e.dtype and a.shape == e.shape, key
        np.testing.assert_array_equal(a, e, err_msg=key)
    if expected.class_map is None:
        assert actual.class_map is None
    else:
        np.testing.assert_array_equal(actual.class_map, expected.class_map)
        assert actual.class_map.dtype == np.uint8
    assert actual.camera_timestamp_us == expected.camera_timestamp_us
    assert actual.lidar_timestamp_us == expected.lidar_timestamp_us


def test_round_trip_keeps_every_array_and_stamp(tmp_path):
    frames = [make_frame(1), make_frame(2, points=0, boxes=0, with_class_map=False, scene='scene_bb'),
              make_frame(3, points=9, boxes=3)]
    path = write_chunk(tmp_path / 'train_0000.npz', frames)
    reader = ChunkReader(path)
    assert len(reader) == 3
    for i, frame in enumerate(frames):
        assert_same_frame(reader.frame(i), frame)
    assert_same_frame(reader[-1], frames[-1])
    assert reader.frame_names == [f.name for f in frames]
    assert reader.scene_names == ['scene_a', 'scene_bb', 'scene_a']
    boxes, classes, track_ids = reader.boxes(2)
    np.testing.assert_array_equal(boxes, frames[2].boxes)
    assert reader.box_class_counts(4).sum() == 5
    np.testing.assert_array_equal(reader.class_pixel_counts[0, :13],
                                  np.bincount(frames[0].class_map.ravel(), minlength=13))
    assert reader.class_pixel_counts[1].sum() == 0   # no class map
    with pytest.raises(IndexError):
        reader.frame(3)


def test_file_holds_plain_arrays_with_documented_dtypes(tmp_path):
    path = write_chunk(tmp_path / 'c.npz', [make_frame(1), make_frame(2)])
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz['version']) == CHUNK_VERSION
        assert npz['frame_names'].dtype.kind == 'U' and npz['scene_names'].dtype.kind == 'U'
        assert npz['points'].dtype == np.float32 and npz['points'].shape == (10, 4)
        assert npz['point_offsets'].tolist() == [0, 5, 10]
        assert npz['box_offsets'].tolist() == [0, 2, 4]
        assert npz['image_png'].dtype == np.uint8 and npz['image_png'][1:4].tobytes() == b'PNG'
        assert npz['camera_matrix'].shape == (2, 3, 3) and npz['vehicle_to_camera'].shape == (2, 4, 4)
        assert npz['image_hw'].tolist() == [[24, 40], [24, 40]]
    assert [p.name for p in tmp_path.iterdir()] == ['c.npz']   # no temporary file left behind


def test_generator_input_and_empty_chunk(tmp_path):
    write_chunk(tmp_path / 'g.npz', (make_frame(i) for i in range(2)))
    assert ChunkReader(tmp_path / 'g.npz').frame_names == ['scene_a/000000000', 'scene_a/000000001']
    write_chunk(tmp_path / 'empty.npz', [])
    assert len(ChunkReader(tmp_path / 'empty.npz')) == 0


def test_truncated_chunk_raises_chunk_error_naming_the_file(tmp_path):
    path = write_chunk(tmp_path / 'train_0003.npz', [make_frame(1), make_frame(2)])
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ChunkError, match='train_0003.npz'):
        ChunkReader(path)
    path.write_bytes(b'')
    with pytest.raises(ChunkError, match='train_0003.npz'):
        ChunkReader(path)


def test_unknown_version_and_foreign_npz_are_rejected(tmp_path):
    arrays = frame_arrays([make_frame(1)])
    arrays['version'] = np.array(CHUNK_VERSION + 1, dtype=np.int64)
    np.savez(tmp_path / 'future.npz', **arrays)
    with pytest.raises(ChunkError, match=r'future\.npz.*version 3.*versions \[1, 2\]'):
        ChunkReader(tmp_path / 'future.npz')
    np.savez(tmp_path / 'other.npz', points=np.zeros((3, 4)))
    with pytest.raises(ChunkError, match=r'other\.npz.*missing keys'):
        ChunkReader(tmp_path / 'other.npz')


def test_inconsistent_offsets_are_rejected(tmp_path):
    arrays = frame_arrays([make_frame(1)])
    arrays['point_offsets'] = np.array([0, 4], dtype=np.int64)   # points has 5 rows
    np.savez(tmp_path / 'bad.npz', **arrays)
    with pytest.raises(ChunkError, match='point_offsets'):
        ChunkReader(tmp_path / 'bad.npz')


def test_compressed_chunk_is_still_readable(tmp_path):
    frames = [make_frame(1), make_frame(2)]
    np.savez_compressed(tmp_path / 'z.npz', **frame_arrays(frames))
    reader = ChunkReader(tmp_path / 'z.npz')
    assert_same_frame(reader.frame(1), frames[1])


def test_rewriting_replaces_the_file_atomically(tmp_path):
    path = write_chunk(tmp_path / 'c.npz', [make_frame(1)])
    inode = os.stat(path).st_ino
    write_chunk(path, [make_frame(2), make_frame(3)])
    assert os.stat(path).st_ino != inode
    assert len(ChunkReader(path)) == 2


def _extra_view(name: str, seed: int, labelled: bool = True) -> CameraView:
    rng = np.random.default_rng(seed)
    return CameraView(name=name, image=rng.integers(0, 256, size=(16, 30, 3), dtype=np.uint8),
                      class_map=rng.integers(0, 5, size=(16, 30)).astype(np.uint8) if labelled else None,
                      camera_matrix=np.diag([20.0, 21.0, 1.0]) + seed, vehicle_to_camera=np.eye(4) * seed,
                      timestamp_us=1_534_000_000_000_000 + 1000 * seed)


def test_frames_with_several_cameras_round_trip_view_by_view(tmp_path):
    surround = make_frame(1).with_views([make_frame(1).views[0], _extra_view('side_left', 7),
                                         _extra_view('rear_center', 8, labelled=False)])
    frames = [surround, make_frame(2), make_frame(3).with_views([_extra_view('front_left', 9)])]
    reader = ChunkReader(write_chunk(tmp_path / 'surround.npz', frames))
    assert [reader.camera_names(i) for i in range(3)] == [['front_center', 'side_left', 'rear_center'],
                                                        ['front_center'], ['front_left']]
    for index, frame in enumerate(frames):
        read = reader.frame(index)
        assert_same_frame(read, frame)
        assert read.camera_names == frame.camera_names
        for got, want in zip(read.views, frame.views):
            assert got.name == want.name and got.timestamp_us == want.timestamp_us
            np.testing.assert_array_equal(got.image, want.image)
            np.testing.assert_array_equal(got.camera_matrix, want.camera_matrix)
            np.testing.assert_array_equal(got.vehicle_to_camera, want.vehicle_to_camera)
            if want.class_map is None:
                assert got.class_map is None
            else:
                np.testing.assert_array_equal(got.class_map, want.class_map)
    np.testing.assert_array_equal(reader.image(0, view=1), frames[0].extra_views[0].image)
    with pytest.raises(IndexError, match='frame 1 has 1 views'):
        reader.image(1, view=1)
    # per frame the pixel counts add up the frame's views; per view they stay apart
    assert reader.class_pixel_counts.shape == (3, 256) and reader.view_class_pixel_counts.shape == (5, 256)
    assert reader.class_pixel_counts[0].sum() == 24 * 40 + 16 * 30
    assert reader.view_class_pixel_counts[2].sum() == 0


def test_version_1_chunks_read_as_one_front_center_view_per_frame(tmp_path):
    frames = [make_frame(1), make_frame(2, with_class_map=False)]
    arrays = frame_arrays(frames)
    for key in ('view_offsets', 'camera_names', 'view_timestamp_us'):
        del arrays[key]   # the version-1 layout: every per-view array is per frame
    arrays['version'] = np.array(1, dtype=np.int64)
    np.savez(tmp_path / 'old.npz', **arrays)
    reader = ChunkReader(tmp_path / 'old.npz')
    assert reader.version == 1 and len(reader) == 2
    for index, frame in enumerate(frames):
        assert_same_frame(reader.frame(index), frame)
        assert reader.camera_names(index) == ['front_center']
        assert reader.frame(index).views[0].timestamp_us == frame.camera_timestamp_us


def test_a_frame_without_views_is_rejected(tmp_path):
    arrays = frame_arrays([make_frame(1), make_frame(2)])
    arrays['view_offsets'] = np.array([0, 2, 2], dtype=np.int64)
    np.savez(tmp_path / 'noview.npz', **arrays)
    with pytest.raises(ChunkError, match='view_offsets'):
        ChunkReader(tmp_path / 'noview.npz')
