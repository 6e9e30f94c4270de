"""The evaluation report of a bag: report.md for a person, metrics.json for programs, PNG pictures.

    write_report(out_dir, evaluation, detection_labels, semantic_labels, grid, samples, tracking=None,
                 track_plots=())

`evaluation` is a training.evaluation.evaluate_bag.BagEvaluation. Files in out_dir (each written atomically):
- report.md: the detection table (AP per class at each centre-distance threshold, mAP), the
  segmentation table (IoU per class, mIoU, pixel accuracy), sync / drop / skip counts, the
  latency table (p50 / p95 per stage), tracking (MOTA, IDF1, ID switches per 100 frames) when
  given, and links to the pictures.
- metrics.json: the same numbers (DetectionMetrics.to_dict, segmentation, counts, latency, tracking).
- pr_<class>.png: precision-recall curves of a class, one per threshold (raw, before interpolation).
- confusion_matrix.png: row-normalised (rows = ground truth), a colour per cell, class names.
- latency.png: per-stage latency histograms (or p50 / p95 bars when only those are known).
- sample_<k>.png: camera with the predicted class map | with the GT class map | BEV with GT (thick)
  and predicted (thin, white-edged) boxes (training/pictures/draw.py).
- tracks.png: the first track plot given (training.evaluation.evaluate_tracking --plots).
Pictures are drawn with OpenCV (RGB arrays, training.pictures.draw.write_png).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from mtl_perception_ros.core.atomic_file import atomic_write_bytes, atomic_write_json, atomic_write_text, json_ready
from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.labels import LabelSet
from mtl_perception_ros.core.latency import latency_percentiles
from training.evaluation.formatting import format_number
from training.pictures.draw import add_title, draw_bev, semantic_overlay, side_by_side, write_png

FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK, WHITE, GRAY = (0, 0, 0), (255, 255, 255), (200, 200, 200)
THRESHOLD_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


@dataclass
class SampleFrame:
    """What one sample picture shows. image (H, W, 3) uint8 RGB or None; points (N, >=2); class
    maps (H, W) uint8 or None; boxes (M, 7) vehicle frame with classes (M,) (and pred_scores)."""

    stamp_ns: int
    image: np.ndarray | None
    points: np.ndarray | None
    gt_class_map: np.ndarray | None
    pred_class_map: np.ndarray | None
    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    pred_boxes: np.ndarray
    pred_classes: np.ndarray
    pred_scores: np.ndarray


# ----------------------------------------------------------------------------- pictures
def _text(canvas, text, origin, scale=0.45, color=BLACK, thickness=1):
    cv2.putText(canvas, str(text), (int(origin[0]), int(origin[1])), FONT, scale, color, thickness, cv2.LINE_AA)


def _axes(size=(420, 360), margin=(55, 20, 20, 45), x_label='', y_label='', x_range=(0.0, 1.0), y_range=(0.0, 1.0),
          ticks=5):
    """A white canvas with a framed plot area; returns (canvas, to_pixels(x, y) -> (u, v) arrays)."""
    width, height = size
    left, top, right, bottom = margin
    canvas = np.full((height, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    cv2.rectangle(canvas, (x0, y0), (x1, y1), BLACK, 1)

    def to_pixels(x, y):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        u = x0 + (x - x_range[0]) / max(x_range[1] - x_range[0], 1e-12) * (x1 - x0)
        v = y1 - (y - y_range[0]) / max(y_range[1] - y_range[0], 1e-12) * (y1 - y0)
        return u, v

    for k in range(ticks + 1):
        fx = x_range[0] + (x_range[1] - x_range[0]) * k / ticks
        fy = y_range[0] + (y_range[1] - y_range[0]) * k / ticks
        u, _ = to_pixels(fx, y_range[0])
        _, v = to_pixels(x_range[0], fy)
        cv2.line(canvas, (int(u), y1), (int(u), y1 + 4), BLACK, 1)
        cv2.line(canvas, (x0 - 4, int(v)), (x0, int(v)), BLACK, 1)
        if 0 < k < ticks:
            cv2.line(canvas, (int(u), y0), (int(u), y1), (235, 235, 235), 1)
            cv2.line(canvas, (x0, int(v)), (x1, int(v)), (235, 235, 235), 1)
        _text(canvas, f'{fx:.3g}', (u - 10, y1 + 18), 0.4)
        _text(canvas, f'{fy:.3g}', (4, v + 4), 0.4)
    _text(canvas, x_label, ((x0 + x1) / 2 - 4 * len(x_label), height - 8))
    _text(canvas, y_label, (4, top - 6 if top > 14 else 12))
    cv2.rectangle(canvas, (x0, y0), (x1, y1), BLACK, 1)
    return canvas, to_pixels


def pr_curve_picture(detection, class_index: int) -> np.ndarray:
    """Precision over recall of one class, a line per threshold (training.evaluation.detection_metrics.DetectionMetrics)."""
    name = detection.class_names[class_index]
    canvas, to_pixels = _axes(x_label='recall', y_label='precision')
    legend = []
    for t, threshold in enumerate(detection.thresholds):
        precision, recall = detection.raw_curves[class_index][t]
        color = THRESHOLD_COLORS[t % len(THRESHOLD_COLORS)]
        if len(precision):
            # a step curve starting at recall 0 with the first precision
            r = np.concatenate([[0.0], np.repeat(recall, 2)[:-1]])
            p = np.repeat(precision, 2)
            u, v = to_pixels(r, p)
            cv2.polylines(canvas, [np.round(np.column_stack([u, v])).astype(np.int32)], False, color, 2, cv2.LINE_AA)
        ap = detection.ap[class_index, t]
        legend.append((f'{threshold:g} m: AP {"-" if math.isnan(ap) else f"{ap:.3f}"}', color))
    for k, (text, color) in enumerate(legend):
        cv2.line(canvas, (250, 40 + 18 * k), (270, 40 + 18 * k), color, 2)
        _text(canvas, text, (275, 44 + 18 * k), 0.4)
    title = f'{name}: {int(detection.num_gt[class_index])} GT, {int(detection.num_pred[class_index])} predictions'
    return add_title(canvas, title)


def confusion_picture(confusion: np.ndarray, names: Sequence[str], cell_px: int = 34) -> np.ndarray:
    """Row-normalised confusion matrix (rows = ground truth, columns = prediction) as a colour image
    with class names and per-cell percentages; rows without labels stay grey."""
    confusion = np.asarray(confusion, dtype=np.float64)
    k = len(names)
    totals = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    gray = (np.clip(normalised, 0, 1) * 255 + 0.5).astype(np.uint8)
    cells = cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    cells[(totals[:, 0] == 0)] = GRAY
    cells = cv2.resize(cells, (k * cell_px, k * cell_px), interpolation=cv2.INTER_NEAREST)
    for r in range(k):
        for c in range(k):
            if totals[r, 0] > 0 and normalised[r, c] >= 0.005:
                color = BLACK if normalised[r, c] > 0.6 else WHITE
                _text(cells, f'{100 * normalised[r, c]:.0f}', (c * cell_px + 6, r * cell_px + cell_px // 2 + 5), 0.4,
                      color)
    label_w = 10 + 8 * max(len(n) for n in names)
    canvas = np.full((label_w + k * cell_px + 30, label_w + k * cell_px + 10, 3), 255, np.uint8)
    canvas[label_w:label_w + k * cell_px, label_w:label_w + k * cell_px] = cells
    for r, name in enumerate(names):
        _text(canvas, name, (4, label_w + r * cell_px + cell_px // 2 + 5), 0.42)
    # column names written on a band, turned by 90 degrees to read bottom-up
    band = np.full((cell_px * k, label_w, 3), 255, np.uint8)
    for c, name in enumerate(names):
        _text(band, name, (label_w - 8 * len(name) - 4, c * cell_px + cell_px // 2 + 5), 0.42)
    canvas[:label_w, label_w:label_w + k * cell_px] = np.ascontiguousarray(np.rot90(band, 1))
    _text(canvas, 'rows: ground truth, columns: prediction (% of the row)', (4, canvas.shape[0] - 10), 0.42)
    return add_title(canvas, 'semantic confusion matrix (row-normalised)')


def latency_picture(samples: dict, summary: dict, stages: Sequence[str] | None = None) -> np.ndarray:
    """Histograms of per-frame latency (ms) per stage; bars of p50 / p95 when only the summary is known."""
    panels = []
    stages = list(stages) if stages is not None else [s for s in samples if len(samples[s])]
    for stage in stages:
        values = np.asarray(samples[stage], dtype=np.float64)
        high = max(float(values.max()) * 1.05, 1e-3)
        counts, edges = np.histogram(values, bins=20, range=(0.0, high))
        canvas, to_pixels = _axes(size=(360, 240), x_label='ms', y_label='frames', x_range=(0.0, high),
                                  y_range=(0.0, max(int(counts.max()), 1)), ticks=4)
        for count, a, b in zip(counts, edges[:-1], edges[1:]):
            if count:
                u0, v0 = to_pixels(a, 0)
                u1, v1 = to_pixels(b, count)
                cv2.rectangle(canvas, (int(u0) + 1, int(v1)), (int(u1) - 1, int(v0) - 1), (31, 119, 180), -1)
        p50, p95 = latency_percentiles(values)
        for value, color in ((p50, (44, 160, 44)), (p95, (214, 39, 40))):
            u, _ = to_pixels(value, 0)
            cv2.line(canvas, (int(u), 20), (int(u), 195), color, 1)
        panels.append(add_title(canvas, f'{stage}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({len(values)} frames)'))
    if not panels and summary:
        names = sorted(summary)
        high = max(v[1] for v in summary.values()) * 1.1 or 1.0
        canvas, to_pixels = _axes(size=(max(360, 70 * len(names) + 80), 300), x_label='stage', y_label='ms',
                                  x_range=(0.0, float(len(names))), y_range=(0.0, high), ticks=4)
        for i, name in enumerate(names):
            for j, (value, color) in enumerate(zip(summary[name], ((44, 160, 44), (214, 39, 40)))):
                u0, v0 = to_pixels(i + 0.15 + 0.35 * j, 0)
                u1, v1 = to_pixels(i + 0.45 + 0.35 * j, value)
                cv2.rectangle(canvas, (int(u0), int(v1)), (int(u1), int(v0)), color, -1)
        panels.append(add_title(canvas, 'latency p50 (green) / p95 (red): ' + ', '.join(names)))
    if not panels:
        return add_title(np.full((60, 360, 3), 255, np.uint8), 'no latency measured')
    return side_by_side(panels)


def sample_picture(sample: SampleFrame, detection_labels: LabelSet, semantic_labels: LabelSet,
                   grid: BevGrid, height: int = 360) -> np.ndarray:
    """Camera with predicted classes | camera with GT classes | BEV with GT and predicted boxes."""
    parts = []
    if sample.image is not None:
        for title, class_map in (('prediction', sample.pred_class_map), ('ground truth', sample.gt_class_map)):
            picture = sample.image if class_map is None else semantic_overlay(sample.image, class_map, semantic_labels)
            scale = height / picture.shape[0]           # title drawn after scaling, so it stays legible
            picture = cv2.resize(np.ascontiguousarray(picture), (max(1, round(picture.shape[1] * scale)), height),
                                 interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
            parts.append(add_title(picture, title if class_map is not None else f'{title}: none'))
    heatmap = np.zeros(grid.output_shape, np.float32)
    bev = draw_bev(heatmap, sample.gt_boxes, sample.gt_classes, grid, detection_labels.colors,
                   pred_boxes=sample.pred_boxes, pred_classes=sample.pred_classes, points=sample.points,
                   pixels_per_cell=4)
    parts.append(add_title(bev, f'BEV: {len(sample.gt_boxes)} GT (thick), {len(sample.pred_boxes)} predicted'))
    picture = side_by_side(parts, height=height)
    return add_title(picture, f'cloud stamp {sample.stamp_ns / 1e9:.3f} s')


# ----------------------------------------------------------------------------- report
def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(format_number(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def _safe_name(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '-_' else '_' for c in name)


def metrics_dict(evaluation, tracking: dict | None = None) -> dict:
    """Everything report.md shows, as JSON-ready values."""
    seg = evaluation.segmentation
    return json_ready({
        'source': evaluation.predictions.source,
        'detection': evaluation.detection.to_dict(),
        'segmentation': {'miou': seg['miou'], 'pixel_accuracy': seg['pixel_accuracy'],
                         'mean_class_accuracy': seg['mean_class_accuracy'], 'num_pixels': seg['num_pixels'],
                         'iou': dict(zip(seg['class_names'], seg['iou'])),
                         'confusion_matrix': seg['confusion_matrix']},
        'segmentation_by_camera': {camera: {'miou': m['miou'], 'pixel_accuracy': m['pixel_accuracy'],
                                            'num_pixels': m['num_pixels'], 'iou': dict(zip(m['class_names'], m['iou']))}
                                   for camera, m in getattr(evaluation, 'segmentation_by_camera', {}).items()},
        'counts': evaluation.counts,
        'latency_ms': {stage: {'p50': p50, 'p95': p95}
                       for stage, (p50, p95) in evaluation.predictions.latency_summary.items()},
        'tracking': tracking,
    })


def write_report(out_dir, evaluation, detection_labels: LabelSet, semantic_labels: LabelSet, grid: BevGrid,
                 samples: Sequence[SampleFrame] = (), tracking: dict | None = None,
                 track_plots: Sequence = (), params_file=None) -> Path:
    """Write the report folder (module doc); returns the path of report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    det, seg, counts = evaluation.detection, evaluation.segmentation, evaluation.counts
    md = ['# Bag evaluation\n', f'- predictions: {evaluation.predictions.source}']
    if params_file:
        md.append(f'- node parameters: `{params_file}`')
    md.append(f"- {counts.get('gt_frames', 0)} ground-truth frames, {counts.get('class_maps_scored', 0)} "
              f"class maps scored\n")

    md.append('## Detection (BEV centre distance, nuScenes AP)\n')
    errors = det.tp_errors is not None
    header = ['class'] + [f'AP@{t:g} m' for t in det.thresholds] + ['mean AP', 'GT', 'pred'] + (
        ['ATE m', 'ASE', 'AOE rad'] if errors else [])
    rows = [[name] + [float(v) for v in det.ap[c]] + [float(det.ap_per_class[c]), int(det.num_gt[c]),
                                                      int(det.num_pred[c])]
            + ([float(v) for v in det.tp_errors[c]] if errors else [])
            for c, name in enumerate(det.class_names)]
    md += [_table(header, rows), '', f'**mAP {format_number(float(det.map))}**\n']
    pictures = []
    for c, name in enumerate(det.class_names):
        path = write_png(out / f'pr_{_safe_name(name)}.png', pr_curve_picture(det, c))
        pictures.append(path.name)
    md.append(' '.join(f'![PR {p}]({p})' for p in pictures) + '\n')

    md.append('## Semantic segmentation\n')
    md.append(_table(['class', 'IoU'], [[n, float(v)] for n, v in zip(seg['class_names'], seg['iou'])]))
    md.append(f"\n**mIoU {format_number(seg['miou'])}**, pixel accuracy {format_number(seg['pixel_accuracy'])}, "
              f"mean class accuracy {format_number(seg['mean_class_accuracy'])} ({seg['num_pixels']} pixels)\n")
    by_camera = getattr(evaluation, 'segmentation_by_camera', {})
    if by_camera:
        md.append('\nPer camera (the pooled figures above count every camera):\n')
        md.append(_table(['camera', 'mIoU', 'pixel accuracy', 'pixels'],
                         [[camera, float(m['miou']), float(m['pixel_accuracy']), m['num_pixels']]
                          for camera, m in by_camera.items()]) + '\n')
    write_png(out / 'confusion_matrix.png', confusion_picture(seg['confusion_matrix'], seg['class_names']))
    md.append('![confusion matrix](confusion_matrix.png)\n')

    md.append('## Synchronisation, drops and skips\n')
    md.append(_table(['count', 'value'], [[k, v] for k, v in counts.items()]) + '\n')

    md.append('## Latency\n')
    summary = evaluation.predictions.latency_summary
    if summary:
        md.append(_table(['stage', 'p50 ms', 'p95 ms'], [[s, f'{a:.1f}', f'{b:.1f}'] for s, (a, b) in summary.items()]))
    else:
        md.append('no latency recorded')
    write_png(out / 'latency.png', latency_picture(evaluation.predictions.latency_samples, summary))
    md.append('\n![latency](latency.png)\n')

    if tracking is not None:
        md.append('## Tracking (training.evaluation.evaluate_tracking)\n')
        metrics = tracking.get('metrics', {})
        md.append(_table(['class', 'MOTA', 'IDF1', 'ID switches', 'ID switches / 100 frames', 'GT'],
                         [[name, m.get('mota'), m.get('idf1'), m.get('idsw'), m.get('idsw_per_100_frames'),
                           m.get('num_gt')] for name, m in metrics.items()]))
        md.append(f"\n{tracking.get('num_frames', '?')} frames in {tracking.get('num_scenes', '?')} scenes\n")
    plots = [Path(p) for p in track_plots]
    if plots:
        atomic_write_bytes(out / 'tracks.png', plots[0].read_bytes())
        md.append(f'![tracks of {plots[0].stem}](tracks.png)\n')

    if samples:
        md.append('## Sample frames\n')
        for k, sample in enumerate(samples):
            name = f'sample_{k}.png'
            write_png(out / name, sample_picture(sample, detection_labels, semantic_labels, grid))
            md.append(f'![sample {k}]({name})')
        md.append('')

    atomic_write_json(out / 'metrics.json', metrics_dict(evaluation, tracking))
    return atomic_write_text(out / 'report.md', '\n'.join(md) + '\n')
