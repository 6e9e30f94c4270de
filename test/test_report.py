"""training.evaluation.report: the pictures and report.md / metrics.json of a bag evaluation, on hand-made numbers."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.labels import LabelSet
from training.evaluation.evaluate_bag import BagPredictions, FramePrediction, GroundTruth, score
from training.evaluation.report import SampleFrame, confusion_picture, latency_picture, pr_curve_picture, write_report

REPO = Path(__file__).resolve().parent.parent


def viridis(value: int) -> np.ndarray:
    bgr = cv2.applyColorMap(np.array([[value]], np.uint8), cv2.COLORMAP_VIRIDIS)[0, 0]
    return bgr[::-1]


def test_confusion_picture_is_row_normalised_with_grey_rows_without_labels():
    names = ['road', 'car', 'sky']
    confusion = np.array([[30, 0, 0], [1, 3, 0], [0, 0, 0]])      # road all right, car 75 %, no sky labels
    picture = confusion_picture(confusion, names, cell_px=40)
    label_w = 10 + 8 * len('road')
    top = 22 + label_w                    # title band, then the column names
    def cell(r, c):                       # a pixel in the cell's corner, away from the printed number
        return picture[top + r * 40 + 2, label_w + c * 40 + 2]
    np.testing.assert_array_equal(cell(0, 0), viridis(255))
    np.testing.assert_array_equal(cell(0, 1), viridis(0))
    np.testing.assert_array_equal(cell(1, 1), viridis(191))       # 0.75 * 255 rounded
    np.testing.assert_array_equal(cell(1, 0), viridis(64))        # 0.25 * 255 rounded
    np.testing.assert_array_equal(cell(2, 2), [200, 200, 200])


def hand_made_evaluation():
    detection = LabelSet.from_yaml(REPO / 'config/a2d2/box_classes.yaml')
    semantic = LabelSet.from_yaml(REPO / 'config/a2d2/semantic_classes.yaml')
    car = np.array([[10.0, 0.0, 0.0, 4.0, 1.8, 1.5, 0.0]])
    truth = GroundTruth({100: (car, np.array([0])), 200: (car + [5, 0, 0, 0, 0, 0, 0], np.array([0]))},
                        {(None, 150): np.zeros((48, 64), np.uint8)})
    predictions = BagPredictions('hand-made', frames=[FramePrediction(
        100, 150, car, np.array([0]), np.array([0.9]), np.zeros((48, 64), np.uint8),
        class_maps={(None, 150): np.zeros((48, 64), np.uint8)})],
        latency_samples={'total': [10.0, 12.0, 30.0]}, latency_summary={'total': (12.0, 28.2)})
    return score(predictions, truth, detection, semantic), detection, semantic, car


def test_report_has_tables_pictures_and_json(tmp_path):
    evaluation, detection, semantic, car = hand_made_evaluation()
    image = np.full((48, 64, 3), 90, np.uint8)
    sample = SampleFrame(100, image, np.array([[10.0, 0.0, -1.0, 0.5]]), np.zeros((48, 64), np.uint8),
                         np.zeros((48, 64), np.uint8), car, np.array([0]), car, np.array([0]), np.array([0.9]))
    plot = tmp_path / 'scene.png'
    cv2.imwrite(str(plot), np.zeros((10, 10, 3), np.uint8))
    tracking = {'num_frames': 32, 'num_scenes': 2,
                'metrics': {'overall': {'mota': 0.5, 'idf1': 0.6, 'idsw': 2, 'idsw_per_100_frames': 6.25, 'num_gt': 10}}}
    report = write_report(tmp_path / 'report', evaluation, detection, semantic, BevGrid(), [sample],
                          tracking=tracking, track_plots=[plot])
    text = report.read_text()
    assert '| car | 0.4444 | 0.4444 | 0.4444 | 0.4444 | 0.4444 | 2 | 1 |' in text      # AP = 40/90 (nuScenes)
    assert '**mAP 0.4444**' in text and '**mIoU 1.0000**' in text
    assert '| total | 12.0 | 28.2 |' in text
    assert '| overall | 0.5000 | 0.6000 | 2 | 6.2500 | 10 |' in text
    assert '| gt_frames_without_prediction | 1 |' in text
    folder = report.parent
    for name in ('pr_car.png', 'pr_truck.png', 'confusion_matrix.png', 'latency.png', 'sample_0.png', 'tracks.png'):
        assert (folder / name).is_file(), name
    assert (folder / 'tracks.png').read_bytes() == plot.read_bytes()
    metrics = json.loads((folder / 'metrics.json').read_text())
    assert abs(metrics['detection']['map'] - 40 / 90) < 1e-12
    assert metrics['detection']['classes']['truck']['ap_mean'] is None       # no GT: NaN -> null
    assert metrics['latency_ms']['total'] == {'p50': 12.0, 'p95': 28.2}
    assert not list(folder.glob('.*.tmp'))                                  # atomic writes left nothing behind


def test_pr_and_latency_pictures_are_drawn():
    evaluation, *_ = hand_made_evaluation()
    pr = pr_curve_picture(evaluation.detection, 0)
    assert pr.ndim == 3 and pr.dtype == np.uint8 and (pr != 255).any()
    only_summary = latency_picture({}, {'total': (12.0, 28.2), 'model': (8.0, 20.0)})
    histograms = latency_picture({'total': [10.0, 12.0, 30.0]}, {})
    assert only_summary.shape[2] == histograms.shape[2] == 3
