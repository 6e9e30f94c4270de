"""The inference core: checkpoint + numpy sensor data -> boxes and a class map.

ROS-free and shared by the node and offline replay/evaluation, so both compute exactly the same
thing. Inputs are in the project's conventions (mtl_perception_ros.core.camera): points (N, 4) in the
vehicle (LiDAR) frame with reflectance in [0, 1]; an undistorted RGB image with its
`camera_matrix` (any size: brought to the model input by core.model_input, a no-op for an image
already at that size, as the frame pipeline gives them); `vehicle_to_camera` into the camera
optical frame. The dense networks run on the backend asked for (core.inference_backends).
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mtl_perception_ros.core.checkpoint import load_checkpoint
from mtl_perception_ros.core.decode import decode_detections
from mtl_perception_ros.core.inference_backends import PRECISIONS, make_branches, resolve_threads
from mtl_perception_ros.core.inference_common import (  # noqa: F401 - InferenceResult: part of the interface
    InferenceOutputs, InferenceResult, class_map_on_cpu)
from mtl_perception_ros.core.model_input import model_input
from mtl_perception_ros.core.semantic_map import SemanticMap


def pick_device(device: str = 'auto') -> torch.device:
    """'auto' -> CUDA when available, else CPU; otherwise the named device ('cpu', 'cuda:0')."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    resolved = torch.device(device)
    if resolved.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' asked for, but CUDA is not available (use 'auto' or 'cpu')")
    if resolved.type == 'cuda' and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device '{device}' asked for, but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return resolved


class PerceptionInference(InferenceOutputs):
    """Loads a checkpoint once and runs single frames.

    precision: 'fp32', 'fp16' or 'bf16' (half precisions on CUDA; on the CPU bf16 with backend
    torch where the CPU has it natively, else fp32; `precision` says what runs), or 'int8' (backend
    onnxruntime on the CPU: the export's checked int8 graphs). backend: 'torch', 'onnxruntime' or 'tensorrt'
    (core.inference_backends; `onnx_dir` = the export, default next to the checkpoint; `max_views`
    = most cameras per frame, for TensorRT's profile). threads: CPU threads of torch, OpenCV and
    ONNX Runtime in this process (0 = all cores but one; None = leave the libraries' defaults).
    Raises core.inference_backends.BackendError when the backend cannot run here.
    """

    def __init__(self, checkpoint_path, device: str = 'auto', precision: str = 'fp32',
                 score_threshold: float = 0.3, max_detections: int = 100,
                 nms_radius_m: float | None = None, backend: str = 'torch', onnx_dir=None,
                 threads: int | None = None, max_views: int = 1):
        self.device = pick_device(device)
        self.model, self.info = load_checkpoint(checkpoint_path, map_location='cpu')
        self.model.to(self.device).eval()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.threads = None if threads is None else resolve_threads(threads)
        if self.threads is not None:
            torch.set_num_threads(self.threads)
            cv2.setNumThreads(self.threads)
        self.branches, self.precision = make_branches(backend, self.model, checkpoint_path, self.device, precision,
                                                      self.threads or torch.get_num_threads(), onnx_dir, max_views)
        self.backend = backend
        self._set_outputs(self.info, score_threshold, max_detections, nms_radius_m)

    @property
    def execution_providers(self) -> tuple:
        """ONNX Runtime's providers in use, best first (() for backend torch)."""
        return self.branches.providers

    def _autocast(self):
        dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(self.precision) if self.backend == 'torch' else None
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @torch.inference_mode()
    def run_views(self, points: np.ndarray, views, want_class_map: bool = True,
                  class_map_hw=None) -> InferenceResult:
        """Detect boxes from `points` fused with the camera `views` and segment each view's image.

        points (N, >=4) float: x, y, z (m, vehicle frame), reflectance [0, 1]. views: a sequence of
        (image_rgb (H, W, 3) uint8 undistorted, camera_matrix (3, 3) for that image, vehicle_to_camera
        (4, 4)), one per camera, any sizes; the camera branch runs on all of them in one batch and
        each point is painted by one view that sees it (core.model). No views: LiDAR-only.
        class_map_hw: per view the (rows, cols) its class map is shown at (default: its image's).
        """
        timings = {}
        start = time.perf_counter()
        points_t = torch.from_numpy(np.ascontiguousarray(points[:, :4], dtype=np.float32)).to(self.device)
        points_batch = torch.zeros(points_t.shape[0], dtype=torch.long, device=self.device)
        views = list(views)
        kwargs = {'batch_size': 1}
        if views:
            images, matrices = zip(*(self.model_image(image, k) for image, k, _ in views))
            kwargs.update(
                image=torch.cat(images),                                                  # (V, 3, in_h, in_w)
                camera_matrix=torch.as_tensor(np.stack(matrices), dtype=torch.float32, device=self.device),
                vehicle_to_camera=torch.as_tensor(np.stack([t for _, _, t in views]), dtype=torch.float32,
                                                  device=self.device),
                view_sample=torch.zeros(len(views), dtype=torch.long, device=self.device))
        timings['preprocess'] = _elapsed_ms(start, self.device)

        start = time.perf_counter()
        with self._autocast():
            outputs = self.model(points_t, points_batch, branches=self.branches, **kwargs)
        timings['model'] = _elapsed_ms(start, self.device)

        start = time.perf_counter()
        detections = decode_detections(outputs['bbox_heatmap'].float(), outputs['bbox_reg'].float(), self.grid,
                                       score_threshold=self.score_threshold,
                                       max_detections=self.max_detections, nms_radius_m=self.nms_radius_m)[0]
        sizes = [image.shape[:2] for image, _, _ in views] if class_map_hw is None else list(class_map_hw)
        semantic_maps = [SemanticMap(self._class_map(outputs['sem_logits'][v:v + 1]), sizes[v]) if want_class_map
                         else None for v in range(len(views))]
        timings['postprocess'] = _elapsed_ms(start, self.device)
        return InferenceResult(detections.boxes, detections.classes, detections.scores, semantic_maps,
                               not views, timings)

    def model_image(self, image_rgb: np.ndarray, camera_matrix: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """RGB uint8 (H, W, 3) and its K -> float (1, 3, in_h, in_w) on the device and K at that size.

        Resized on the CPU by the same function as the training samples
        (mtl_perception_ros.core.model_input) on every device, so the model sees the pixels it was
        trained on; uploading the small image is also cheaper than the camera-size one.
        """
        image, k_model = model_input(image_rgb, camera_matrix, self.info.image_hw)
        image_t = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, non_blocking=True)
        return image_t.permute(2, 0, 1).unsqueeze(0).float(), k_model

    def _class_map(self, sem_logits: torch.Tensor) -> np.ndarray:
        """Bilinear logits -> arg-max at the model input size (core.semantic_map: shown at the
        camera's size by a nearest resize). On CPU the logits are resized by OpenCV (same values
        as F.interpolate, ~4x faster)."""
        in_h, in_w = self.info.image_hw
        if self.device.type == 'cpu':
            labels = class_map_on_cpu(sem_logits[0].float().numpy(), (in_h, in_w))
        else:
            logits = F.interpolate(sem_logits.float(), size=(in_h, in_w), mode='bilinear', align_corners=False)
            labels = logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
        return labels


def _elapsed_ms(start: float, device: torch.device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000.0
