"""What every inference implementation shares (torch-free): the result type, the warm-up frames,
the one-view call and the CPU class map. Implementations: core.inference.PerceptionInference
(torch, and ONNX Runtime / TensorRT branches in it) and core.onnx_inference.OnnxPerceptionInference
(ONNX Runtime on the CPU, no torch in the process)."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class InferenceResult:
    """One frame's output. boxes (N, 7) vehicle frame, classes (N,) int64, scores (N,) float32;
    semantic_maps: one core.semantic_map.SemanticMap per camera view (None each when not asked
    for), shown at the view's `class_map_hw` (default: its image's size); class_maps: those as
    (H, W) uint8; class_map: the first view's (None without views); lidar_only: no camera was used
    (no view given); timings_ms: per stage."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    semantic_maps: list
    lidar_only: bool
    timings_ms: dict = field(default_factory=dict)

    @property
    def class_maps(self) -> list:
        return [None if m is None else m.labels() for m in self.semantic_maps]

    @property
    def class_map(self) -> np.ndarray | None:
        return self.class_maps[0] if self.semantic_maps else None


def warm_up_frames(inference, iterations: int = 2, num_points: int = 8000) -> None:
    """Run `iterations` dummy frames (random points, a black image at the model input size) through
    `inference`, so the first real one is not slowed by lazy initialisation."""
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(1, 60, num_points), rng.uniform(-30, 30, num_points),
                              rng.uniform(-2, 1, num_points), rng.uniform(0, 1, num_points)]).astype(np.float32)
    height, width = inference.info.image_hw
    image = np.zeros((height, width, 3), np.uint8)
    camera_matrix = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)
    vehicle_to_camera = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], np.float64)
    for _ in range(iterations):
        inference(points, image, camera_matrix, vehicle_to_camera, want_class_map=True)


def one_view_call(self, points: np.ndarray, image_rgb: np.ndarray | None, camera_matrix: np.ndarray | None,
                  vehicle_to_camera: np.ndarray | None, want_class_map: bool = True) -> InferenceResult:
    """One camera (or none): `run_views` with the view (image_rgb, camera_matrix, vehicle_to_camera),
    or LiDAR-only with image_rgb=None (the model was trained with camera dropout)."""
    if image_rgb is None:
        return self.run_views(points, [], want_class_map)
    if camera_matrix is None or vehicle_to_camera is None:
        raise ValueError('an image needs camera_matrix and vehicle_to_camera')
    return self.run_views(points, [(image_rgb, camera_matrix, vehicle_to_camera)], want_class_map)


def class_map_on_cpu(sem_logits: np.ndarray, image_hw) -> np.ndarray:
    """(K, h, w) float32 logits -> (H, W) uint8 arg-max at the model input size `image_hw`: the
    logits resized bilinearly by OpenCV (the values of F.interpolate, align_corners=False, ~4x
    faster), the first class on ties."""
    in_h, in_w = image_hw
    logits = np.ascontiguousarray(np.transpose(sem_logits, (1, 2, 0)), dtype=np.float32)   # (h, w, K)
    logits = cv2.resize(logits, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
    return logits.reshape(in_h, in_w, -1).argmax(axis=2).astype(np.uint8)


class InferenceOutputs:
    """The part of an inference class that is not the networks: the model's labels and grid (from
    `info`, a CheckpointInfo), the decoding settings (changed between frames by
    FramePipeline.configure_decoding), warm-up and the one-view call."""

    def _set_outputs(self, info, score_threshold: float, max_detections: int, nms_radius_m: float | None) -> None:
        self.info = info
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.nms_radius_m = nms_radius_m
        self.grid = info.bev_grid
        self.semantic_labels = info.semantic_labels
        self.detection_labels = info.detection_labels

    def warm_up(self, iterations: int = 2, num_points: int = 8000) -> None:
        """Run dummy frames so the first real one is not slowed by lazy initialisation."""
        warm_up_frames(self, iterations, num_points)

    __call__ = one_view_call
