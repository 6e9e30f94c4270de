"""Quantize a checkpoint's ONNX export to int8 (static, calibrated on real frames) and check it.

    python -m training.export.to_int8 --checkpoint RUN_DIR/model_best.pt --chunks CHUNK_DIR
        [--onnx-dir RUN_DIR/model_best_onnx] [--split train] [--frames 32]
        [--check-split val] [--check-frames 16] [--min-class-agreement 0.98] [--min-detection-agreement 0.9]

Needs the fp32 export of the same checkpoint first (training.export.to_onnx). Writes next to it
`camera_int8.onnx` and `bev_int8.onnx` (ONNX Runtime's static QDQ quantization: int8 weights per
output channel, uint8 activations with min/max ranges) and an `int8` entry in onnx_export.json,
which the node's `backend: onnxruntime` with `precision: int8` needs (CPU only; with VNNI the
dense networks run about twice as fast, docs/node.md#backends-and-speed).

Calibration: the inputs the two graphs get in the node, taken from `--frames` frames of the
chunks' `--split` (spread over all its chunks): each frame's images brought to the model input
and its painted pillar canvas, made by the checkpoint's own torch pipeline
(mtl_perception_ros.core.inference). The check: on `--check-frames` frames of `--check-split`
(scenes the calibration did not see), the int8 graphs against the fp32 ones, both in ONNX
Runtime through the node's inference path: the share of class-map pixels that agree, and of the
fp32 detections (score >= --score-threshold) that int8 finds again (same class, centre within
0.5 m), and the reverse. Below --min-class-agreement or --min-detection-agreement the entry says
`ok: false`, the node refuses the graphs and the command exits with 1 (the files stay, for
inspection); 2 when the checkpoint, its export or the chunks cannot be used. Re-exporting fp32
drops the `int8` entry: the int8 graphs must be made again from the new graphs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from mtl_perception_ros.core.atomic_file import atomic_write_json
from mtl_perception_ros.core.inference_backends import (BEV_FILE, BEV_INT8_FILE, CAMERA_FILE, CAMERA_INT8_FILE,
                                                        CPU_PROVIDER, REPORT_FILE, BackendError, OnnxRuntimeBranches,
                                                        default_onnx_dir, file_sha256, read_export_report)
from mtl_perception_ros.core.matching import gated_assignment

MATCH_DISTANCE_M = 0.5


class _RecordingBranches:
    """Wraps a backend's branches and keeps every input the two graphs get (one array per sample)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.providers = inner.name, inner.providers
        self.inputs = {'image': [], 'canvas': []}

    def camera_branch(self, image):
        self.inputs['image'] += [np.ascontiguousarray(view[None].numpy(), dtype=np.float32) for view in image]
        return self.inner.camera_branch(image)

    def bev_branch(self, canvas):
        self.inputs['canvas'] += [np.ascontiguousarray(sample[None].numpy(), dtype=np.float32) for sample in canvas]
        return self.inner.bev_branch(canvas)


def spread_frames(chunk_paths, count: int) -> list:
    """(ChunkReader, frame index) of up to `count` frames spread evenly over the chunks' frames."""
    from training.data.chunks import ChunkReader

    readers = [ChunkReader(path) for path in chunk_paths]
    frames = [(reader, index) for reader in readers for index in range(len(reader))]
    if len(frames) <= count:
        return frames
    return [frames[int(i)] for i in np.linspace(0, len(frames) - 1, count).round()]


def read_frames(chunk_paths, count: int):
    """(points (N, 4), [(image, K, vehicle_to_camera), ...]) of `spread_frames`, as the node gets them."""
    for reader, index in spread_frames(chunk_paths, count):
        views = [(v.image, v.camera_matrix, v.vehicle_to_camera) for v in reader.views(index) if v.image is not None]
        yield reader.points(index), views


def calibration_inputs(checkpoint, frames) -> dict:
    """{'image': [...], 'canvas': [...]}: what camera.onnx and bev.onnx get for `frames` in the node
    (the checkpoint's torch pipeline on the CPU, fp32)."""
    from mtl_perception_ros.core.inference import PerceptionInference

    inference = PerceptionInference(checkpoint, device='cpu', backend='torch')
    recorder = _RecordingBranches(inference.branches)
    inference.branches = recorder
    for points, views in frames:
        inference.run_views(points, views, want_class_map=False)
    return recorder.inputs


