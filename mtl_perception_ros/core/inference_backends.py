"""Who runs the model's two dense networks: torch, ONNX Runtime or TensorRT (through ONNX Runtime).

MultiTaskNet.forward has three stages: `camera_branch` (image -> camera features, semantic
logits), `lidar_canvas` (points -> camera-painted pillar canvas: data-dependent shapes, always
torch) and `bev_branch` (canvas -> heatmap, box regression). The two dense ones are what
training.export.to_onnx exports; a backend here runs them, and forward composes the stages the
same way for every backend (its `branches` argument), so there is one forward.

- `torch`: the checkpoint's own modules (fp16 / bf16 autocast on CUDA).
- `onnxruntime`: the export's camera.onnx and bev.onnx in an ONNX Runtime session: the CPU
  execution provider on the CPU, the CUDA one on a CUDA device (fp32 graphs); with precision
  int8 on the CPU, camera_int8.onnx and bev_int8.onnx, quantized ahead of time and checked against
  the fp32 graphs by training.export.to_int8 (int8_graphs refuses them otherwise).
- `tensorrt`: the same graphs through ONNX Runtime's TensorRT execution provider (fp32 or fp16,
  bf16 where the TensorRT build has it), with TensorRT engines built AHEAD of time by
  `mtl_perception_build_engines` (core/tensorrt_engines.py) and cached by model hash, GPU and
  precision: the node refuses to start without them rather than build them on its first frame.

The export folder (`onnx_dir`; default `<checkpoint stem>_onnx` next to the checkpoint) holds
onnx_export.json with the checkpoint's sha256: graphs of another checkpoint are refused, since the
torch pillar stage would then not match them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from mtl_perception_ros.core.model import fold_batch_norms

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


class TorchBranches:
    """The checkpoint's own camera_branch / bev_branch (MultiTaskNet.forward's default).

    The BatchNorms are folded into their convolutions (core.model.fold_batch_norms), and on the
    CPU the convolutions run channels-last (NHWC: oneDNN's native layout; 1.3-1.4x faster for both
    branches here), with contiguous outputs for what follows; the same numbers up to rounding."""

    name = 'torch'

    def __init__(self, model, device: torch.device):
        self.model = fold_batch_norms(model.eval())
        self.providers: tuple = ()
        self.channels_last = device.type == 'cpu'
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    def camera_branch(self, image: torch.Tensor):
        return self._run(self.model.camera_branch, image)

    def bev_branch(self, canvas: torch.Tensor):
        return self._run(self.model.bev_branch, canvas)

    def _run(self, branch, value: torch.Tensor):
        if not self.channels_last:
            return branch(value)
        return tuple(output.contiguous() for output in branch(value.contiguous(memory_format=torch.channels_last)))


def cpu_has_bf16() -> bool:
    """oneDNN runs bf16 natively on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_precision(precision: str) -> str:
    """What runs on the CPU when `precision` is asked: bf16 where the CPU has it natively, else fp32."""
    return 'bf16' if precision == 'bf16' and cpu_has_bf16() else 'fp32'


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


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError('backends onnxruntime and tensorrt need the onnxruntime Python package '
                           '(pip install onnxruntime, or onnxruntime-gpu for CUDA / TensorRT)') from None
    return onnxruntime


