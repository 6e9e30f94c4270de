"""A2D2 -> chunks converter: split by scene, resume, manifest."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from training.data.chunks import ChunkReader
from training.data.convert import convert, main, split_scenes
from training.data.manifest import load_manifest
from test_a2d2_reader import CAR_ID, make_root, write_frame

SIZE_HW = (1208 // 8, 1920 // 8)
SCENES = ('20180807_145028', '20180810_142822', '20180925_101535', '20181108_084007')


@pytest.fixture(scope='module')
def a2d2_root(tmp_path_factory):
    """4 scenes of 2 frames (one frame without LiDAR), images 1/8 of the real size for speed."""
    root = make_root(tmp_path_factory.mktemp('a2d2') / 'camera_lidar_semantic_bboxes', shrink=8)
    for scene in SCENES:
        write_frame(root, scene, 1, size_hw=SIZE_HW)
        write_frame(root, scene, 2, lidar=(scene != SCENES[1]), size_hw=SIZE_HW)
    return root


def test_split_scenes_is_by_scene_and_deterministic():
    counts = {'a': 10, 'b': 10, 'c': 10, 'd': 10, 'e': 10}
    train, val, test = split_scenes(counts, val_fraction=0.2, seed=3)
    assert len(val) == 1 and test == [] and sorted(train + val) == sorted(counts) and not set(train) & set(val)
    assert split_scenes(counts, 0.2, seed=3) == (train, val, test)
    assert len(split_scenes(counts, 0.5, seed=0)[1]) == 3          # 10, 20, then 30 >= 25 frames
    assert split_scenes(counts, 0.0) == (sorted(counts), [], [])
    assert split_scenes({'only': 5}, 0.5, test_fraction=0.5) == (['only'], [], [])   # training keeps one scene
    assert split_scenes(counts, val_scenes=['d', 'b']) == (['a', 'c', 'e'], ['b', 'd'], [])
    with pytest.raises(ValueError, match='nope'):
        split_scenes(counts, val_scenes=['nope'])
    with pytest.raises(ValueError, match='nope'):
        split_scenes(counts, test_scenes=['nope'])


def test_split_scenes_test_split_continues_the_validation_shuffle():
    counts = {name: 10 for name in 'abcdefghij'}
    train, val, test = split_scenes(counts, val_fraction=0.2, seed=7, test_fraction=0.3)
    assert (len(train), len(val), len(test)) == (5, 2, 3)
    assert sorted(train + val + test) == sorted(counts) and not (set(train) | set(val)) & set(test)
    # validation is the same with or without a test split: adding one never moves a val scene
    assert split_scenes(counts, val_fraction=0.2, seed=7)[1] == val
    # named scenes win, the fraction fills the other split from what is left
    train, val, test = split_scenes(counts, val_fraction=0.2, seed=7, test_scenes=['a', 'b'])
    assert test == ['a', 'b'] and len(val) == 2 and not set(val) & {'a', 'b'}
    train, val, test = split_scenes(counts, val_scenes=['c'], seed=7, test_fraction=0.45)
    assert val == ['c'] and len(test) == 5 and 'c' not in test and len(train) == 4
    # too few scenes: training keeps one, test gets what is left after validation
    assert split_scenes({'x': 5, 'y': 5}, 0.4, seed=0, test_fraction=0.4)[2] == []
    with pytest.raises(ValueError, match='both validation and test'):
        split_scenes(counts, val_scenes=['a'], test_scenes=['a', 'b'])
    with pytest.raises(ValueError, match='--test-fraction'):
        split_scenes(counts, test_fraction=1.0)


def test_convert_writes_chunks_split_by_scene_with_a_manifest(a2d2_root, tmp_path):
    out = tmp_path / 'chunks'
    manifest = convert(a2d2_root, out, frames_per_chunk=3, val_scenes=[SCENES[2]], test_fraction=0.0,
                       progress=False)
    assert manifest == load_manifest(out) and manifest['complete']
    # 7 usable frames: train = scenes 0, 1 (1 frame: no LiDAR), 3 -> 5 frames; val = scene 2.
    files = sorted(p.name for p in out.iterdir())
    assert files == ['manifest.json', 'train_0000.npz', 'train_0001.npz', 'val_0000.npz']
    train_scenes, val_scenes = set(), set()
    for entry in manifest['chunks']:
        chunk = ChunkReader(out / entry['file'])
        assert len(chunk) == entry['frames']
        (train_scenes if entry['split'] == 'train' else val_scenes).update(chunk.scene_names)
    assert train_scenes == {SCENES[0], SCENES[1], SCENES[3]} and val_scenes == {SCENES[2]}
    assert [e['frames'] for e in manifest['chunks']] == [3, 2, 2]
    assert manifest['chunks'][0]['scenes'] == [SCENES[0], SCENES[1]]
    assert manifest['splits']['train']['frames'] == 5 and manifest['splits']['val']['frames'] == 2
    assert manifest['splits']['test'] == {**manifest['splits']['test'], 'frames': 0, 'chunks': 0, 'scenes': []}
    assert manifest['scenes'][SCENES[1]] == {'split': 'train', 'frames': 1}
    # distinct objects: the car (track ID 7) of each of the 3 train scenes, one object per scene
    # however many frames; the pedestrian has no track ID (as in real A2D2): a box, not an object
    assert manifest['splits']['train']['object_counts'] == [3, 0, 0, 0]
    assert manifest['splits']['train']['untracked_boxes'] == 5
    # Class statistics of the train split: equal to the class maps in its chunks.
    counts = np.zeros(13, dtype=np.int64)
    for name in ('train_0000.npz', 'train_0001.npz'):
        chunk = ChunkReader(out / name)
        for i in range(len(chunk)):
            counts += np.bincount(chunk.class_map(i).ravel(), minlength=256)[:13]
    assert manifest['splits']['train']['class_pixel_counts'] == counts.tolist()
    assert counts[CAR_ID] > 0 and manifest['splits']['train']['ignored_pixels'] > 0
    assert manifest['splits']['train']['box_class_counts'] == [5, 0, 5, 0]   # a car, a pedestrian each
    assert manifest['semantic_classes']['names'][CAR_ID] == 'car'
    assert 'VanSUV' in manifest['box_classes']['a2d2'][0]
    assert manifest['report']['skipped'] == {'missing_lidar': 1}
    assert manifest['report']['frames_read'] == 7


def test_convert_resumes_and_rewrites_missing_or_damaged_chunks(a2d2_root, tmp_path):
    out = tmp_path / 'chunks'
    first = convert(a2d2_root, out, frames_per_chunk=2, val_fraction=0.25, seed=1, test_fraction=0.0,
                    progress=False)
    names = [e['file'] for e in first['chunks']]
    inodes = {name: os.stat(out / name).st_ino for name in names}
    second = convert(a2d2_root, out, frames_per_chunk=2, val_fraction=0.25, seed=1, test_fraction=0.0,
                     progress=False)
    assert {name: os.stat(out / name).st_ino for name in names} == inodes   # nothing rewritten
    assert second['chunks'] == first['chunks']
    (out / names[0]).unlink()
    damaged = out / names[-1]
    damaged.write_bytes(damaged.read_bytes()[:100])
    third = convert(a2d2_root, out, frames_per_chunk=2, val_fraction=0.25, seed=1, test_fraction=0.0,
                    progress=False)
    assert third['chunks'] == first['chunks']
    assert len(ChunkReader(out / names[0])) == first['chunks'][0]['frames']
    assert len(ChunkReader(damaged)) == first['chunks'][-1]['frames']
    for name in names[1:-1]:
        assert os.stat(out / name).st_ino == inodes[name]
    # Other chunk sizes: every chunk is rewritten and the old ones that no longer exist go away.
    fourth = convert(a2d2_root, out, frames_per_chunk=10, val_fraction=0.25, seed=1, test_fraction=0.0,
                     progress=False)
    assert sorted(p.name for p in out.glob('*.npz')) == sorted(e['file'] for e in fourth['chunks'])
    assert [e['frames'] for e in fourth['chunks']] == [5, 2]
    # a test split taken out of training: its scenes' chunks appear, train's are rewritten
    fifth = convert(a2d2_root, out, frames_per_chunk=10, val_fraction=0.25, seed=1, test_fraction=0.25,
                    progress=False)
    assert sorted(p.name for p in out.glob('*.npz')) == ['test_0000.npz', 'train_0000.npz', 'val_0000.npz']
    assert fifth['splits']['val']['scenes'] == fourth['splits']['val']['scenes']
    assert sum(fifth['splits'][split]['frames'] for split in ('train', 'val', 'test')) == 7


def test_parallel_workers_write_the_same_chunks(a2d2_root, tmp_path):
    serial = convert(a2d2_root, tmp_path / 'serial', frames_per_chunk=2, progress=False)
    parallel = convert(a2d2_root, tmp_path / 'parallel', frames_per_chunk=2, workers=2, progress=False)
    assert parallel['chunks'] == serial['chunks'] and parallel['report'] == serial['report']
    for entry in serial['chunks']:
        a, b = ChunkReader(tmp_path / 'serial' / entry['file']), ChunkReader(tmp_path / 'parallel' / entry['file'])
        assert a.frame_names == b.frame_names
        np.testing.assert_array_equal(a.array('points'), b.array('points'))


def test_command_line(a2d2_root, tmp_path, capsys):
    out = tmp_path / 'cli'
    assert main(['--root', str(a2d2_root), '--out', str(out), '--frames-per-chunk', '4',
                 '--val-fraction', '0.3', '--seed', '5', '--no-progress']) == 0
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['settings']['frames_per_chunk'] == 4 and manifest['settings']['seed'] == 5
    assert manifest['settings']['test_fraction'] == 0.2     # a test split by default
    train, val, test = (set(manifest['splits'][split]['scenes']) for split in ('train', 'val', 'test'))
    assert train and val and test and not train & val and not (train | val) & test
    assert train | val | test == set(SCENES)
    printed = capsys.readouterr().out
    assert 'missing_lidar' in printed and 'test: ' in printed and 'boxes without a track ID' in printed
    assert main(['--root', str(a2d2_root), '--out', str(out), '--test-scenes', SCENES[0], '--no-progress']) == 0
    assert json.loads((out / 'manifest.json').read_text())['splits']['test']['scenes'] == [SCENES[0]]
    assert main(['--root', str(tmp_path / 'nowhere'), '--out', str(out)]) == 2
    capsys.readouterr()
    assert main(['--root', str(a2d2_root), '--out', str(out), '--val-scenes', SCENES[0],
                 '--test-scenes', SCENES[0]]) == 2
    assert 'both validation and test' in capsys.readouterr().err
