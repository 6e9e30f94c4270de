"""Export a checkpoint's dense networks to ONNX and check ONNX Runtime against torch.

    python -m training.export.to_onnx --checkpoint RUN_DIR/model_best.pt [--out RUN_DIR/model_best_onnx]
        [--frames 3] [--rtol 1e-3] [--atol 1e-4] [--seed 0]

Writes (each file atomically):
- `camera.onnx`: `image` (B,3,Hi,Wi) float32 RGB 0..255 at the checkpoint's input size ->
  `camera_features` (B,Dc,Hi/4,Wi/4), `sem_logits` (B,K,Hi/4,Wi/4)  (MultiTaskNet.camera_branch)
- `bev.onnx`: `canvas` (B,Cp,Hg,Wg) float32 -> `bbox_heatmap` (B,C,H,W) logits, `bbox_reg`
  (B,8,H,W)  (MultiTaskNet.bev_branch)
- `onnx_export.json`: input/output names and shapes, opset, versions, the checkpoint's sha256,
  label sets, model config (BEV grid, input size) and the result of the check.
- `model_info.json` (the checkpoint's metadata: model config, grid, label sets) and `pillars.npz`
  (the pillar encoder's Linear + BatchNorm folded: weight (F, Cp), bias (Cp,)): what
  core.onnx_inference needs to run the export with ONNX Runtime alone, torch never imported.

The default folder, `<checkpoint stem>_onnx` next to the checkpoint, is where the node's backends
onnxruntime and tensorrt look (parameter onnx_dir; mtl_perception_ros.core.inference_backends).
Between the two graphs, the point -> pillar step (range mask, projection into the image,
grid_sample of the camera features, PointNet and scatter-max; MultiTaskNet.lidar_canvas) has
data-dependent shapes, so it stays outside the graphs, as PointPillars deployments keep their
scatter outside the exported networks: MultiTaskNet.forward with `branches=OnnxRuntimeBranches(...)`
runs the whole model that way in torch, core.onnx_inference in NumPy (core.lidar_canvas_np).

The check: on `--frames` synthetic frames (points over the BEV grid, a random image, a
forward-looking camera; seeded), ONNX Runtime's pipeline and MultiTaskNet.forward must agree
on every output within |onnx - torch| <= atol + rtol * max|torch|, and so must the NumPy pillar
canvas (`pillar_canvas`) with MultiTaskNet.lidar_canvas. The command exits with 1
when they do not (the files stay, for inspection), 2 when the checkpoint cannot be read.
Needs `onnx`, `onnxscript` and `onnxruntime` (installed by the set-up).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtl_perception_ros.core.atomic_file import atomic_write, atomic_write_json
from mtl_perception_ros.core.checkpoint import CheckpointError, CheckpointInfo, load_checkpoint
from mtl_perception_ros.core.checkpoint_info import FORMAT_NAME
from mtl_perception_ros.core.onnx_files import METADATA_FILE, PILLARS_FILE
from mtl_perception_ros.core.inference_backends import (BEV_FILE, CAMERA_FILE, CPU_PROVIDER, REPORT_FILE,
                                                        OnnxRuntimeBranches, default_onnx_dir, file_sha256)
from mtl_perception_ros.core.lidar_canvas_np import lidar_canvas_np
from mtl_perception_ros.core.model import MultiTaskNet, folded_pillar_weights

OUTPUTS = ('bbox_heatmap', 'bbox_reg', 'sem_logits')
PILLAR_CANVAS = 'pillar_canvas'     # core.lidar_canvas_np against MultiTaskNet.lidar_canvas


class _Stage(torch.nn.Module):
    """One stage method of MultiTaskNet (camera_branch, bev_branch) as a module to export."""

    def __init__(self, model: MultiTaskNet, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x):
        return getattr(self.model, self.method)(x)


def _export(module: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str],
            path: Path) -> None:
    """torch.onnx (torch.export based) with a dynamic batch axis, saved atomically to `path`."""
    batch = torch.export.Dim('batch', min=1, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)   # torch.export's own deprecation notes
        program = torch.onnx.export(module.eval(), (example,), input_names=[input_name], output_names=output_names,
                                    dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    handle, temporary = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(handle)
    try:
        program.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def export_onnx(model: MultiTaskNet, info: CheckpointInfo, out_dir) -> tuple[Path, Path]:
    """Write camera.onnx and bev.onnx for `model` (put in eval mode, on the CPU) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    height, width = info.image_hw
    rows, cols = model.cfg.bev_grid.shape
    logging.getLogger('torch.onnx').setLevel(logging.ERROR)   # its progress lines and torchvision notes
    with torch.no_grad():
        _export(_Stage(model, 'camera_branch'), torch.zeros(2, 3, height, width), 'image',
                ['camera_features', 'sem_logits'], out_dir / CAMERA_FILE)
        _export(_Stage(model, 'bev_branch'), torch.zeros(2, model.cfg.pillar_channels, rows, cols), 'canvas',
                ['bbox_heatmap', 'bbox_reg'], out_dir / BEV_FILE)
    return out_dir / CAMERA_FILE, out_dir / BEV_FILE


