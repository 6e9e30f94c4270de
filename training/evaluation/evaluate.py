"""Evaluate a checkpoint on chunk files: BEV detection AP and semantic segmentation IoU.

    python -m training.evaluation.evaluate --checkpoint RUN_DIR/model_best.pt --chunks CHUNK_DIR
        [--split val] [--batch-size 4] [--num-workers 2] [--device auto] [--json OUT.json] [--no-verify]

Checks every chunk member's CRC-32 first (training.data.chunks.verify_chunk; --no-verify skips it).
A damaged chunk or checkpoint gives one `error:` line naming the file and exit code 2.
Prints per-class AP at each centre-distance threshold (0.5, 1, 2, 4 m) and their mean (mAP),
per-class IoU, mIoU and pixel accuracy. `evaluate` below is the one evaluation loop: the
trainer calls it every epoch.

What is measured (training.evaluation.detection_metrics, training.evaluation.segmentation_metrics):
- Detection: the model's heatmap peaks (mtl_perception_ros.core.decode.decode_detections, score >=
  eval.score_threshold, at most eval.max_detections per frame) against the frame's boxes whose
  centre lies inside the BEV grid; nuScenes AP (as nuscenes-devkit computes it) on BEV centre
  distance, per class and threshold; mAP = mean over classes with ground truth of the mean over
  thresholds; the same by range band (0-20, 20-40, 40+ m from the vehicle origin: ground truth
  and predictions in the band).
- Semantics: sem_logits bilinearly upsampled to the class map at the model input size, argmax;
  one confusion matrix over all frames (label 255 ignored) -> IoU per class, mIoU (classes that
  are neither labelled nor predicted anywhere left out), pixel accuracy.
- Losses (when a criterion is given): the mean of each loss term over the batches.
Under torchrun every rank evaluates its own share of the frames (ShardSampler: each frame once)
and rank 0 merges them in frame order, so the numbers do not depend on the number of processes.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mtl_perception_ros.core.atomic_file import atomic_write_json, json_ready
from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.decode import decode_detections
from mtl_perception_ros.core.labels import LabelSet
from training.data.a2d2_calibration import in_rig_order
from training.data.dataset import model_arguments
from training.evaluation.detection_metrics import RANGE_BANDS_M, SECTORS_DEG, DetectionAccumulator, DetectionMetrics
from training.provenance import describe
from training.evaluation.formatting import format_number
from training.evaluation.segmentation_metrics import SegmentationAccumulator
from training.engine.data_loading import (ShardSampler, make_dataset, make_eval_loader, prepare_for_loader_workers,
                                          read_split, to_device)
from training.engine.distributed import DistContext, gather_to_main


@dataclass
class EvaluationResult:
    """Metrics of one pass over a split (see the module doc for what each number means)."""

    detection: DetectionMetrics
    segmentation: dict
    losses: dict = field(default_factory=dict)
    num_frames: int = 0
    # with evaluate(keep_predictions=True): [(dataset index, boxes (N, 7), classes (N,), scores (N,))]
    # per frame in dataset order (training.evaluation.evaluate_tracking runs the tracker over them)
    predictions: list = field(default_factory=list)
    # (low, high) m -> DetectionMetrics of that range band (detection_metrics.RANGE_BANDS_M)
    detection_by_range: dict = field(default_factory=dict)
    # sector name -> DetectionMetrics of the boxes in that sector (detection_metrics.SECTORS_DEG)
    detection_by_sector: dict = field(default_factory=dict)
    # camera name -> segmentation metrics of that camera's views (the pooled ones: `segmentation`)
    segmentation_by_camera: dict = field(default_factory=dict)

    @property
    def map(self) -> float:
        return float(self.detection.map)

    @property
    def miou(self) -> float:
        return float(self.segmentation['miou'])

    def score(self, best_metric: str = 'combined') -> float:
        """Higher is better. combined = mean of mAP and mIoU (whichever are defined); loss = -total."""
        if best_metric == 'map':
            return self.map
        if best_metric == 'miou':
            return self.miou
        if best_metric == 'loss':
            return -self.losses.get('total', math.nan)
        defined = [v for v in (self.map, self.miou) if not math.isnan(v)]
        return float(np.mean(defined)) if defined else math.nan

    def summary(self) -> dict:
        """Flat {name: float} for TensorBoard and the history: map, ap/<class>, ap/<class>@<t>m,
        miou, iou/<class>, pixel_accuracy, mean_class_accuracy, loss/<term>."""
        det, seg = self.detection, self.segmentation
        values = {'map': det.map, **{f'tp/{name}': value for name, value in det.tp_error_means.items()}}
        for band, metrics in self.detection_by_range.items():
            values[f'map_range/{_band_name(band)}'] = metrics.map
        for sector, metrics in self.detection_by_sector.items():
            values[f'map_sector/{sector}'] = metrics.map
        for c, name in enumerate(det.class_names):
            values[f'ap/{name}'] = float(det.ap_per_class[c])
            for t, threshold in enumerate(det.thresholds):
                values[f'ap/{name}@{threshold:g}m'] = float(det.ap[c, t])
        values['miou'] = seg['miou']
        for k, name in enumerate(seg['class_names']):
            values[f'iou/{name}'] = float(seg['iou'][k])
        values['pixel_accuracy'] = seg['pixel_accuracy']
        values['mean_class_accuracy'] = seg['mean_class_accuracy']
        if len(self.segmentation_by_camera) > 1:
            for camera, metrics in self.segmentation_by_camera.items():
                values[f'miou_camera/{camera}'] = metrics['miou']
                values[f'pixel_accuracy_camera/{camera}'] = metrics['pixel_accuracy']
        values.update({f'loss/{term}': value for term, value in self.losses.items()})
        return values

    def to_dict(self) -> dict:
        """JSON-ready: detection table and curves, segmentation IoU/accuracy/confusion, losses."""
        seg = self.segmentation
        return json_ready({
            'num_frames': self.num_frames,
            'detection': self.detection.to_dict(),
            'detection_by_range': {_band_name(band): {'map': metrics.map, 'ap_per_class': dict(zip(
                metrics.class_names, metrics.ap_per_class)), 'num_gt': dict(zip(metrics.class_names, metrics.num_gt))}
                for band, metrics in self.detection_by_range.items()},
            'detection_by_sector': {sector: {'map': metrics.map, 'ap_per_class': dict(zip(
                metrics.class_names, metrics.ap_per_class)), 'num_gt': dict(zip(metrics.class_names, metrics.num_gt))}
                for sector, metrics in self.detection_by_sector.items()},
            'segmentation_by_camera': {camera: {'miou': metrics['miou'], 'pixel_accuracy': metrics['pixel_accuracy'],
                                                'num_pixels': metrics['num_pixels'],
                                                'iou': dict(zip(metrics['class_names'], metrics['iou']))}
                                       for camera, metrics in self.segmentation_by_camera.items()},
            'segmentation': {'miou': seg['miou'], 'pixel_accuracy': seg['pixel_accuracy'],
                             'mean_class_accuracy': seg['mean_class_accuracy'],
                             'num_pixels': seg['num_pixels'],
                             'iou': dict(zip(seg['class_names'], seg['iou'])),
                             'class_accuracy': dict(zip(seg['class_names'], seg['class_accuracy'])),
                             'confusion_matrix': seg['confusion_matrix']},
            'losses': self.losses,
        })

    def format_report(self) -> str:
        """Detection AP table, then the segmentation table, then the losses."""
        seg = self.segmentation
        lines = [f'{self.num_frames} frames', '', 'BEV detection (centre distance, nuScenes AP)',
                 self.detection.format_table()]
        if self.detection.tp_errors is not None:
            lines.append('TP errors at 2 m (nuScenes; mean over classes): ' + ', '.join(
                f'{name} {format_number(value)}' for name, value in self.detection.tp_error_means.items()))
        if self.detection_by_range:
            lines.append('mAP by range: ' + ', '.join(f'{_band_name(band)} m {format_number(metrics.map)}'
                                                      for band, metrics in self.detection_by_range.items()))
        sectors = {name: metrics for name, metrics in self.detection_by_sector.items() if metrics.num_gt.sum()}
        if sectors and set(sectors) != {'front'}:
            lines.append('mAP by sector: ' + ', '.join(f'{name} {format_number(metrics.map)}'
                                                       for name, metrics in sectors.items()))
        lines += ['', 'Semantic segmentation']
        width = max(len('pixel accuracy'), *(len(n) for n in seg['class_names']))
        lines.append(f'{"class".ljust(width)}     IoU  accuracy')
        for name, iou, accuracy in zip(seg['class_names'], seg['iou'], seg['class_accuracy']):
            lines.append(f'{name.ljust(width)}  {format_number(iou, width=6)}    {format_number(accuracy, width=6)}')
        lines.append(f'{"mIoU".ljust(width)}  {format_number(seg["miou"], width=6)}')
        lines.append(f'{"pixel accuracy".ljust(width)}  {format_number(seg["pixel_accuracy"], width=6)}')
        if len(self.segmentation_by_camera) > 1:
            lines.append('per camera (mIoU / pixel accuracy): ' + ', '.join(
                f'{camera} {format_number(metrics["miou"])} / {format_number(metrics["pixel_accuracy"])}'
                for camera, metrics in self.segmentation_by_camera.items()))
        if self.losses:
            lines += ['', 'Losses: ' + ', '.join(f'{k} {v:.4f}' for k, v in self.losses.items())]
        return '\n'.join(lines)


def semantic_prediction(sem_logits: torch.Tensor, size_hw) -> torch.Tensor:
    """(B, K, h, w) logits -> (B, H, W) uint8 class ids at `size_hw` (bilinear logits, argmax)."""
    if tuple(sem_logits.shape[-2:]) != tuple(size_hw):
        sem_logits = F.interpolate(sem_logits.float(), size=tuple(size_hw), mode='bilinear', align_corners=False)
    return sem_logits.argmax(dim=1).to(torch.uint8)


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None):
    """torch.autocast on CUDA with `amp_dtype`, a no-op otherwise."""
    if amp_dtype is None or device.type != 'cuda':
        return contextlib.nullcontext()
    return torch.autocast(device_type='cuda', dtype=amp_dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, *, grid: BevGrid, detection_labels: LabelSet,
             semantic_labels: LabelSet, device: torch.device, criterion=None,
             score_threshold: float = 0.05, max_detections: int = 100, nms_radius_m=None,
             amp_dtype: torch.dtype | None = None, ctx: DistContext | None = None,
             progress: bool = True, description: str = 'evaluate',
             keep_predictions: bool = False) -> EvaluationResult | None:
    """Run `model` (the bare network, not a DDP wrapper) over `loader`; metrics on rank 0.

    Returns an EvaluationResult on rank 0 (or without DDP), None on the other ranks. The model
    is put in eval mode and back into its previous mode afterwards. keep_predictions: also return
    every frame's decoded boxes (EvaluationResult.predictions).
    """
    ctx = ctx or DistContext(device=device)
    was_training = model.training
    model.eval()
    frames = []                 # (dataset index, pred boxes, classes, scores, gt boxes, gt classes)
    seg = SegmentationAccumulator(len(semantic_labels), semantic_labels.names)
    camera_seg: dict[str, SegmentationAccumulator] = {}
    loss_sums: dict[str, float] = {}
    batches = 0
    # dataset index of each frame, to merge the ranks' shards in frame order
    sampler_indices = loader.sampler.indices if isinstance(loader.sampler, ShardSampler) else None
    position = 0
    try:
        for batch in tqdm(loader, desc=description, leave=False, disable=not (progress and ctx.is_main)):
            batch = to_device(batch, device)
            with autocast_context(device, amp_dtype):
                outputs = model(**model_arguments(batch))
                if criterion is not None:
                    _, terms = criterion(outputs, batch)
                    for name, value in terms.items():
                        loss_sums[name] = loss_sums.get(name, 0.0) + float(value)
            batches += 1
            # contiguous: decode_detections uses .view (conv outputs may come channels-last)
            detections = decode_detections(outputs['bbox_heatmap'].float().contiguous(),
                                           outputs['bbox_reg'].float().contiguous(), grid,
                                           score_threshold, max_detections, nms_radius_m)
            predicted = semantic_prediction(outputs['sem_logits'], batch['class_map'].shape[-2:]).cpu().numpy()
            class_maps = batch['class_map'].cpu().numpy()
            for i, det in enumerate(detections):
                index = sampler_indices[position] if sampler_indices is not None else position
                position += 1
                frames.append((index, det.boxes, det.classes, det.scores,
                               batch['gt_boxes'][i].cpu().numpy(), batch['gt_classes'][i].cpu().numpy()))
            view_cameras = [name for names in batch['camera_names'] for name in names]
            for view, camera in enumerate(view_cameras):   # every camera's view, pooled and per camera
                seg.update(predicted[view], class_maps[view])
                if camera not in camera_seg:
                    camera_seg[camera] = SegmentationAccumulator(len(semantic_labels), semantic_labels.names)
                camera_seg[camera].update(predicted[view], class_maps[view])
    finally:
        model.train(was_training)

    gathered = gather_to_main({'frames': frames, 'confusion': seg.confusion, 'loss_sums': loss_sums,
                               'batches': batches,
                               'camera_confusion': {name: acc.confusion for name, acc in camera_seg.items()}}, ctx)
    if gathered is None:
        return None
    det_acc = DetectionAccumulator(detection_labels.names)
    band_accs = {band: DetectionAccumulator(detection_labels.names, range_band=band) for band in RANGE_BANDS_M}
    sector_accs = {name: DetectionAccumulator(detection_labels.names, sector_deg=sector)
                   for name, sector in SECTORS_DEG.items()}
    all_frames = sorted((f for part in gathered for f in part['frames']), key=lambda f: f[0])
    for _, boxes, classes, scores, gt_boxes, gt_classes in all_frames:
        for acc in (det_acc, *band_accs.values(), *sector_accs.values()):
            acc.update(boxes, classes, scores, gt_boxes, gt_classes)
    seg.confusion = sum(part['confusion'] for part in gathered)
    by_camera = {}
    for part in gathered:
        for name, confusion in part['camera_confusion'].items():
            if name not in by_camera:
                by_camera[name] = SegmentationAccumulator(len(semantic_labels), semantic_labels.names)
            by_camera[name].confusion = by_camera[name].confusion + confusion
    total_batches = sum(part['batches'] for part in gathered)
    losses = {}
    for part in gathered:
        for name, value in part['loss_sums'].items():
            losses[name] = losses.get(name, 0.0) + value
    losses = {name: value / max(total_batches, 1) for name, value in losses.items()}
    predictions = [f[:4] for f in all_frames] if keep_predictions else []
    return EvaluationResult(det_acc.compute(), seg.compute(), losses, len(all_frames), predictions,
                            {band: acc.compute() for band, acc in band_accs.items()},
                            {name: acc.compute() for name, acc in sector_accs.items()},
                            {name: by_camera[name].compute() for name in in_rig_order(by_camera)})


def _band_name(band) -> str:
    low, high = band
    return f'{low:g}-{high:g}' if math.isfinite(high) else f'{low:g}+'


# ----------------------------------------------------------------------------- CLI

def error_line(error: Exception) -> str:
    """The one line to show for `error`; an error re-raised from a DataLoader worker carries the
    worker's traceback in its message, of which only the last line (the error itself) is kept."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and any(line.startswith('Original Traceback') or line.startswith('Traceback')
                              for line in lines):
        last = lines[-1]
        prefix = f'{type(error).__name__}: '
        return last.split(prefix, 1)[1] if prefix in last else last
    return ' '.join(line.strip() for line in lines)


