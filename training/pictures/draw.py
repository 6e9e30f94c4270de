"""Debug pictures: BEV heatmaps with boxes, LiDAR on the image, semantic overlays, layouts.

All functions take and return (H, W, 3) uint8 RGB. BEV pictures are drawn as seen from above
with the vehicle's forward (+x) pointing up and its left (+y) pointing left, whatever the
array layout of the grid (rows along +x, cols along +y).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from mtl_perception_ros.core.atomic_file import atomic_write_bytes
from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.boxes import BOX_DIM, bev_corners
from mtl_perception_ros.core.camera import project_points
from mtl_perception_ros.core.labels import IGNORE_INDEX, LabelSet, blend, depth_colormap

WHITE = (255, 255, 255)


def bev_pixels(x, y, grid: BevGrid, pixels_per_m: float) -> np.ndarray:
    """(..., 2) float pixel (u, v) of metric x, y in a BEV picture with forward up, left left."""
    u = (grid.y_max_m - np.asarray(y, dtype=np.float64)) * pixels_per_m
    v = (grid.x_max_m - np.asarray(x, dtype=np.float64)) * pixels_per_m
    return np.stack([u, v], axis=-1)


def heatmap_picture(heatmap: np.ndarray, pixels_per_cell: int = 8,
                    colormap: int = cv2.COLORMAP_INFERNO) -> np.ndarray:
    """(C, H, W) or (H, W) heatmap in [0, 1] (max over classes) -> BEV colour picture."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim == 3:
        heatmap = heatmap.max(axis=0) if len(heatmap) else np.zeros(heatmap.shape[1:], np.float32)
    gray = (np.clip(heatmap, 0, 1) * 255 + 0.5).astype(np.uint8)[::-1, ::-1]   # forward up, left left
    gray = cv2.resize(np.ascontiguousarray(gray), None, fx=pixels_per_cell, fy=pixels_per_cell,
                      interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(gray, colormap), cv2.COLOR_BGR2RGB)