class OnnxRuntimeBranches:
    """camera_branch / bev_branch in ONNX Runtime sessions of an export (module docstring).

    device: the torch device the rest of the model runs on; inputs and outputs are torch tensors
    there. On the CPU they are handed over without copies (numpy views); on CUDA through IO
    binding of the tensors' device memory. providers: the execution providers in priority order
    with their options, as onnxruntime.InferenceSession takes them; name: the backend's name; files:
    the camera and BEV graphs in onnx_dir (the fp32 ones, or the int8 ones of training.export.to_int8)."""

    def __init__(self, onnx_dir, device: torch.device, providers, threads: int = 1, name: str = 'onnxruntime',
                 files: tuple[str, str] = (CAMERA_FILE, BEV_FILE)):
        onnxruntime = _onnxruntime()
        self.name = name
        self.threads = int(threads)
        self.device = torch.device(device)
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        missing = [p for p in wanted if p not in onnxruntime.get_available_providers()]
        if missing:
            raise BackendError(f'ONNX Runtime {onnxruntime.__version__} here has no {", ".join(missing)} (it has '
                               f'{", ".join(onnxruntime.get_available_providers())}): install onnxruntime-gpu with '
                               'CUDA / TensorRT, or use backend onnxruntime on the CPU or backend torch')
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # no busy-waiting between runs: its spinning threads would take the cores torch, OpenCV and
        # the executor need between the two graphs (2x slower end to end on 2 cores)
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        onnx_dir = Path(onnx_dir)
        self.camera = onnxruntime.InferenceSession(str(onnx_dir / files[0]), options, providers=list(providers))
        self.bev = onnxruntime.InferenceSession(str(onnx_dir / files[1]), options, providers=list(providers))
        self.providers = tuple(self.camera.get_providers())

    def camera_branch(self, image: torch.Tensor):
        return tuple(self._run(self.camera, 'image', image))

    def bev_branch(self, canvas: torch.Tensor):
        return tuple(self._run(self.bev, 'canvas', canvas))

    def _run(self, session, input_name: str, value: torch.Tensor) -> list[torch.Tensor]:
        value = value.float().contiguous()
        if self.device.type == 'cpu':
            outputs = session.run(None, {input_name: value.numpy()})
            return [torch.from_numpy(output) for output in outputs]
        return self._run_bound(session, input_name, value)

    def _run_bound(self, session, input_name: str, value: torch.Tensor) -> list[torch.Tensor]:
        """CUDA: the input and preallocated outputs bound by device pointer (no host round trip)."""
        binding = session.io_binding()
        index = self.device.index or 0
        binding.bind_input(input_name, 'cuda', index, np.float32, tuple(value.shape), value.data_ptr())
        outputs = []
        for output in session.get_outputs():
            shape = (value.shape[0],) + tuple(int(d) for d in output.shape[1:])
            tensor = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(output.name, 'cuda', index, np.float32, shape, tensor.data_ptr())
            outputs.append(tensor)
        torch.cuda.current_stream(self.device).synchronize()   # the input is written before ORT reads it
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outputs


def make_branches(backend: str, model, checkpoint_path, device: torch.device, precision: str, threads: int,
                  onnx_dir=None, max_views: int = 1):
    """(branches, precision in effect) for `backend` (BACKENDS); BackendError when it cannot run here.

    precision: 'fp32' | 'fp16' | 'bf16' as asked; on the CPU torch runs bf16 where the CPU has it
    (cpu_precision) and fp32 otherwise, onnxruntime runs the fp32 graphs (or on the CPU with
    'int8' the checked int8 ones: int8_graphs), tensorrt builds its engines in the precision asked."""
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision == 'int8' and (backend != 'onnxruntime' or device.type != 'cpu'):
        raise BackendError(f'precision int8 runs the quantized graphs of training.export.to_int8 with backend '
                           f'onnxruntime on the CPU, not backend {backend} on {device.type} (on CUDA: backend '
                           'tensorrt with fp16)')
    if backend == 'torch':
        return TorchBranches(model, device), precision if device.type == 'cuda' else cpu_precision(precision)
    onnx_dir = Path(onnx_dir) if onnx_dir else default_onnx_dir(checkpoint_path)
    report = read_export_report(onnx_dir, checkpoint_path)
    if backend == 'onnxruntime':
        if device.type == 'cuda' and precision != 'fp32':
            raise BackendError(f'backend onnxruntime runs the fp32 graphs of the export; precision {precision} '
                               'needs backend tensorrt (engines in that precision) or torch (autocast)')
        if precision == 'int8':
            return OnnxRuntimeBranches(onnx_dir, device, [CPU_PROVIDER], threads,
                                       files=int8_graphs(onnx_dir, report, checkpoint_path)), 'int8'
        providers = [CPU_PROVIDER] if device.type == 'cpu' else [(CUDA_PROVIDER, {'device_id': device.index or 0}),
                                                                  CPU_PROVIDER]
        return OnnxRuntimeBranches(onnx_dir, device, providers, threads), 'fp32'
    if device.type != 'cuda':
        raise BackendError("backend tensorrt needs a CUDA device (device 'auto' or 'cuda[:N]' on a machine with one)")
    from mtl_perception_ros.core.tensorrt_engines import engine_providers   # it imports this module
    providers = engine_providers(onnx_dir, report, device, precision, max_views, require_built=True)
    return OnnxRuntimeBranches(onnx_dir, device, providers, threads, name='tensorrt'), precision
