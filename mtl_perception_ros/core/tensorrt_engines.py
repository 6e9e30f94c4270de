"""TensorRT engines for backend `tensorrt`, built ahead of time and cached by model, GPU and precision.

    mtl_perception_build_engines --checkpoint MODEL.pt [--onnx-dir DIR] [--precision fp16]
        [--max-views 6] [--device cuda:0]

Builds the engines of the export's camera.onnx and bev.onnx through ONNX Runtime's TensorRT
execution provider (one optimisation profile: batch 1 .. max-views images, one BEV canvas),
printing each step and its time, into

    <onnx_dir>/tensorrt/<key>/      key = <sha256 of both graphs, 12>_<GPU name>_sm<cc>_trt<version>_<precision>_v<max>

and writes engines.json there last (atomically), so a folder without it is an unfinished build.
The node (backend tensorrt) looks up the folder of its own model, GPU and precision and refuses
to start when engines.json is missing, naming this command: a build takes minutes and would
otherwise happen silently on the first frame. A new model, GPU, TensorRT or precision gets a
folder of its own; old ones can be deleted.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from pathlib import Path

import torch

from mtl_perception_ros.core.atomic_file import atomic_write_json
from mtl_perception_ros.core.inference_backends import (BEV_FILE, CAMERA_FILE, CUDA_PROVIDER, TENSORRT_PROVIDER,
                                                        BackendError, default_onnx_dir, read_export_report)

MARKER_FILE = 'engines.json'
PRECISIONS = ('fp32', 'fp16', 'bf16')


def _tensorrt_version() -> str:
    try:
        import tensorrt
        return tensorrt.__version__
    except ImportError:
        return 'ort'     # the TensorRT libraries ONNX Runtime loads; their version is not exposed


def engine_key(onnx_dir, device: torch.device, precision: str, max_views: int) -> str:
    """Cache key: graphs' hash, GPU name and compute capability, TensorRT version, precision, max views."""
    digest = hashlib.sha256()
    for name in (CAMERA_FILE, BEV_FILE):
        digest.update((Path(onnx_dir) / name).read_bytes())
    index = device.index or 0
    gpu = re.sub(r'[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(index)).strip('-')
    major, minor = torch.cuda.get_device_capability(index)
    return f'{digest.hexdigest()[:12]}_{gpu}_sm{major}{minor}_trt{_tensorrt_version()}_{precision}_v{max_views}'


def _shapes(report: dict, max_views: int) -> dict:
    """The TensorRT profile: min / opt / max shape strings of both inputs."""
    height, width = report['image_hw']
    canvas = report['graphs'][1]['inputs']['canvas'][1:]
    image = f'3x{height}x{width}'
    canvas = 'x'.join(str(int(d)) for d in canvas)
    return {'trt_profile_min_shapes': f'image:1x{image},canvas:1x{canvas}',
            'trt_profile_opt_shapes': f'image:{max_views}x{image},canvas:1x{canvas}',
            'trt_profile_max_shapes': f'image:{max_views}x{image},canvas:1x{canvas}'}


def engine_providers(onnx_dir, report: dict, device: torch.device, precision: str, max_views: int = 1,
                     require_built: bool = True) -> list:
    """The execution providers (TensorRT with the cache folder of this model / GPU / precision, CUDA
    for what TensorRT does not take) for an InferenceSession; report: the export's, as
    read_export_report gives it. require_built: BackendError when the engines were not built by
    `mtl_perception_build_engines`."""
    if precision not in PRECISIONS:
        raise BackendError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    folder = Path(onnx_dir) / 'tensorrt' / engine_key(onnx_dir, device, precision, max_views)
    if require_built and not (folder / MARKER_FILE).is_file():
        raise BackendError(f'no TensorRT engines for this model, GPU and precision {precision} in {folder}: build '
                           f'them first (minutes) with `mtl_perception_build_engines --onnx-dir {onnx_dir} --precision '
                           f'{precision} --max-views {max_views}`')
    options = {'device_id': device.index or 0, 'trt_engine_cache_enable': True, 'trt_engine_cache_path': str(folder),
               'trt_timing_cache_enable': True, 'trt_timing_cache_path': str(folder),
               'trt_fp16_enable': precision == 'fp16', **_shapes(report, max_views)}
    if precision == 'bf16':
        options['trt_bf16_enable'] = True
    return [(TENSORRT_PROVIDER, options), (CUDA_PROVIDER, {'device_id': device.index or 0})]


def build_engines(onnx_dir, device: torch.device, precision: str, max_views: int, log=print) -> Path:
    """Build (or find) the engines; returns their folder. Prints each step with its time."""
    from mtl_perception_ros.core.inference_backends import OnnxRuntimeBranches

    onnx_dir = Path(onnx_dir)
    report = read_export_report(onnx_dir)
    providers = engine_providers(onnx_dir, report, device, precision, max_views, require_built=False)
    folder = Path(providers[0][1]['trt_engine_cache_path'])
    if (folder / MARKER_FILE).is_file():
        log(f'engines already built: {folder}')
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    log(f'building TensorRT engines ({precision}, 1..{max_views} views) for {onnx_dir} on '
        f'{torch.cuda.get_device_name(device.index or 0)} into {folder}')
    start = time.monotonic()
    branches = OnnxRuntimeBranches(onnx_dir, device, providers, threads=1, name='tensorrt')
    log(f'  sessions created (engines built or loaded) in {time.monotonic() - start:.1f} s; providers '
        f'{", ".join(branches.providers)}')
    height, width = report['image_hw']
    canvas_shape = [int(d) for d in report['graphs'][1]['inputs']['canvas'][1:]]
    timings = {}
    for views in sorted({1, max_views}):
        step = time.monotonic()
        image = torch.zeros(views, 3, height, width, device=device)
        branches.camera_branch(image)
        timings[f'camera_{views}'] = time.monotonic() - step
        log(f'  camera graph, {views} view(s): {timings[f"camera_{views}"]:.1f} s')
    step = time.monotonic()
    branches.bev_branch(torch.zeros([1] + canvas_shape, device=device))
    timings['bev'] = time.monotonic() - step
    log(f'  BEV graph: {timings["bev"]:.1f} s')
    atomic_write_json(folder / MARKER_FILE, {
        'onnx_dir': str(onnx_dir.resolve()), 'precision': precision, 'max_views': max_views,
        'gpu': torch.cuda.get_device_name(device.index or 0), 'providers': list(branches.providers),
        'build_s': round(time.monotonic() - start, 1), 'steps_s': {k: round(v, 1) for k, v in timings.items()},
        'checkpoint_sha256': report.get('checkpoint_sha256')})
    log(f'done in {time.monotonic() - start:.1f} s: {folder / MARKER_FILE}')
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='mtl_perception_build_engines', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--checkpoint', help='checkpoint .pt: its export folder is <stem>_onnx next to it')
    parser.add_argument('--onnx-dir', help='the export folder (training.export.to_onnx --out)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp16')
    parser.add_argument('--max-views', type=int, default=1, help='most camera images per frame (the cameras)')
    parser.add_argument('--device', default='cuda:0')
    options = parser.parse_args(argv)
    if not options.onnx_dir and not options.checkpoint:
        parser.error('give --onnx-dir or --checkpoint')
    onnx_dir = Path(options.onnx_dir) if options.onnx_dir else default_onnx_dir(options.checkpoint)
    if options.max_views < 1:
        parser.error('--max-views must be >= 1')
    if not torch.cuda.is_available():
        print('error: TensorRT engines need a CUDA GPU; none is visible here', file=sys.stderr)
        return 2
    try:
        if options.checkpoint:
            read_export_report(onnx_dir, options.checkpoint)
        build_engines(onnx_dir, torch.device(options.device), options.precision, options.max_views)
    except BackendError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
