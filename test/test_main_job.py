"""The README's main job (`make run`), in its reduced size (--ci), as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from mtl_perception_ros.core.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_main_job_reduced_size_produces_every_output(tmp_path):
    venv = Path(sys.executable).parent.parent
    env = dict(os.environ, MTL_OUTPUT=str(tmp_path))
    result = subprocess.run(['bash', str(REPO / 'scripts/main_job.sh'), str(venv), '--ci'], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert '[run] done' in result.stdout

    manifest = json.loads((tmp_path / 'chunks/manifest.json').read_text())
    assert manifest['complete']
    # one scene per split; the figures are on the test split, which nothing chose on
    scenes = {split: manifest['splits'][split]['scenes'] for split in ('train', 'val', 'test')}
    assert all(len(names) == 1 for names in scenes.values()) and len(set(sum(scenes.values(), []))) == 3
    run_dir = tmp_path / 'runs/tiny_ci'
    model, info = load_checkpoint(run_dir / 'model_best.pt')
    assert info.detection_labels.names == ('car', 'truck', 'pedestrian', 'cyclist')
    history = json.loads((run_dir / 'metrics_history.json').read_text())
    assert len(history) == 2
    evaluation = json.loads((tmp_path / 'evaluation.json').read_text())
    assert evaluation['split'] == 'test' and evaluation['num_frames'] == 3
    assert 'map' in json.dumps(evaluation).lower() and 'miou' in json.dumps(evaluation).lower()
    tracking = json.loads((tmp_path / 'tracking.json').read_text())
    assert 'overall' in json.dumps(tracking)
    assert list((tmp_path / 'tracks').glob('*.png'))
    picture = cv2.imread(str(tmp_path / 'sample_frame.png'))
    assert picture is not None and picture.shape[0] > 100

    # the test bag replayed through the real node over DDS, its recorded outputs scored
    report = tmp_path / 'report'
    assert f'report: {report}/report.md' in result.stdout
    metrics = json.loads((report / 'metrics.json').read_text())
    counts = metrics['counts']
    logs = ''.join(f'--- {log.name}:\n' + log.read_text()[-3000:] for log in sorted((tmp_path / 'logs').glob('*.log')))
    assert counts['gt_frames'] == counts['recorded.detections'] == counts['class_maps_scored'] > 0, (counts, logs)
    assert counts['gt_frames_without_prediction'] == 0 and int(counts['node.processed']) == counts['gt_frames']
    assert metrics['source'].startswith('recorded') and metrics['latency_ms']
    assert metrics['tracking'] is not None and 'overall' in metrics['tracking']['metrics']
    text = (report / 'report.md').read_text()
    assert '**mAP' in text and '**mIoU' in text and 'end_to_end' in text and 'Tracking' in text
    for name in ('confusion_matrix.png', 'latency.png', 'pr_car.png', 'sample_0.png', 'tracks.png'):
        assert cv2.imread(str(report / name)) is not None, name

    # a second run finds everything done and is quick
    again = subprocess.run(['bash', str(REPO / 'scripts/main_job.sh'), str(venv), '--ci'], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-4000:]
    assert 'already there' in again.stdout and 'resumed' in again.stdout + again.stderr

    # a run and a bag made from other chunks (or another config) are made again, not reused
    (run_dir / '.job_inputs').write_text('manifest=0000 config=0000\n')
    (tmp_path / 'bags/.job_inputs').write_text('manifest=0000\n')
    third = subprocess.run(['bash', str(REPO / 'scripts/main_job.sh'), str(venv), '--ci'], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stdout[-4000:]
    assert 'made from other chunks or another config: training again' in third.stdout
    assert 'resumed' not in third.stdout + third.stderr
    assert (run_dir / '.job_inputs').read_text() != 'manifest=0000 config=0000\n'
    assert (tmp_path / 'bags/.job_inputs').read_text().startswith('manifest=') and \
        (tmp_path / 'bags/.job_inputs').read_text() != 'manifest=0000\n'
