"""Checkpoint files: round trip, atomic writes, and refusal of unsafe or unknown files."""
from __future__ import annotations

import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.checkpoint import (FORMAT_VERSION, CheckpointError, load_checkpoint, read_checkpoint,
                                                save_checkpoint)
from mtl_perception_ros.core.labels import LabelSet
from mtl_perception_ros.core.model import ModelConfig, MultiTaskNet

REPO = Path(__file__).resolve().parents[1]
GRID = BevGrid(x_min_m=0.0, x_max_m=16.0, y_min_m=-8.0, y_max_m=8.0, cell_m=0.5, output_stride=4)
CONFIG = ModelConfig(bev_grid=GRID, image_hw=(32, 64), camera_channels=(8, 8, 16, 16),
                     camera_feature_channels=8, pillar_channels=8, bev_channels=(8, 16, 16),
                     bev_blocks=(1, 1, 1), neck_channels=16,
                     head_channels=8)


@pytest.fixture(scope='module')
def labels():
    return (LabelSet.from_yaml(REPO / 'config/a2d2/semantic_classes.yaml'),
            LabelSet.from_yaml(REPO / 'config/a2d2/box_classes.yaml'))


def tiny_batch() -> dict:
    rng = np.random.default_rng(1)
    points = np.stack([rng.uniform(0, 16, 200), rng.uniform(-8, 8, 200), rng.uniform(-1, 1, 200),
                       rng.uniform(0, 1, 200)], 1)
    return {'points': torch.tensor(points, dtype=torch.float32),
            'points_batch': torch.zeros(200, dtype=torch.int64),
            'image': torch.tensor(rng.integers(0, 256, (1, 3, 32, 64)), dtype=torch.uint8),
            'camera_matrix': torch.tensor([[[50.0, 0, 31.5], [0, 50.0, 15.5], [0, 0, 1]]]),
            'vehicle_to_camera': torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]])}


def trained_model() -> MultiTaskNet:
    """A model whose weights and BatchNorm statistics differ from a fresh one."""
    torch.manual_seed(0)
    model = MultiTaskNet(CONFIG).train()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
        model(**tiny_batch())   # updates running statistics
    return model.eval()


def test_round_trip_rebuilds_an_identical_network(tmp_path, labels):
    semantic, detection = labels
    model = trained_model()
    path = save_checkpoint(tmp_path / 'best.pt', model, semantic, detection,
                           extra={'epoch': 7, 'metrics': {'mAP': np.float32(0.25), 'mIoU': 0.5},
                                  'class_weights': np.array([1.0, 2.0])})
    loaded, info = load_checkpoint(path)
    assert not loaded.training
    assert info.format_version == FORMAT_VERSION
    assert info.model_config == CONFIG and info.bev_grid == GRID
    assert info.image_hw == (32, 64) and info.image_mean == CONFIG.image_mean
    assert info.semantic_labels == semantic and info.detection_labels == detection
    assert info.extra['epoch'] == 7 and info.extra['metrics']['mAP'] == pytest.approx(0.25)
    assert torch.equal(info.extra['class_weights'], torch.tensor([1.0, 2.0], dtype=torch.float64))
    with torch.inference_mode():
        expected, actual = model(**tiny_batch()), loaded(**tiny_batch())
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert fresh_differs(expected)


def fresh_differs(expected) -> bool:
    """The round trip test would fail for a model built from the config alone."""
    with torch.inference_mode():
        fresh = MultiTaskNet(CONFIG).eval()(**tiny_batch())
    return not torch.equal(fresh['bbox_heatmap'], expected['bbox_heatmap'])


def test_save_is_atomic_and_overwrites(tmp_path, labels):
    model = trained_model()
    path = tmp_path / 'sub' / 'last.pt'
    save_checkpoint(path, model, *labels, extra={'epoch': 1})
    save_checkpoint(path, model, *labels, extra={'epoch': 2})
    assert sorted(p.name for p in path.parent.iterdir()) == ['last.pt']   # no temp files left
    assert read_checkpoint(path)[1].extra['epoch'] == 2


