"""The one resize of a camera image to the model's input size, used by the training samples
(training.data.dataset) and by the inference core on every device, so the network sees the
same pixels in training and in the node. The camera matrix is scaled with it
(mtl_perception_ros.core.camera.scale_camera_matrix)."""
from __future__ import annotations

import cv2
import numpy as np

from mtl_perception_ros.core.camera import scale_camera_matrix


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W[, C]) image at `size_hw` (rows, cols): OpenCV INTER_AREA when both sides shrink
    (averages the covered pixels, no aliasing), INTER_LINEAR otherwise. The input itself when it
    already has that size."""
    height, width = (int(v) for v in size_hw)
    from_hw = image.shape[:2]
    if from_hw == (height, width):
        return image
    shrinking = height < from_hw[0] and width < from_hw[1]
    return cv2.resize(np.ascontiguousarray(image), (width, height),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_camera_image(image: np.ndarray, camera_matrix: np.ndarray,
                        size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(image resized to `size_hw`, its 3x3 camera matrix) from an image and its camera matrix."""
    return (resize_image(image, size_hw),
            scale_camera_matrix(camera_matrix, image.shape[:2], tuple(int(v) for v in size_hw)))
