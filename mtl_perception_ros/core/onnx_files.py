"""The ONNX export folder and ONNX Runtime sessions: torch-free, shared by the torch-based backends
(core.inference_backends) and the ONNX-Runtime-only inference (core.onnx_inference).

An export folder (`onnx_dir`; default `<checkpoint stem>_onnx` next to the checkpoint, written by
training.export.to_onnx) holds camera.onnx, bev.onnx, onnx_export.json (with the checkpoint's
sha256 and the check against torch), the checkpoint's metadata (model_info.json) and the pillar
encoder's folded weights (pillars.npz); training.export.to_int8 adds the int8 graphs.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

BACKENDS = ('torch', 'onnxruntime', 'tensorrt')
PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8')
CAMERA_FILE = 'camera.onnx'
BEV_FILE = 'bev.onnx'
CAMERA_INT8_FILE = 'camera_int8.onnx'     # training.export.to_int8 (backend onnxruntime, precision int8)
BEV_INT8_FILE = 'bev_int8.onnx'
REPORT_FILE = 'onnx_export.json'
CPU_PROVIDER, CUDA_PROVIDER, TENSORRT_PROVIDER = ('CPUExecutionProvider', 'CUDAExecutionProvider',
                                                  'TensorrtExecutionProvider')


class BackendError(ValueError):
    """A backend cannot run here (missing package, provider, export or engines): the message says
    what to install or run."""


def default_onnx_dir(checkpoint_path) -> Path:
    """Where training.export.to_onnx writes a checkpoint's graphs by default: model.pt -> model_onnx/."""
    path = Path(checkpoint_path)
    return path.with_name(f'{path.stem}_onnx')


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int) -> int:
    """`inference_threads`: 0 = every available core but one (the executor thread's), but at
    least 2 where there are 2: on a 2-core machine one thread made the node slower end to end
    (p95 91 vs 66 ms, docs/node.md#backends-and-speed), the executor needs little."""
    cpus = available_cpus()
    return int(threads) if threads > 0 else min(cpus, max(2, cpus - 1))


METADATA_FILE = 'model_info.json'         # the checkpoint's metadata (core.checkpoint_info.METADATA_KEYS)
PILLARS_FILE = 'pillars.npz'              # weight (F, Cp), bias (Cp,): the folded pillar encoder


def read_export_report(onnx_dir, checkpoint_path=None) -> dict:
    """The export's onnx_export.json, checked: both graphs there, its check passed and (with
    `checkpoint_path`) made from that checkpoint. Raises BackendError naming what to run."""
    onnx_dir = Path(onnx_dir)
    export = f'python -m training.export.to_onnx --checkpoint {checkpoint_path or "MODEL.pt"} --out {onnx_dir}'
    missing = [name for name in (CAMERA_FILE, BEV_FILE, REPORT_FILE) if not (onnx_dir / name).is_file()]
    if missing:
        raise BackendError(f'no ONNX export in {onnx_dir} ({", ".join(missing)} missing): export it with `{export}` '
                           '(or set onnx_dir)')
    try:
        report = json.loads((onnx_dir / REPORT_FILE).read_text(encoding='utf-8'))
    except (OSError, ValueError) as error:
        raise BackendError(f'{onnx_dir / REPORT_FILE}: unreadable ({error}): export again with `{export}`') from None
    if not report.get('check', {}).get('ok', False):
        raise BackendError(f'{onnx_dir}: the export\'s check against torch failed ({onnx_dir / REPORT_FILE}, '
                           '"check"): its graphs are not used')
    if checkpoint_path is not None:
        expected = report.get('checkpoint_sha256')
        actual = file_sha256(checkpoint_path)
        if expected != actual:
            raise BackendError(f'{onnx_dir} was exported from another checkpoint (sha256 {str(expected)[:12]}, '
                               f'{checkpoint_path} is {actual[:12]}): export again with `{export}`')
    return report


def int8_graphs(onnx_dir, report: dict, checkpoint_path=None) -> tuple[str, str]:
    """The int8 camera and BEV graphs of an export, when training.export.to_int8 made them from its
    present fp32 graphs and its check passed; else BackendError naming the command to run."""
    onnx_dir = Path(onnx_dir)
    command = (f'python -m training.export.to_int8 --checkpoint {checkpoint_path or "MODEL.pt"} --chunks CHUNK_DIR '
               f'--onnx-dir {onnx_dir}')
    entry = report.get('int8')
    if not entry:
        raise BackendError(f'{onnx_dir} has no int8 graphs (precision int8): make them with `{command}`')
    if not entry.get('ok', False):
        raise BackendError(f'{onnx_dir}: the int8 graphs failed their check against fp32 ({onnx_dir / REPORT_FILE}, '
                           '"int8"): they are not used; run with precision fp32')
    files = (CAMERA_INT8_FILE, BEV_INT8_FILE)
    for fp32_name, int8_name in zip((CAMERA_FILE, BEV_FILE), files):
        if not (onnx_dir / int8_name).is_file():
            raise BackendError(f'{onnx_dir / int8_name} is missing: make it again with `{command}`')
        if entry.get('from_sha256', {}).get(fp32_name) != file_sha256(onnx_dir / fp32_name):
            raise BackendError(f'{onnx_dir / int8_name} was made from another {fp32_name}: make it again with '
                               f'`{command}`')
    return files


def import_onnxruntime():
    """The onnxruntime module, or BackendError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise BackendError('backends onnxruntime and tensorrt need the onnxruntime Python package '
                           '(pip install onnxruntime, or onnxruntime-gpu for CUDA / TensorRT)') from None
    return onnxruntime


def session_options(onnxruntime, threads: int):
    """SessionOptions of every session here: `threads` intra-op threads, sequential, no spinning."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # no busy-waiting between runs: its spinning threads would take the cores torch, OpenCV and
    # the executor need between the two graphs (2x slower end to end on 2 cores)
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return options
