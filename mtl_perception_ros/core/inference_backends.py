"""Who runs the model's two dense networks: torch, ONNX Runtime or TensorRT (through ONNX Runtime).

MultiTaskNet.forward has three stages: `camera_branch` (image -> camera features, semantic
logits), `lidar_canvas` (points -> camera-painted pillar canvas: data-dependent shapes, torch here;
core.onnx_inference runs its NumPy twin, core.lidar_canvas_np, without torch) and `bev_branch`
(canvas -> heatmap, box regression). The two dense ones are what
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

from pathlib import Path

import numpy as np
import torch

from mtl_perception_ros.core.model import fold_batch_norms
from mtl_perception_ros.core.onnx_files import (  # noqa: F401 - part of this module's interface
    BACKENDS, BEV_FILE, BEV_INT8_FILE, CAMERA_FILE, CAMERA_INT8_FILE, CPU_PROVIDER, CUDA_PROVIDER, PRECISIONS,
    REPORT_FILE, TENSORRT_PROVIDER, BackendError, available_cpus, default_onnx_dir, file_sha256, import_onnxruntime,
    int8_graphs, read_export_report, resolve_threads, session_options)



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


class OnnxRuntimeBranches:
    """camera_branch / bev_branch in ONNX Runtime sessions of an export (module docstring).

    device: the torch device the rest of the model runs on; inputs and outputs are torch tensors
    there. On the CPU they are handed over without copies (numpy views); on CUDA through IO
    binding of the tensors' device memory. providers: the execution providers in priority order
    with their options, as onnxruntime.InferenceSession takes them; name: the backend's name; files:
    the camera and BEV graphs in onnx_dir (the fp32 ones, or the int8 ones of training.export.to_int8)."""

    def __init__(self, onnx_dir, device: torch.device, providers, threads: int = 1, name: str = 'onnxruntime',
                 files: tuple[str, str] = (CAMERA_FILE, BEV_FILE)):
        onnxruntime = import_onnxruntime()
        self.name = name
        self.threads = int(threads)
        self.device = torch.device(device)
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        missing = [p for p in wanted if p not in onnxruntime.get_available_providers()]
        if missing:
            raise BackendError(f'ONNX Runtime {onnxruntime.__version__} here has no {", ".join(missing)} (it has '
                               f'{", ".join(onnxruntime.get_available_providers())}): install onnxruntime-gpu with '
                               'CUDA / TensorRT, or use backend onnxruntime on the CPU or backend torch')
        options = session_options(onnxruntime, threads)
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
