"""Semantic class maps: made once at the model input size, then at each size a subscriber needs.

The semantic head gives logits at 1/4 (or 1/2) of the model input. The class map is the
arg-max of those logits upsampled bilinearly to the model input size
(core.inference.PerceptionInference), and a camera-size map is that one resized
nearest-neighbour (`SemanticMap`): upsampling K logit planes to 1920 x 1208 would cost far more
for a difference only at class borders. Colours are looked up
at the input size and then resized, which gives exactly the colours of the camera-size class map
(nearest-neighbour picks the same source pixel for every channel), in half the time.
"""
from __future__ import annotations

import cv2
import numpy as np


class SemanticMap:
    """One camera's class map: `input_labels` (h, w) uint8 at the model input size, shown at
    `output_hw` (the camera image's rows, cols)."""

    def __init__(self, input_labels: np.ndarray, output_hw: tuple[int, int]):
        self.input_labels = input_labels
        self.output_hw = tuple(int(v) for v in output_hw)
        self._labels = None

    def _resized(self, image: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if image.shape[:2] == self.output_hw:
            if out is None:
                return image
            np.copyto(out, image)
            return out
        size = (self.output_hw[1], self.output_hw[0])
        if out is None:
            return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
        return cv2.resize(image, size, dst=out, interpolation=cv2.INTER_NEAREST)

    def labels(self, out: np.ndarray | None = None) -> np.ndarray:
        """(H, W) uint8 class ids at output_hw; into `out` (e.g. a message buffer) when given, else
        made once and kept."""
        if out is not None:
            return self._resized(self.input_labels, out)
        if self._labels is None:
            self._labels = self._resized(self.input_labels, None)
        return self._labels

    def colors(self, label_set, out: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 colours of the class map at output_hw (label_set: core.labels.LabelSet,
        LabelSet.colorize at the input size); into `out` when given."""
        return self._resized(label_set.colorize(self.input_labels), out)
