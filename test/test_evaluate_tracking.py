"""Tracking evaluation: hand-made scenes with known identities, through the function and the CLI."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.labels import LabelSet
from mtl_perception_ros.core.tracking import TrackerConfig
from training.data.chunks import write_chunk
from training.evaluation.evaluate_tracking import TruthFrame, evaluate_tracking, main
from training.data.label_mapping import DEFAULT_SEMANTIC_CLASSES
from training.data.toy_chunks import toy_frame, write_toy_chunks
from training.pictures.track_plots import draw_track_plot, track_color

NAMES = ('car', 'truck', 'pedestrian', 'cyclist')
CAR, PEDESTRIAN = 0, 2


def car_box(x, y):
    return [x, y, -0.7, 4.2, 1.8, 1.5, 0.0]


def one_car_scene(frames=5, scene='s'):
    """A car driving +x at 10 m/s (1 m per 0.1 s frame), GT id 7."""
    return [TruthFrame(k, scene, 100.0 + 0.1 * k, np.array([car_box(5.0 + k, 2.0)]), np.array([CAR]),
                       np.array([7])) for k in range(frames)]


def as_detections(frames, skip=()):
    return {f.index: (f.boxes, f.classes, np.ones(len(f.boxes))) for f in frames if f.index not in skip}


def test_perfect_detections_with_immediate_birth_score_perfectly():
    frames = one_car_scene()
    result = evaluate_tracking(frames, as_detections(frames), NAMES, TrackerConfig(birth_hits=1))
    overall = result.metrics['overall']
    assert (overall['mota'], overall['idf1'], overall['idsw'], overall['fn'], overall['fp']) == (1.0, 1.0, 0, 0, 0)
    assert result.num_frames == 5 and result.idsw_per_100_frames() == 0.0


def test_a_missed_detection_keeps_the_identity_while_a_track_that_dies_switches():
    frames = one_car_scene()
    detections = as_detections(frames, skip={2})
    coasting = evaluate_tracking(frames, detections, NAMES, TrackerConfig(birth_hits=1, death_misses=3))
    m = coasting.metrics['overall']
    assert (m['mota'], m['idsw'], m['fn'], m['fp'], m['frag']) == (1.0, 0, 0, 0, 0)   # coasted through frame 2
    # death at the first miss: frame 2 missed (FN), frame 3 is a new track: an ID switch and a fragmentation
    dying = evaluate_tracking(frames, detections, NAMES, TrackerConfig(birth_hits=1, death_misses=1))
    m = dying.metrics['overall']
    assert (m['fn'], m['idsw'], m['frag'], m['fp']) == (1, 1, 1, 0)
    assert m['mota'] == pytest.approx(1 - 2 / 5)
    assert dying.idsw_per_100_frames() == pytest.approx(20.0)
    assert sorted(dying.hyp_trajectories['s']) == [1, 2]
    np.testing.assert_array_equal(dying.hyp_trajectories['s'][1][0], [0, 1])
    np.testing.assert_array_equal(dying.hyp_trajectories['s'][2][0], [3, 4])


def test_scenes_are_separate_sequences_in_time_order():
    # the same GT id 7 in two scenes, frames of scene "b" listed out of time order
    a = one_car_scene(3, 'a')
    b = [dataclasses.replace(f, index=10 + f.index, scene='b') for f in one_car_scene(3, 'b')]
    frames = a + [b[2], b[0], b[1]]
    result = evaluate_tracking(frames, as_detections(frames), NAMES, TrackerConfig(birth_hits=1))
    m = result.metrics['overall']
    assert (m['num_gt'], m['idsw'], m['mota']) == (6, 0, 1.0)
    assert result.num_scenes == 2 and set(result.scene_metrics) == {'a', 'b'}
    np.testing.assert_array_equal(result.gt_trajectories['b'][7][1][:, 0], [5.0, 6.0, 7.0])


def test_tracks_outside_the_grid_are_not_scored():
    # the car drives out of the 0..64 m grid: x = 55.5 ... 63.5 in frames 0..8, then 64.5, 65.5
    # (no GT there); its track coasts on, out of the grid
    frames = [TruthFrame(k, 's', 0.1 * k, np.array([car_box(55.5 + k, 0.0)]), np.array([CAR]), np.array([1]))
              for k in range(9)]
    detections = as_detections(frames)
    frames += [TruthFrame(k, 's', 0.1 * k, np.zeros((0, 7)), np.zeros(0, np.int64), np.zeros(0, np.int64))
               for k in (9, 10)]
    config = TrackerConfig(birth_hits=1, death_misses=3)
    unbounded = evaluate_tracking(frames, detections, NAMES, config)
    bounded = evaluate_tracking(frames, detections, NAMES, config, grid=BevGrid())
    assert unbounded.metrics['overall']['fp'] == 2       # coasting at x ~ 64.5 and 65.5
    assert bounded.metrics['overall']['fp'] == 0


def test_track_plot_draws_tracks_in_their_colours_and_gt_dashed():
    grid = BevGrid()
    frames = np.arange(5)
    xy = np.column_stack([10.0 + 2 * frames, np.zeros(5)])
    image = draw_track_plot({7: (frames, xy)}, {3: (frames, xy + [0, 4.0])}, grid, pixels_per_m=4.0, title='t')
    assert image.shape == (22 + 256, 256, 3) and image.dtype == np.uint8
    body = image[22:]
    # the track at y = 4 m is the column u = (32 - 4) * 4 = 112; GT at u = 128; x = 14 m is row (64 - 14) * 4
    assert tuple(body[200, 112]) == track_color(3)
    gt_column = body[186:214, 128]                      # x = 18 m .. 10.5 m
    gt_pixels = np.all(np.abs(gt_column.astype(int) - 170) < 40, axis=1)
    assert 0.2 < gt_pixels.mean() < 0.8                  # dashed: partly drawn, partly not


@pytest.fixture(scope='module')
def tracked_chunks(tmp_path_factory):
    """A chunk folder (no manifest: default label sets) whose val split has two scenes with track ids.

    Scene 'a', 5 frames: car id 1 at (5 + k, -3) and pedestrian id 2 at (10, 4 - 0.1 k); plus a
    box without id and one beyond the grid in every frame. Scene 'b', 3 frames: car id 1 at (8 - k, 5).
    """
    out = tmp_path_factory.mktemp('chunks')
    semantic = LabelSet.from_yaml(DEFAULT_SEMANTIC_CLASSES)
    rng = np.random.default_rng(0)
    frames = []
    for scene, count in (('a', 5), ('b', 3)):
        for k in range(count):
            base = toy_frame(rng, f'{scene}/{k:09d}', scene, semantic, image_hw=(32, 48), ground_points=300)
            if scene == 'a':
                boxes = [car_box(5.0 + k, -3.0), [10.0, 4.0 - 0.1 * k, -0.6, 0.8, 0.7, 1.8, 0.0],
                         car_box(20.0, 10.0), car_box(70.0, 0.0)]
                classes, ids = [CAR, PEDESTRIAN, CAR, CAR], [1, 2, -1, 3]
            else:
                boxes, classes, ids = [car_box(8.0 - k, 5.0)], [CAR], [1]
            frames.append(dataclasses.replace(base, boxes=np.array(boxes, np.float32),
                                              box_classes=np.array(classes, np.int64),
                                              track_ids=np.array(ids, np.int64),
                                              lidar_timestamp_us=1_000_000 * (5 if scene == 'a' else 50) + 100_000 * k))
    write_chunk(out / 'val_0000.npz', frames)
    return out


def test_cli_with_ground_truth_detections_prints_writes_json_and_pictures(tracked_chunks, tmp_path, capsys):
    json_path, plots = tmp_path / 'tracking.json', tmp_path / 'plots'
    assert main(['--gt-detections', '--chunks', str(tracked_chunks), '--json', str(json_path),
                 '--plots', str(plots), '--no-progress']) == 0
    printed = capsys.readouterr().out
    assert 'MOTA' in printed and 'IDF1' in printed and 'IDSW/100f' in printed
    assert '5 in-grid boxes without a track id left out' in printed
    values = json.loads(json_path.read_text())
    overall = values['metrics']['overall']
    # 13 GT boxes (scene a: 2 x 5, scene b: 1 x 3); birth after 2 hits: each of the 3 objects is
    # missed in its first frame -> MOTA 1 - 3/13; IDTP 10 of 10 hypotheses -> IDF1 = 20 / 23.
    assert (overall['num_gt'], overall['fn'], overall['fp'], overall['idsw']) == (13, 3, 0, 0)
    assert overall['mota'] == pytest.approx(1 - 3 / 13)
    assert overall['idf1'] == pytest.approx(20 / 23)
    assert values['num_frames'] == 8 and values['num_scenes'] == 2
    assert values['metrics']['pedestrian']['num_gt'] == 5
    assert sorted(p.name for p in plots.iterdir()) == ['a.png', 'b.png']
    assert cv2.imread(str(plots / 'a.png')).shape == (22 + 512, 512, 3)


def test_cli_confirm_score_confirms_confident_tracks_in_their_first_frame(tracked_chunks, tmp_path, capsys):
    json_path = tmp_path / 'tracking.json'
    assert main(['--gt-detections', '--chunks', str(tracked_chunks), '--json', str(json_path), '--confirm-score',
                 '0.5', '--no-progress']) == 0
    assert 'birth after 2 hits (at once from score 0.5)' in capsys.readouterr().out
    overall = json.loads(json_path.read_text())['metrics']['overall']
    assert (overall['num_gt'], overall['fn'], overall['fp'], overall['idsw']) == (13, 0, 0, 0)   # GT scores 1
    assert main(['--gt-detections', '--chunks', str(tracked_chunks), '--confirm-score', '-1', '--no-progress']) == 2
    assert 'confirm_score must be finite and >= 0' in capsys.readouterr().err


def test_cli_with_a_checkpoint_runs_the_model_over_the_scenes(tracked_chunks, tmp_path, capsys):
    from sensor_samples import make_small_checkpoint
    checkpoint = make_small_checkpoint(tmp_path / 'small.pt')      # grid x 0..32 m, y -16..16 m
    json_path = tmp_path / 'tracking.json'
    assert main(['--checkpoint', str(checkpoint), '--chunks', str(tracked_chunks), '--json', str(json_path),
                 '--num-workers', '0', '--batch-size', '2', '--device', 'cpu', '--no-progress']) == 0
    values = json.loads(json_path.read_text())
    assert values['num_frames'] == 8 and 'detection_map' in values
    # in that grid: scene a car + pedestrian (5 frames each), scene b car (3 frames)
    assert values['metrics']['overall']['num_gt'] == 13
    assert 'detection mAP' in capsys.readouterr().out


def test_cli_refuses_chunks_without_track_ids_and_a_missing_checkpoint(tmp_path, capsys):
    write_toy_chunks(tmp_path / 'toy', scenes=2, frames=2, image_hw=(32, 48))
    assert main(['--gt-detections', '--chunks', str(tmp_path / 'toy')]) == 2
    assert 'no box has a track id' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--chunks', str(tmp_path / 'toy')])
    assert main(['--checkpoint', str(tmp_path / 'none.pt'), '--chunks', str(tmp_path / 'toy')]) == 2
