"""Evaluate tracking: a checkpoint's detections + the BEV tracker over each scene, CLEAR-MOT / IDF1.

    python -m training.evaluation.evaluate_tracking --checkpoint RUN_DIR/model_best.pt --chunks CHUNK_DIR
        [--split val] [--score-threshold 0.3] [--association hungarian] [--birth-hits 2]
        [--death-misses 3] [--json OUT.json] [--plots PLOT_DIR] [--device auto]
    python -m training.evaluation.evaluate_tracking --gt-detections [--gt-noise-m 0.2] [--gt-drop-rate 0.1]
        --chunks CHUNK_DIR ...           # the tracker alone, fed the ground-truth boxes

What is measured:
- Detections: the model runs over the split once through training.evaluation.evaluate.evaluate (the same
  data pipeline, forward pass and decoding as the detection evaluation, at its score threshold
  0.05, so the AP printed alongside matches `python -m training.evaluation.evaluate`). Detections scoring
  >= --score-threshold (default 0.3, the node's default) go to the tracker.
  With --gt-detections the tracker gets the ground-truth boxes instead (with centre noise
  --gt-noise-m and a fraction --gt-drop-rate dropped; seeded): the tracker without the model.
- Tracking: per scene, frames in LiDAR-stamp order, a fresh mtl_perception_ros.core.tracking.Tracker
  (dt from the stamps). Each frame's confirmed tracks, coasting ones included (what the node
  reports), whose centre lies in the model's BEV grid are the hypotheses.
- Ground truth: the chunks' boxes with a track id (the synthetic generator's true identities;
  real A2D2 has none, so it cannot be evaluated here) whose centre lies in the model's BEV grid,
  as in training.
- Metrics: training.evaluation.tracking_metrics.TrackingAccumulator (matching at 2 m BEV centre distance,
  per class; each scene a separate sequence): MOTA, MOTP, IDF1, IDP, IDR, ID switches,
  fragmentations, FP, FN per class and overall, plus ID switches per 100 frames; per scene too.
- --plots: one PNG per scene (training.pictures.track_plots): GT trajectories dashed, tracks coloured by id.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.tracking import ASSOCIATIONS, Tracker, TrackerConfig, gates_for_class_names
from training.evaluation.formatting import format_number
from training.evaluation.tracking_metrics import TrackingAccumulator

DEFAULT_FRAME_PERIOD_S = 0.1     # used when a chunk has no timestamps (A2D2 LiDAR: 10 Hz)


@dataclass
class TruthFrame:
    """One frame's ground truth for tracking: boxes (M, 7), classes (M,), track_ids (M,) >= 0."""

    index: int              # dataset index (the key of the frame's detections)
    scene: str
    stamp_s: float
    boxes: np.ndarray
    classes: np.ndarray
    track_ids: np.ndarray


@dataclass
class TrackingEvaluation:
    """Metrics (TrackingAccumulator.compute(): class name / 'overall' -> values), per scene
    metrics, and the trajectories of every scene for plots: scene -> id -> (frames, xy)."""

    metrics: dict
    scene_metrics: dict
    num_frames: int
    num_scenes: int
    gt_trajectories: dict = field(default_factory=dict)
    hyp_trajectories: dict = field(default_factory=dict)

    def idsw_per_100_frames(self, name: str = 'overall') -> float:
        return 100.0 * self.metrics[name]['idsw'] / self.num_frames if self.num_frames else math.nan

    def to_dict(self) -> dict:
        return {'num_frames': self.num_frames, 'num_scenes': self.num_scenes,
                'metrics': {name: {**values, 'idsw_per_100_frames': self.idsw_per_100_frames(name)}
                            for name, values in self.metrics.items()},
                'scenes': self.scene_metrics}

    def format_report(self) -> str:
        """One row per class and overall."""
        header = ['class', 'MOTA', 'MOTP m', 'IDF1', 'IDP', 'IDR', 'IDSW', 'IDSW/100f', 'Frag', 'FP', 'FN', 'GT']
        rows = [header]
        for name, m in self.metrics.items():
            rows.append([name] + [format_number(m[key]) for key in ('mota', 'motp_m', 'idf1', 'idp', 'idr')]
                        + [str(m['idsw']), format_number(self.idsw_per_100_frames(name), 2)]
                        + [str(m[key]) for key in ('frag', 'fp', 'fn', 'num_gt')])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        table = '\n'.join('  '.join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                                    enumerate(zip(row, widths))) for row in rows)
        return f'{self.num_frames} frames in {self.num_scenes} scenes\n{table}'


