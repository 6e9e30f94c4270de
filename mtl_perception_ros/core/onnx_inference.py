"""The inference core on ONNX Runtime's CPU provider, in a process that never imports torch.

torch alone is ~190 MB of a node's resident memory. With backend onnxruntime on the CPU the dense
networks are ONNX graphs already; what stayed in torch between them is done here in NumPy: the
point -> pillar canvas (core.lidar_canvas_np, checked against MultiTaskNet.lidar_canvas) and the
decoding (core.decode.decode_detections_np). The export folder carries everything else the
checkpoint would have given: its metadata (model_info.json) and the pillar encoder's folded
weights (pillars.npz), written by training.export.to_onnx and tied to the checkpoint by its sha256.

`OnnxPerceptionInference` has PerceptionInference's interface (run_views, __call__, warm_up,
info, grid, labels, backend, precision, device, threads, execution_providers), so the frame
pipeline, the node and offline replays take either. `open_inference` picks one for a node's
parameters.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from mtl_perception_ros.core.checkpoint_info import checkpoint_info
from mtl_perception_ros.core.decode import decode_detections_np
from mtl_perception_ros.core.inference_common import InferenceOutputs, InferenceResult, class_map_on_cpu
from mtl_perception_ros.core.lidar_canvas_np import lidar_canvas_np
from mtl_perception_ros.core.model_input import model_input
from mtl_perception_ros.core.onnx_files import (BEV_FILE, CAMERA_FILE, CPU_PROVIDER, CUDA_PROVIDER, METADATA_FILE,
                                                PILLARS_FILE, PRECISIONS, BackendError, default_onnx_dir,
                                                import_onnxruntime, int8_graphs, read_export_report,
                                                resolve_threads, session_options)
from mtl_perception_ros.core.semantic_map import SemanticMap


class RuntimeFilesMissing(BackendError):
    """The export has no model_info.json / pillars.npz (made before the torch-free runtime)."""


class OnnxPerceptionInference(InferenceOutputs):
    """An ONNX export run by ONNX Runtime on the CPU: PerceptionInference without torch.

    precision: 'int8' runs the export's checked int8 graphs (training.export.to_int8), any other
    the fp32 ones (what PerceptionInference's backend onnxruntime does on the CPU). threads: CPU
    threads of ONNX Runtime and OpenCV (0 = all cores but one; None = 1 core less than all, as 0).
    Raises BackendError when the export, its runtime files or onnxruntime are missing or stale."""

    backend = 'onnxruntime'
    device = 'cpu'

    def __init__(self, checkpoint_path, precision: str = 'fp32', score_threshold: float = 0.3,
                 max_detections: int = 100, nms_radius_m: float | None = None, onnx_dir=None,
                 threads: int | None = None, max_views: int = 1):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        checkpoint_path = Path(checkpoint_path)
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f'{checkpoint_path}: no such checkpoint file')
        onnx_dir = Path(onnx_dir) if onnx_dir else default_onnx_dir(checkpoint_path)
        report = read_export_report(onnx_dir, checkpoint_path)
        info, self.pillar_weight, self.pillar_bias = read_runtime_files(onnx_dir, checkpoint_path)
        files = int8_graphs(onnx_dir, report, checkpoint_path) if precision == 'int8' else (CAMERA_FILE, BEV_FILE)
        self.precision = 'int8' if precision == 'int8' else 'fp32'
        self.threads = resolve_threads(threads or 0)
        cv2.setNumThreads(self.threads)
        onnxruntime = import_onnxruntime()
        options = session_options(onnxruntime, self.threads)
        self.camera = onnxruntime.InferenceSession(str(onnx_dir / files[0]), options, providers=[CPU_PROVIDER])
        self.bev = onnxruntime.InferenceSession(str(onnx_dir / files[1]), options, providers=[CPU_PROVIDER])
        self.execution_providers = tuple(self.camera.get_providers())
        self._set_outputs(info, score_threshold, max_detections, nms_radius_m)

    def run_views(self, points: np.ndarray, views, want_class_map: bool = True, class_map_hw=None):
        """PerceptionInference.run_views: boxes from `points` fused with the camera `views`
        ((image_rgb, camera_matrix, vehicle_to_camera) each), each view's class map."""
        timings = {}
        start = time.perf_counter()
        points = np.ascontiguousarray(points[:, :4], dtype=np.float32)
        views = list(views)
        if views:
            inputs = [model_input(image, k, self.info.image_hw) for image, k, _ in views]
            images = np.stack([np.transpose(image, (2, 0, 1)) for image, _ in inputs]).astype(np.float32)
            matrices = np.stack([k for _, k in inputs]).astype(np.float32)
            transforms = np.stack([np.asarray(t, np.float32) for _, _, t in views])
        timings['preprocess'] = _elapsed_ms(start)

        start = time.perf_counter()
        features = sem_logits = None
        if views:
            features, sem_logits = self.camera.run(None, {'image': images})
        canvas = lidar_canvas_np(points, self.grid, self.pillar_weight, self.pillar_bias, features,
                                 matrices if views else None, transforms if views else None,
                                 self.info.image_hw if views else None)
        heatmap, regression = self.bev.run(None, {'canvas': canvas})
        timings['model'] = _elapsed_ms(start)

        start = time.perf_counter()
        detections = decode_detections_np(heatmap[0], regression[0], self.grid, score_threshold=self.score_threshold,
                                          max_detections=self.max_detections, nms_radius_m=self.nms_radius_m)
        sizes = [image.shape[:2] for image, _, _ in views] if class_map_hw is None else list(class_map_hw)
        semantic_maps = [SemanticMap(class_map_on_cpu(sem_logits[v], self.info.image_hw), sizes[v])
                         if want_class_map else None for v in range(len(views))]
        timings['postprocess'] = _elapsed_ms(start)
        return InferenceResult(detections.boxes, detections.classes, detections.scores, semantic_maps,
                               not views, timings)


def read_runtime_files(onnx_dir, checkpoint_path=None):
    """(CheckpointInfo, pillar weight (F, Cp) float32, bias (Cp,) float32) from an export folder's
    model_info.json and pillars.npz; BackendError when they are missing or unreadable (an export
    made before they existed: export again)."""
    onnx_dir = Path(onnx_dir)
    export = f'python -m training.export.to_onnx --checkpoint {checkpoint_path or "MODEL.pt"} --out {onnx_dir}'
    missing = [name for name in (METADATA_FILE, PILLARS_FILE) if not (onnx_dir / name).is_file()]
    if missing:
        raise RuntimeFilesMissing(f'{onnx_dir} has no {" or ".join(missing)} (an export older than the torch-free runtime): '
                           f'export again with `{export}`')
    try:
        metadata = json.loads((onnx_dir / METADATA_FILE).read_text(encoding='utf-8'))
        with np.load(onnx_dir / PILLARS_FILE, allow_pickle=False) as stored:
            weight, bias = np.asarray(stored['weight'], np.float32), np.asarray(stored['bias'], np.float32)
    except (OSError, ValueError, KeyError) as error:
        raise BackendError(f'{onnx_dir}: unreadable {METADATA_FILE} / {PILLARS_FILE} ({error}): export again with '
                           f'`{export}`') from None
    info = checkpoint_info(onnx_dir / METADATA_FILE, metadata)
    if weight.ndim != 2 or bias.shape != (weight.shape[1],) or weight.shape[1] != info.model_config.pillar_channels:
        raise BackendError(f'{onnx_dir / PILLARS_FILE}: weight {weight.shape} / bias {bias.shape} do not fit the '
                           f'model ({info.model_config.pillar_channels} pillar channels): export again with `{export}`')
    return info, weight, bias


def torch_free_possible(device: str, backend: str) -> bool:
    """Backend onnxruntime on the CPU: asked for ('cpu'), or 'auto' where onnxruntime has no CUDA."""
    if backend != 'onnxruntime':
        return False
    if device == 'cpu':
        return True
    if device != 'auto':
        return False
    try:
        return CUDA_PROVIDER not in import_onnxruntime().get_available_providers()
    except BackendError:
        return False


def open_inference(checkpoint_path, device: str = 'auto', backend: str = 'torch', precision: str = 'fp32',
                   onnx_dir=None, threads: int | None = None, max_views: int = 1, **decoding):
    """(inference, note): OnnxPerceptionInference where it can run (torch_free_possible and the
    export has its runtime files), else core.inference.PerceptionInference; `note` says why a
    torch-free run was not possible ('' otherwise)."""
    note = ''
    if torch_free_possible(device, backend):
        try:
            return OnnxPerceptionInference(checkpoint_path, precision=precision, onnx_dir=onnx_dir, threads=threads,
                                           max_views=max_views, **decoding), ''
        except RuntimeFilesMissing as error:
            note = f'torch is loaded for the pillar step: {error}'
    from mtl_perception_ros.core.inference import PerceptionInference
    return PerceptionInference(checkpoint_path, device=device, precision=precision, backend=backend,
                               onnx_dir=onnx_dir, threads=threads, max_views=max_views, **decoding), note


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
