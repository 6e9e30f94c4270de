"""Label sets (class names, ids and drawing colours) and colour maps.

A label set YAML (e.g. config/a2d2/semantic_classes.yaml) lists `classes` in id order, each with
a `name` and an RGB `color`; extra keys (like the `a2d2` source names used by the training
reader) are kept in `sources`. The same LabelSet travels inside checkpoints, so the node draws
with the colours the model was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LabelSet:
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    name: str = ''
    sources: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if len(self.names) != len(self.colors):
            raise ValueError(f'LabelSet {self.name!r}: {len(self.names)} names but {len(self.colors)} colours')
        if len(set(self.names)) != len(self.names):
            raise ValueError(f'LabelSet {self.name!r}: duplicate class names {self.names}')
        if len(self.names) >= IGNORE_INDEX:
            raise ValueError(f'LabelSet {self.name!r}: at most {IGNORE_INDEX - 1} classes')

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 lookup table: class id -> RGB; unused ids (and 255) are black."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[:len(self.colors)] = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        return table

    def colorize(self, class_map: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class ids -> (H, W, 3) uint8 RGB (255 and unused ids black)."""
        import cv2   # a table lookup in OpenCV is ~7x faster than numpy fancy indexing at camera size
        ids = np.ascontiguousarray(class_map, dtype=np.uint8)
        return cv2.LUT(cv2.merge([ids, ids, ids]), self.palette().reshape(256, 1, 3))

    def to_dict(self) -> dict:
        return {'name': self.name, 'names': list(self.names), 'colors': [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, values: dict) -> 'LabelSet':
        return cls(names=tuple(values['names']),
                   colors=tuple(tuple(int(v) for v in c) for c in values['colors']),
                   name=values.get('name', ''))

    @classmethod
    def from_yaml(cls, path) -> 'LabelSet':
        import yaml
        path = Path(path)
        with open(path, encoding='utf-8') as stream:
            doc = yaml.safe_load(stream)
        try:
            classes = doc['classes']
            names = tuple(str(c['name']) for c in classes)
            colors = tuple(tuple(int(v) for v in c['color']) for c in classes)
        except (KeyError, TypeError) as error:
            raise ValueError(f'{path}: expected `classes:` entries with `name` and `color` ({error})') from None
        sources = {str(c['name']): {k: v for k, v in c.items() if k not in ('name', 'color')}
                   for c in classes}
        return cls(names=names, colors=colors, name=str(doc.get('name', path.stem)), sources=sources)


def blend(image_rgb: np.ndarray, overlay_rgb: np.ndarray, alpha: float = 0.5,
          mask: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend `overlay_rgb` on `image_rgb` (both H x W x 3 uint8); only where `mask` if given;
    into `out` (H x W x 3 uint8, e.g. a message buffer) when given."""
    if mask is None:
        import cv2
        arguments = (np.ascontiguousarray(image_rgb), 1.0 - alpha, np.ascontiguousarray(overlay_rgb), alpha, 0.0)
        return cv2.addWeighted(*arguments) if out is None else cv2.addWeighted(*arguments, dst=out)
    image = image_rgb.astype(np.float32)
    mixed = (1.0 - alpha) * image + alpha * overlay_rgb.astype(np.float32)
    mixed = np.clip(np.where(mask[..., None], mixed, image) + 0.5, 0, 255).astype(np.uint8)
    if out is None:
        return mixed
    np.copyto(out, mixed)
    return out


def depth_colormap(depth_m: np.ndarray, max_depth_m: float = 60.0) -> np.ndarray:
    """(N,) depths -> (N, 3) uint8 RGB, near = red, far = blue (a simple jet-like ramp)."""
    t = np.clip(np.asarray(depth_m, dtype=np.float32) / max_depth_m, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * t - 1), 0, 1)
    g = np.clip(1.5 - np.abs(4 * t - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * t - 3), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)