def draw_bev_points(canvas: np.ndarray, points: np.ndarray, grid: BevGrid, pixels_per_m: float,
                    color=(128, 128, 128)) -> np.ndarray:
    """Mark (N, >=2) points' x, y as single pixels on the BEV `canvas` (in place; returned)."""
    if len(points) == 0:
        return canvas
    uv = np.floor(bev_pixels(points[:, 0], points[:, 1], grid, pixels_per_m)).astype(np.int64)
    height, width = canvas.shape[:2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    canvas[uv[inside, 1], uv[inside, 0]] = color
    return canvas


def draw_bev_boxes(canvas: np.ndarray, boxes: np.ndarray, classes: np.ndarray, grid: BevGrid,
                   pixels_per_m: float, colors: Sequence, thickness: int = 2) -> np.ndarray:
    """Oriented box footprints plus a heading tick (centre -> front edge) on `canvas` (in place)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    if len(boxes) == 0:
        return canvas
    corners = bev_pixels(*np.moveaxis(bev_corners(boxes), -1, 0), grid, pixels_per_m)   # (N, 4, 2)
    front_mid = corners[:, :2].mean(axis=1)
    centres = bev_pixels(boxes[:, 0], boxes[:, 1], grid, pixels_per_m)
    shift = 4   # sub-pixel precision for cv2
    corners_fixed = np.round(corners * (1 << shift)).astype(np.int32)
    for i, class_id in enumerate(np.asarray(classes, dtype=np.int64).reshape(-1)):
        color = tuple(int(c) for c in colors[class_id % len(colors)])
        cv2.polylines(canvas, [corners_fixed[i]], True, color, thickness, cv2.LINE_AA, shift)
        cv2.line(canvas, tuple(np.round(centres[i] * (1 << shift)).astype(int).tolist()),
                 tuple(np.round(front_mid[i] * (1 << shift)).astype(int).tolist()), color, thickness,
                 cv2.LINE_AA, shift)
    return canvas


def draw_bev(heatmap: np.ndarray, boxes: np.ndarray, classes: np.ndarray, grid: BevGrid,
             colors: Sequence, pred_boxes: np.ndarray | None = None,
             pred_classes: np.ndarray | None = None, points: np.ndarray | None = None,
             pixels_per_cell: int = 8) -> np.ndarray:
    """BEV picture: heatmap (max over classes), optional LiDAR points, GT boxes (thick, class
    colour) and optional predicted boxes (thin, white-edged class colour). Forward is up."""
    canvas = heatmap_picture(heatmap, pixels_per_cell)
    pixels_per_m = pixels_per_cell / grid.out_cell_m
    if points is not None:
        draw_bev_points(canvas, np.asarray(points), grid, pixels_per_m)
    draw_bev_boxes(canvas, boxes, classes, grid, pixels_per_m, colors, thickness=2)
    if pred_boxes is not None:
        pred_classes = np.zeros(len(pred_boxes), np.int64) if pred_classes is None else pred_classes
        draw_bev_boxes(canvas, pred_boxes, pred_classes, grid, pixels_per_m, [WHITE], thickness=3)
        draw_bev_boxes(canvas, pred_boxes, pred_classes, grid, pixels_per_m, colors, thickness=1)
    return canvas


def draw_points_on_image(image: np.ndarray, points: np.ndarray, vehicle_to_camera: np.ndarray,
                         camera_matrix: np.ndarray, max_depth_m: float = 60.0,
                         radius_px: int = 1) -> np.ndarray:
    """Copy of `image` with the (N, >=3) vehicle-frame points drawn as squares of side
    2 * radius_px + 1, coloured by depth (near red, far blue); near points drawn on top."""
    canvas = np.array(image, dtype=np.uint8, copy=True)
    height, width = canvas.shape[:2]
    uv, depth, valid = project_points(np.asarray(points), np.asarray(vehicle_to_camera, np.float64),
                                      camera_matrix, (height, width))
    order = np.argsort(-depth[valid])   # far first, so near points overwrite them
    pixels = np.floor(uv[valid][order] + 0.5).astype(np.int64)
    colors = depth_colormap(depth[valid][order], max_depth_m)
    offsets = np.arange(-radius_px, radius_px + 1)
    du, dv = [d.reshape(-1) for d in np.meshgrid(offsets, offsets)]
    cols = (pixels[:, 0:1] + du[None]).reshape(-1)
    rows = (pixels[:, 1:2] + dv[None]).reshape(-1)
    colors = np.repeat(colors, len(du), axis=0)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    canvas[rows[inside], cols[inside]] = colors[inside]
    return canvas


def semantic_overlay(image: np.ndarray, class_map: np.ndarray, labels: LabelSet,
                     alpha: float = 0.5) -> np.ndarray:
    """`image` with the class map's colours blended in (ignored pixels left as they are)."""
    class_map = np.asarray(class_map)
    return blend(image, labels.colorize(class_map), alpha, mask=class_map != IGNORE_INDEX)


def add_title(image: np.ndarray, text: str, band_px: int = 22) -> np.ndarray:
    """`image` with a black band on top carrying `text` in white."""
    band = np.zeros((band_px, image.shape[1], 3), np.uint8)
    cv2.putText(band, text, (4, band_px - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, WHITE, 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def draw_legend(image: np.ndarray, names: Sequence[str], colors: Sequence,
                line_px: int = 18) -> np.ndarray:
    """Class names in their colours, one per line, in the bottom-left corner (in place; returned)."""
    bottom = image.shape[0] - 6 - line_px * (len(names) - 1)
    for i, (name, color) in enumerate(zip(names, colors)):
        origin = (6, bottom + i * line_px)
        cv2.putText(image, name, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, name, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, tuple(int(c) for c in color), 1,
                    cv2.LINE_AA)
    return image


def _resize_to(image: np.ndarray, height: int | None = None, width: int | None = None) -> np.ndarray:
    h, w = image.shape[:2]
    size = (int(round(w * height / h)), height) if height is not None else (width, int(round(h * width / w)))
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR)


def _concatenate(images: Sequence[np.ndarray], axis: int, size: int, gap_px: int) -> np.ndarray:
    """Images along `axis` (1: left to right at height `size`, 0: top to bottom at width `size`), black gaps."""
    parts = []
    for i, image in enumerate(images):
        if i:
            parts.append(np.zeros((size, gap_px, 3) if axis == 1 else (gap_px, size, 3), np.uint8))
        parts.append(_resize_to(image, height=size) if axis == 1 else _resize_to(image, width=size))
    return np.concatenate(parts, axis=axis)


def side_by_side(images: Sequence[np.ndarray], height: int | None = None, gap_px: int = 4) -> np.ndarray:
    """Images left to right, each scaled to `height` (default: the tallest), black gaps between."""
    return _concatenate(images, 1, max(i.shape[0] for i in images) if height is None else height, gap_px)


def stacked(images: Sequence[np.ndarray], width: int | None = None, gap_px: int = 4) -> np.ndarray:
    """Images top to bottom, each scaled to `width` (default: the widest), black gaps between."""
    return _concatenate(images, 0, max(i.shape[1] for i in images) if width is None else width, gap_px)


def write_png(path, image_rgb: np.ndarray) -> Path:
    """Write an RGB picture as PNG atomically (temporary file in the same folder, then replace)."""
    path = Path(path)
    ok, encoded = cv2.imencode('.png', cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'{path}: cannot PNG-encode a picture of shape {image_rgb.shape}')
    atomic_write_bytes(path, encoded.tobytes())
    return path