def main(argv=None) -> int:
    from mtl_perception_ros.core.checkpoint import CheckpointError, load_checkpoint
    from mtl_perception_ros.core.inference import pick_device
    from training.data.chunks import ChunkError, verify_chunk

    parser = argparse.ArgumentParser(prog='python -m training.evaluation.evaluate', description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', required=True, help='deployable checkpoint (RUN_DIR/model_best.pt)')
    parser.add_argument('--chunks', required=True, help='chunk folder (training.data.convert output)')
    parser.add_argument('--split', default='val', help='which chunks: val (default; for choices), test (for the figures you report) or train')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:1, ...')
    parser.add_argument('--score-threshold', type=float, default=0.05)
    parser.add_argument('--max-detections', type=int, default=100)
    parser.add_argument('--json', default=None, help='also write the metrics to this JSON file')
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument('--no-verify', action='store_true',
                        help="skip the check of every chunk member's CRC-32 before evaluating (it reads "
                             'each chunk once more)')
    args = parser.parse_args(argv)

    try:
        device = pick_device(args.device)
        model, info = load_checkpoint(args.checkpoint, map_location=device)
        folder = read_split(args.chunks, args.split)
        for what, ours, theirs in (('detection', info.detection_labels, folder.detection_labels),
                                   ('semantic', info.semantic_labels, folder.semantic_labels)):
            if tuple(ours.names) != tuple(theirs.names):
                raise ValueError(f'the checkpoint\'s {what} classes {list(ours.names)} differ from the chunks\' '
                                 f'{list(theirs.names)} ({args.chunks})')
        if not args.no_verify:   # cheap next to decoding every image, and catches damage the maps skip
            for path in folder.files[args.split]:
                verify_chunk(path)
        prepare_for_loader_workers(args.num_workers)
        dataset = make_dataset(folder.files[args.split], info.model_config, info.detection_labels)
        loader = make_eval_loader(dataset, args.batch_size, args.num_workers, pin_memory=device.type == 'cuda')
        result = evaluate(model, loader, grid=info.bev_grid, detection_labels=info.detection_labels,
                          semantic_labels=info.semantic_labels, device=device,
                          score_threshold=args.score_threshold, max_detections=args.max_detections,
                          progress=not args.no_progress)
    except (CheckpointError, ChunkError, FileNotFoundError, ValueError) as error:
        print(f'error: {error_line(error)}', file=sys.stderr)
        return 2
    print(f'checkpoint: {args.checkpoint} (epoch {info.extra.get("epoch", "?")}); {describe(info.extra)}')
    print(f'chunks: {args.chunks} split {args.split}')
    print(result.format_report())
    if args.json:
        atomic_write_json(args.json, {'checkpoint': str(args.checkpoint), 'chunks': str(args.chunks),
                                      'split': args.split, 'checkpoint_provenance': info.extra.get('provenance'),
                                      'checkpoint_epoch': info.extra.get('epoch'),
                                      'checkpoint_val_metrics': info.extra.get('metrics'), **result.to_dict()})
        print(f'metrics: {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