def write_runtime_files(model: MultiTaskNet, info: CheckpointInfo, out_dir) -> tuple[Path, Path]:
    """model_info.json and pillars.npz (module docstring) into out_dir, each atomically."""
    out_dir = Path(out_dir)
    config = model.cfg.to_dict()
    grid = config.pop('bev_grid')
    metadata = {'format': FORMAT_NAME, 'format_version': info.format_version, 'model_config': config,
                'bev_grid': grid, 'semantic_labels': info.semantic_labels.to_dict(),
                'detection_labels': info.detection_labels.to_dict(), 'extra': {}}
    atomic_write_json(out_dir / METADATA_FILE, metadata)
    weight, bias = folded_pillar_weights(model.eval().pillar_encoder)
    atomic_write(out_dir / PILLARS_FILE, lambda stream: np.savez(stream, weight=weight, bias=bias))
    return out_dir / METADATA_FILE, out_dir / PILLARS_FILE


def synthetic_frames(model: MultiTaskNet, info: CheckpointInfo, count: int, seed: int = 0):
    """Seeded frames for the check: (points (P,4), image (1,3,Hi,Wi), K (1,3,3), T (1,4,4))."""
    rng = np.random.default_rng(seed)
    grid = model.cfg.bev_grid
    height, width = info.image_hw
    camera_matrix = np.array([[[width / 2, 0, width / 2], [0, width / 2, height / 2], [0, 0, 1]]], np.float32)
    # camera 1.5 m above the vehicle origin looking along +x (optical z forward, x right, y down)
    vehicle_to_camera = np.array([[[0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]], np.float32)
    for index in range(count):
        num_points = int(rng.integers(2000, 12000)) if index else 8000
        points = np.column_stack([
            rng.uniform(grid.x_min_m - 5, grid.x_max_m + 5, num_points),   # some points outside the grid
            rng.uniform(grid.y_min_m - 5, grid.y_max_m + 5, num_points),
            rng.uniform(grid.z_min_m, grid.z_max_m, num_points),
            rng.uniform(0, 1, num_points)]).astype(np.float32)
        image = rng.uniform(0, 255, (1, 3, height, width)).astype(np.float32)
        yield points, image, camera_matrix, vehicle_to_camera


@dataclass
class CheckResult:
    """Largest |onnx - torch| and the allowed difference, per output, over the checked frames."""

    max_abs_diff: dict
    allowed: dict
    frames: int

    @property
    def ok(self) -> bool:
        return all(self.max_abs_diff[name] <= self.allowed[name] for name in self.max_abs_diff)


def check_onnx(model: MultiTaskNet, info: CheckpointInfo, onnx_dir, frames: int = 3, rtol: float = 1e-3,
               atol: float = 1e-4, seed: int = 0) -> CheckResult:
    """Compare MultiTaskNet.forward with the graphs of onnx_dir in ONNX Runtime (CPU) against torch."""
    model = model.cpu().eval()
    branches = OnnxRuntimeBranches(onnx_dir, torch.device('cpu'), [CPU_PROVIDER], threads=torch.get_num_threads())
    weight, bias = folded_pillar_weights(model.pillar_encoder)
    names = (*OUTPUTS, PILLAR_CANVAS)
    worst = {name: 0.0 for name in names}
    allowed = {name: float('inf') for name in names}
    for points, image, camera_matrix, vehicle_to_camera in synthetic_frames(model, info, frames, seed):
        inputs = (torch.from_numpy(points), torch.zeros(len(points), dtype=torch.long), torch.from_numpy(image),
                  torch.from_numpy(camera_matrix), torch.from_numpy(vehicle_to_camera))
        with torch.inference_mode():
            expected = model(*inputs)
            got = model(*inputs, branches=branches)
            # the pillar step of the torch-free runtime (core.onnx_inference) against lidar_canvas
            features, _ = model.camera_branch(inputs[2])
            expected[PILLAR_CANVAS] = model.lidar_canvas(
                inputs[0], inputs[1], 1, features, torch.ones(1, dtype=torch.bool), inputs[3], inputs[4],
                info.image_hw, torch.zeros(1, dtype=torch.long))
        got[PILLAR_CANVAS] = lidar_canvas_np(points, model.cfg.bev_grid, weight, bias, features.numpy(),
                                             camera_matrix, vehicle_to_camera, info.image_hw)
        for name in names:
            reference, value = expected[name].numpy(), np.asarray(got[name])
            if value.shape != reference.shape:
                raise ValueError(f'{name}: ONNX Runtime gives shape {value.shape}, torch {reference.shape}')
            worst[name] = max(worst[name], float(np.abs(value - reference).max()))
            allowed[name] = min(allowed[name], atol + rtol * float(np.abs(reference).max()))
    return CheckResult(max_abs_diff=worst, allowed=allowed, frames=frames)


def _graph_summary(path: Path) -> dict:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)

    def shape(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return {'file': path.name, 'opset': max(o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx')),
            'inputs': {v.name: shape(v) for v in graph.graph.input},
            'outputs': {v.name: shape(v) for v in graph.graph.output}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.export.to_onnx', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--checkpoint', required=True, help='checkpoint .pt (training.engine.train)')
    parser.add_argument('--out', help='folder for camera.onnx, bev.onnx, onnx_export.json (default: '
                        '<checkpoint stem>_onnx next to the checkpoint, where the node looks)')
    parser.add_argument('--frames', type=int, default=3, help='synthetic frames for the check (default 3)')
    parser.add_argument('--rtol', type=float, default=1e-3)
    parser.add_argument('--atol', type=float, default=1e-4)
    parser.add_argument('--seed', type=int, default=0)
    options = parser.parse_args(argv)
    try:
        model, info = load_checkpoint(options.checkpoint, map_location='cpu')
    except (CheckpointError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    options.out = options.out or str(default_onnx_dir(options.checkpoint))
    camera_path, bev_path = export_onnx(model, info, options.out)
    runtime_files = write_runtime_files(model, info, options.out)
    result = check_onnx(model, info, options.out, options.frames, options.rtol, options.atol, options.seed)
    import onnxruntime

    report = {
        'checkpoint': str(Path(options.checkpoint).resolve()),
        'checkpoint_sha256': file_sha256(options.checkpoint),
        'graphs': [_graph_summary(camera_path), _graph_summary(bev_path)],
        'between_the_graphs': 'points -> camera-painted pillar canvas: MultiTaskNet.lidar_canvas (torch) or '
                              'core.lidar_canvas_np with pillars.npz (ONNX Runtime alone)',
        'image_hw': list(info.image_hw), 'image_mean': list(info.image_mean), 'image_std': list(info.image_std),
        'model_config': model.cfg.to_dict(), 'semantic_classes': list(info.semantic_labels.names),
        'detection_classes': list(info.detection_labels.names),
        'versions': {'torch': torch.__version__, 'onnxruntime': onnxruntime.__version__},
        'check': {'frames': result.frames, 'ok': result.ok, 'rtol': options.rtol, 'atol': options.atol,
                  'max_abs_diff': result.max_abs_diff, 'allowed': result.allowed},
    }
    atomic_write_json(Path(options.out) / REPORT_FILE, report)
    for name in result.max_abs_diff:
        print(f'{name:14s} max |onnx - torch| {result.max_abs_diff[name]:.2e} (allowed {result.allowed[name]:.2e})')
    print(f'wrote {camera_path}, {bev_path}, {", ".join(map(str, runtime_files))}, {Path(options.out) / REPORT_FILE}')
    if not result.ok:
        print('error: ONNX Runtime and torch disagree beyond the tolerance', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