def quantize_graph(source: Path, target: Path, input_name: str, samples: list) -> None:
    """Static QDQ quantization of `source` with `samples` as calibration data, written atomically."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            sample = next(self.items, None)
            return None if sample is None else {input_name: sample}

    with tempfile.TemporaryDirectory(prefix='.int8_', dir=target.parent) as work:
        prepared, quantized = Path(work) / 'prepared.onnx', Path(work) / 'quantized.onnx'
        quant_pre_process(str(source), str(prepared))
        quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(quantized, target)


def _detection_agreement(reference, other) -> tuple[int, int, int]:
    """(matched, reference count, other count): same class, BEV centres within MATCH_DISTANCE_M."""
    matched = 0
    for label in np.union1d(reference.classes, other.classes):
        a, b = reference.boxes[reference.classes == label, :2], other.boxes[other.classes == label, :2]
        if len(a) and len(b):
            cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
            matched += len(gated_assignment(cost, MATCH_DISTANCE_M)[0])
    return matched, len(reference.boxes), len(other.boxes)


def check_int8(checkpoint, onnx_dir, frames, score_threshold: float) -> dict:
    """int8 against fp32 graphs (both ONNX Runtime, the node's inference path) on `frames`."""
    from mtl_perception_ros.core.inference import PerceptionInference

    inference = PerceptionInference(checkpoint, device='cpu', backend='onnxruntime', onnx_dir=onnx_dir,
                                    score_threshold=score_threshold)
    fp32 = inference.branches
    # the same path with the int8 graphs, which the backend does not accept before this check
    int8 = OnnxRuntimeBranches(onnx_dir, inference.device, [CPU_PROVIDER], fp32.threads,
                               files=(CAMERA_INT8_FILE, BEV_INT8_FILE))

    def run(branches, points, views):
        inference.branches = branches
        return inference.run_views(points, views)
    equal = pixels = matched = fp32_count = int8_count = count = 0
    worst_score = 0.0
    for points, views in frames:
        want, got = run(fp32, points, views), run(int8, points, views)
        for want_map, got_map in zip(want.class_maps, got.class_maps):
            equal += int((want_map == got_map).sum())
            pixels += want_map.size
        pairs, n_want, n_got = _detection_agreement(want, got)
        matched, fp32_count, int8_count = matched + pairs, fp32_count + n_want, int8_count + n_got
        count += 1
        if len(want.scores) and len(got.scores):
            worst_score = max(worst_score, abs(float(want.scores.max()) - float(got.scores.max())))
    return {'frames': count, 'class_map_agreement': equal / pixels if pixels else 1.0,
            'detections_fp32': fp32_count, 'detections_int8': int8_count, 'detections_matched': matched,
            'detection_recall_of_fp32': matched / fp32_count if fp32_count else 1.0,
            'detection_precision_to_fp32': matched / int8_count if int8_count else 1.0,
            'top_score_max_abs_diff': worst_score, 'score_threshold': score_threshold}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.export.to_int8', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--checkpoint', required=True, help='checkpoint .pt whose fp32 export is quantized')
    parser.add_argument('--chunks', required=True, help='chunk folder (training.data.convert) for calibration')
    parser.add_argument('--onnx-dir', help='the fp32 export (default: <checkpoint stem>_onnx next to it)')
    parser.add_argument('--split', default='train', help='split the calibration frames come from (default train)')
    parser.add_argument('--frames', type=int, default=32, help='calibration frames (default 32)')
    parser.add_argument('--check-split', default='val', help='split of the check frames (default val)')
    parser.add_argument('--check-frames', type=int, default=16, help='check frames (default 16)')
    parser.add_argument('--score-threshold', type=float, default=0.3,
                        help="detections compared in the check (default 0.3, the node's)")
    parser.add_argument('--min-class-agreement', type=float, default=0.98)
    parser.add_argument('--min-detection-agreement', type=float, default=0.9)
    options = parser.parse_args(argv)
    from training.engine.data_loading import read_split

    onnx_dir = Path(options.onnx_dir or default_onnx_dir(options.checkpoint))
    try:
        report = read_export_report(onnx_dir, options.checkpoint)
        calibration_chunks = read_split(options.chunks, options.split).files[options.split]
        check_chunks = read_split(options.chunks, options.check_split).files[options.check_split]
    except (BackendError, OSError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    report.pop('int8', None)
    atomic_write_json(onnx_dir / REPORT_FILE, report)     # the old int8 graphs are not used from here on

    print(f'calibrating on {options.frames} frames of {options.chunks} ({options.split}) ...', flush=True)
    inputs = calibration_inputs(options.checkpoint, read_frames(calibration_chunks, options.frames))
    for source, target, name in ((CAMERA_FILE, CAMERA_INT8_FILE, 'image'), (BEV_FILE, BEV_INT8_FILE, 'canvas')):
        print(f'quantizing {source} on {len(inputs[name])} {name} inputs -> {target}', flush=True)
        quantize_graph(onnx_dir / source, onnx_dir / target, name, inputs[name])

    report['int8'] = {'ok': False, 'files': [CAMERA_INT8_FILE, BEV_INT8_FILE],
                      'from_sha256': {name: file_sha256(onnx_dir / name) for name in (CAMERA_FILE, BEV_FILE)},
                      'calibration': {'chunks': str(Path(options.chunks).resolve()), 'split': options.split,
                                      'samples': {name: len(values) for name, values in inputs.items()}},
                      'method': 'onnxruntime static QDQ, per-channel int8 weights, uint8 min/max activations'}
    print(f'checking int8 against fp32 on {options.check_frames} frames ({options.check_split}) ...', flush=True)
    check = check_int8(options.checkpoint, onnx_dir, read_frames(check_chunks, options.check_frames),
                       options.score_threshold)
    ok = (check['class_map_agreement'] >= options.min_class_agreement
          and min(check['detection_recall_of_fp32'], check['detection_precision_to_fp32'])
          >= options.min_detection_agreement)
    check.update(min_class_agreement=options.min_class_agreement,
                 min_detection_agreement=options.min_detection_agreement)
    report['int8'].update(ok=ok, check=check)
    atomic_write_json(onnx_dir / REPORT_FILE, report)
    print(json.dumps(check, indent=1))
    if not ok:
        print('error: the int8 graphs disagree with fp32 beyond the limits; the node will not use them',
              file=sys.stderr)
        return 1
    print(f'wrote {onnx_dir / CAMERA_INT8_FILE}, {onnx_dir / BEV_INT8_FILE} (precision int8 of backend onnxruntime)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