def _in_grid(boxes: np.ndarray, grid: BevGrid) -> np.ndarray:
    """(N,) bool: box centre inside the grid's x/y area (as training.data.dataset.prepare_sample)."""
    return ((boxes[:, 0] >= grid.x_min_m) & (boxes[:, 0] < grid.x_max_m)
            & (boxes[:, 1] >= grid.y_min_m) & (boxes[:, 1] < grid.y_max_m))


def truth_frames(dataset, grid: BevGrid) -> tuple[list[TruthFrame], int]:
    """Every frame of a training.data.dataset.ChunkDataset as a TruthFrame, in dataset order; boxes
    with an unknown track id (-1) or a centre outside `grid` are left out. Also returns the number
    of in-grid boxes left out for their unknown id."""
    frames, unknown = [], 0
    for index in range(len(dataset)):
        chunk, local = dataset.locate(index)
        reader = dataset.reader(chunk)
        boxes, classes, track_ids = reader.boxes(local)
        stamp_us = int(reader.array('lidar_timestamp_us')[local])
        if stamp_us < 0:
            stamp_us = int(reader.array('camera_timestamp_us')[local])
        stamp_s = stamp_us * 1e-6 if stamp_us >= 0 else math.nan
        in_grid = _in_grid(boxes, grid)
        known = track_ids >= 0
        unknown += int(np.count_nonzero(in_grid & ~known))
        keep = in_grid & known
        frames.append(TruthFrame(index, reader.scene_names[local], stamp_s, boxes[keep].astype(np.float64),
                                 classes[keep], track_ids[keep]))
    return frames, unknown


def scenes_in_time_order(frames: list[TruthFrame]) -> dict[str, list[TruthFrame]]:
    """scene -> its frames sorted by stamp (scenes in order of first appearance). Frames without
    a stamp get DEFAULT_FRAME_PERIOD_S steps in dataset order."""
    scenes: dict[str, list[TruthFrame]] = {}
    for frame in frames:
        scenes.setdefault(frame.scene, []).append(frame)
    for scene, items in scenes.items():
        if any(math.isnan(f.stamp_s) for f in items):
            for k, f in enumerate(items):
                f.stamp_s = k * DEFAULT_FRAME_PERIOD_S
        items.sort(key=lambda f: f.stamp_s)
    return scenes