def test_the_file_holds_only_plain_types(tmp_path, labels):
    path = save_checkpoint(tmp_path / 'm.pt', trained_model(), *labels)
    payload = torch.load(path, weights_only=True)
    assert payload['format_version'] == FORMAT_VERSION
    assert payload['bev_grid'] == GRID.to_dict()
    assert payload['model_config']['image_hw'] == [32, 64]
    assert payload['detection_labels']['names'] == ['car', 'truck', 'pedestrian', 'cyclist']


def test_save_refuses_mismatched_labels_and_objects_in_extra(tmp_path, labels):
    semantic, detection = labels
    with pytest.raises(ValueError, match='detection label set'):
        save_checkpoint(tmp_path / 'a.pt', trained_model(), semantic, semantic)
    with pytest.raises(ValueError, match=r'extra\.optimizer is a object'):
        save_checkpoint(tmp_path / 'a.pt', trained_model(), semantic, detection,
                        extra={'optimizer': object()})
    assert not (tmp_path / 'a.pt').exists()


class _RunsCodeWhenUnpickled:
    """Unpickling this would create `marker` — a stand-in for arbitrary code in a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_file_with_pickled_objects_is_refused_without_running_them(tmp_path, labels):
    path = save_checkpoint(tmp_path / 'm.pt', trained_model(), *labels)
    payload = torch.load(path, weights_only=True)
    marker = tmp_path / 'code_ran'
    payload['extra'] = {'note': _RunsCodeWhenUnpickled(marker)}
    evil = tmp_path / 'evil.pt'
    torch.save(payload, evil)
    with pytest.raises(CheckpointError, match='evil.pt: not a loadable checkpoint'):
        load_checkpoint(evil)
    assert not marker.exists()


def test_future_and_foreign_files_are_refused(tmp_path, labels):
    path = save_checkpoint(tmp_path / 'm.pt', trained_model(), *labels)
    payload = torch.load(path, weights_only=True)

    torch.save(dict(payload, format_version=FORMAT_VERSION + 1), tmp_path / 'future.pt')
    with pytest.raises(CheckpointError, match=r'future\.pt: format_version 2 is newer'):
        load_checkpoint(tmp_path / 'future.pt')

    torch.save(dict(payload, format_version='1'), tmp_path / 'odd.pt')
    with pytest.raises(CheckpointError, match='positive integer'):
        load_checkpoint(tmp_path / 'odd.pt')

    torch.save(payload['state_dict'], tmp_path / 'bare_weights.pt')
    with pytest.raises(CheckpointError, match='bare_weights.pt: not an mtl_perception_ros checkpoint'):
        load_checkpoint(tmp_path / 'bare_weights.pt')

    (tmp_path / 'notes.txt').write_text('not a checkpoint')
    with pytest.raises(CheckpointError, match='notes.txt: not a loadable checkpoint'):
        load_checkpoint(tmp_path / 'notes.txt')

    with pytest.raises(CheckpointError, match='missing.pt: no such checkpoint file'):
        load_checkpoint(tmp_path / 'missing.pt')

    broken = dict(payload)
    del broken['detection_labels']
    torch.save(broken, tmp_path / 'broken.pt')
    with pytest.raises(CheckpointError,
                       match="broken.pt: bad checkpoint contents: missing field 'detection_labels'"):
        load_checkpoint(tmp_path / 'broken.pt')


def test_weights_that_do_not_match_the_config_are_refused(tmp_path, labels):
    path = save_checkpoint(tmp_path / 'm.pt', trained_model(), *labels)
    payload = torch.load(path, weights_only=True)
    payload['model_config']['pillar_channels'] = 16
    torch.save(payload, tmp_path / 'wider.pt')
    with pytest.raises(CheckpointError, match=r'wider\.pt: weights do not match .*shape mismatch'):
        load_checkpoint(tmp_path / 'wider.pt')
    assert issubclass(CheckpointError, ValueError) and issubclass(CheckpointError, RuntimeError)