def gt_detections(frames: list[TruthFrame], noise_m: float = 0.0, drop_rate: float = 0.0,
                  seed: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Ground truth as detections (score 1): index -> (boxes, classes, scores), centres moved by
    N(0, noise_m) per axis, each box dropped with probability drop_rate."""
    rng = np.random.default_rng(seed)
    detections = {}
    for frame in frames:
        boxes = frame.boxes.copy()
        boxes[:, :2] += rng.normal(0.0, noise_m, (len(boxes), 2)) if noise_m > 0 else 0.0
        keep = rng.random(len(boxes)) >= drop_rate
        detections[frame.index] = (boxes[keep], frame.classes[keep], np.ones(int(keep.sum())))
    return detections


def evaluate_tracking(frames: list[TruthFrame], detections: dict, class_names, config: TrackerConfig,
                      score_threshold: float = 0.0, max_distance_m: float = 2.0,
                      grid: BevGrid | None = None) -> TrackingEvaluation:
    """Run a fresh Tracker over each scene's frames in time order and score its confirmed tracks.

    detections: dataset index -> (boxes (N, 7), classes (N,), scores (N,)); a frame without an
    entry has no detections. Detections scoring below score_threshold are not given to the tracker.
    grid: when given, only tracks whose centre is inside it are scored (the region of the ground
    truth: a track coasting out of the area is not a false positive).
    """
    overall = TrackingAccumulator(class_names, max_distance_m)
    scenes = scenes_in_time_order(frames)
    scene_metrics, gt_trajectories, hyp_trajectories = {}, {}, {}
    empty = (np.zeros((0, 7)), np.zeros(0, np.int64), np.zeros(0))
    for scene, items in scenes.items():
        tracker = Tracker(config)
        per_scene = TrackingAccumulator(class_names, max_distance_m)
        overall.start_sequence()
        gt_paths: dict = {}
        hyp_paths: dict = {}
        for k, frame in enumerate(items):
            boxes, classes, scores = detections.get(frame.index, empty)
            keep = np.asarray(scores) >= score_threshold
            tracks = tracker.update(np.asarray(boxes)[keep], np.asarray(classes)[keep], np.asarray(scores)[keep],
                                    frame.stamp_s)
            if grid is not None:        # the region the ground truth is limited to
                tracks = tracks.select(_in_grid(tracks.boxes, grid))
            for accumulator in (overall, per_scene):
                accumulator.update(frame.track_ids, frame.boxes[:, :2], frame.classes,
                                   tracks.track_ids, tracks.boxes[:, :2], tracks.classes)
            for paths, ids, xy in ((gt_paths, frame.track_ids, frame.boxes[:, :2]),
                                   (hyp_paths, tracks.track_ids, tracks.boxes[:, :2])):
                for track_id, point in zip(ids.tolist(), xy.tolist()):
                    paths.setdefault(int(track_id), ([], []))
                    paths[int(track_id)][0].append(k)
                    paths[int(track_id)][1].append(point)
        scene_values = per_scene.compute()['overall']
        scene_metrics[scene] = {key: scene_values[key] for key in
                                ('num_frames', 'num_gt', 'mota', 'idf1', 'idsw', 'frag', 'fp', 'fn')}
        gt_trajectories[scene] = {i: (np.array(f), np.array(p).reshape(-1, 2)) for i, (f, p) in gt_paths.items()}
        hyp_trajectories[scene] = {i: (np.array(f), np.array(p).reshape(-1, 2)) for i, (f, p) in hyp_paths.items()}
    return TrackingEvaluation(overall.compute(), scene_metrics, overall.num_frames, len(scenes),
                              gt_trajectories, hyp_trajectories)


def write_track_plots(evaluation: TrackingEvaluation, grid: BevGrid, out_dir) -> list[Path]:
    """One PNG per scene in out_dir (<scene>.png); returns the paths."""
    from training.pictures.draw import write_png
    from training.pictures.track_plots import draw_track_plot
    paths = []
    for scene, hyp in evaluation.hyp_trajectories.items():
        m = evaluation.scene_metrics[scene]
        title = (f'{scene}: {m["num_frames"]} frames, MOTA {format_number(m["mota"], 3)}, '
                 f'IDF1 {format_number(m["idf1"], 3)}, '
                 f'IDSW {m["idsw"]}, Frag {m["frag"]}')
        image = draw_track_plot(evaluation.gt_trajectories[scene], hyp, grid, title=title)
        paths.append(write_png(Path(out_dir) / f'{scene.replace("/", "_")}.png', image))
    return paths


# ----------------------------------------------------------------------------- CLI

def _model_detections(args, folder, dataset, model, info):
    """Run the model over `dataset` with training.evaluation.evaluate.evaluate: (detections by index, result)."""
    import torch

    from training.evaluation.evaluate import evaluate
    from training.engine.data_loading import make_eval_loader, prepare_for_loader_workers
    device = next(model.parameters()).device
    prepare_for_loader_workers(args.num_workers)
    loader = make_eval_loader(dataset, args.batch_size, args.num_workers, pin_memory=device.type == 'cuda')
    with torch.inference_mode():
        result = evaluate(model, loader, grid=info.bev_grid, detection_labels=info.detection_labels,
                          semantic_labels=info.semantic_labels, device=device, progress=not args.no_progress,
                          description='detect', keep_predictions=True)
    detections = {index: (boxes, classes, scores) for index, boxes, classes, scores in result.predictions}
    return detections, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.evaluation.evaluate_tracking',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', help='deployable checkpoint (RUN_DIR/model_best.pt); '
                                             'not needed with --gt-detections')
    parser.add_argument('--chunks', required=True, help='chunk folder (training.data.convert output)')
    parser.add_argument('--split', default='val', help='which chunks: val (default; for choices), test (for the figures you report) or train')
    parser.add_argument('--score-threshold', type=float, default=0.3, help='detections given to the tracker')
    parser.add_argument('--association', default='hungarian', choices=ASSOCIATIONS)
    parser.add_argument('--birth-hits', type=int, default=TrackerConfig.birth_hits)
    parser.add_argument('--death-misses', type=int, default=TrackerConfig.death_misses)
    parser.add_argument('--confirm-score', type=float, default=TrackerConfig.confirm_score,
                        help='a new track scoring at least this is confirmed at once (0: off; the node\'s '
                             'tracking_confirm_score)')
    parser.add_argument('--max-distance-m', type=float, default=2.0, help='GT <-> track match distance')
    parser.add_argument('--gt-detections', action='store_true', help='feed the tracker the GT boxes, no model')
    parser.add_argument('--gt-noise-m', type=float, default=0.0)
    parser.add_argument('--gt-drop-rate', type=float, default=0.0)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:1, ...')
    parser.add_argument('--json', default=None, help='also write the metrics to this JSON file')
    parser.add_argument('--plots', default=None, help='folder for one BEV track picture per scene')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)

    from mtl_perception_ros.core.atomic_file import atomic_write_json
    from training.engine.data_loading import make_dataset, read_split
    if not args.gt_detections and not args.checkpoint:
        parser.error('--checkpoint is required (or --gt-detections to track the ground truth)')
    try:
        folder = read_split(args.chunks, args.split)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2

    model = info = None
    if args.checkpoint:
        from mtl_perception_ros.core.checkpoint import CheckpointError, load_checkpoint
        from mtl_perception_ros.core.inference import pick_device
        try:
            device = pick_device(args.device)
            model, info = load_checkpoint(args.checkpoint, map_location=device)
        except (CheckpointError, ValueError, FileNotFoundError) as error:
            print(f'error: {error}', file=sys.stderr)
            return 2
        if tuple(info.detection_labels.names) != tuple(folder.detection_labels.names):
            print(f"error: the checkpoint's detection classes {list(info.detection_labels.names)} differ from the "
                  f"chunks' {list(folder.detection_labels.names)} ({args.chunks})", file=sys.stderr)
            return 2
        model_config, grid, class_names = info.model_config, info.bev_grid, info.detection_labels.names
    else:
        from mtl_perception_ros.core.model import ModelConfig
        model_config, grid, class_names = ModelConfig(), BevGrid(), folder.detection_labels.names

    dataset = make_dataset(folder.files[args.split], model_config, folder.detection_labels)
    frames, unknown_ids = truth_frames(dataset, grid)
    if not any(len(f.track_ids) for f in frames):
        print(f'error: {args.chunks} split {args.split}: no box has a track id (real A2D2 has none); '
              'tracking needs identities, e.g. from the synthetic generator', file=sys.stderr)
        return 2

    detection_result = None
    if args.gt_detections:
        detections = gt_detections(frames, args.gt_noise_m, args.gt_drop_rate, args.seed)
        source = f'ground truth (noise {args.gt_noise_m} m, drop rate {args.gt_drop_rate}, seed {args.seed})'
        score_threshold = 0.0
    else:
        detections, detection_result = _model_detections(args, folder, dataset, model, info)
        source = f'{args.checkpoint} (epoch {info.extra.get("epoch", "?")}), score >= {args.score_threshold}'
        score_threshold = args.score_threshold
    try:
        config = TrackerConfig(gates_m=gates_for_class_names(class_names), association=args.association,
                               birth_hits=args.birth_hits, death_misses=args.death_misses,
                               confirm_score=args.confirm_score)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    evaluation = evaluate_tracking(frames, detections, class_names, config, score_threshold, args.max_distance_m,
                                   grid)

    print(f'detections: {source}')
    print(f'chunks: {args.chunks} split {args.split}'
          + (f' ({unknown_ids} in-grid boxes without a track id left out)' if unknown_ids else ''))
    print(f'tracker: {config.association}, birth after {config.birth_hits} hits'
          + (f' (at once from score {config.confirm_score:g})' if config.confirm_score > 0 else '') + ', death after '
          f'{config.death_misses} misses, gates {config.gates_m} m; matched to GT at {args.max_distance_m} m')
    if detection_result is not None:
        print(f'detection mAP {format_number(detection_result.map)} (score >= 0.05, as training.evaluation.evaluate)')
    print(evaluation.format_report())
    if args.plots:
        paths = write_track_plots(evaluation, grid, args.plots)
        print(f'track pictures: {len(paths)} in {args.plots}')
    if args.json:
        values = {'checkpoint': args.checkpoint, 'chunks': str(args.chunks), 'split': args.split,
                  'detections': source, 'tracker': {k: getattr(config, k) for k in config.__dataclass_fields__},
                  **evaluation.to_dict()}
        if detection_result is not None:
            values['detection_map'] = detection_result.map
        atomic_write_json(args.json, values)
        print(f'metrics: {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
