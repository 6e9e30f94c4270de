"""Tracks over time in bird's-eye view: one picture per scene, GT dashed, tracks coloured by id.

Drawn like training/pictures/draw.py (forward +x up, left +y left, (H, W, 3) uint8 RGB): each ground-truth
trajectory is a thin dashed grey line (drawn on top); each hypothesis track a thick solid line
in a colour of its own (fixed per id), a dot where it starts and its id where it ends. An ID switch shows as a dashed
line whose solid companion changes colour; a fragmentation as a gap in the solid line.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from mtl_perception_ros.core.bev_grid import BevGrid
from training.pictures.draw import WHITE, add_title, bev_pixels

GT_COLOR = (170, 170, 170)
BACKGROUND = (24, 24, 24)
_SHIFT = 4          # sub-pixel bits for cv2 drawing


def track_color(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour fixed per id (golden-ratio hue steps keep neighbouring ids apart)."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _fixed(uv: np.ndarray) -> np.ndarray:
    return np.round(uv * (1 << _SHIFT)).astype(np.int32)


def _split_at_gaps(frames: np.ndarray) -> list[slice]:
    """Runs of consecutive frame numbers: a track is not drawn across frames it was absent from."""
    breaks = np.nonzero(np.diff(frames) != 1)[0] + 1
    edges = np.concatenate([[0], breaks, [len(frames)]])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def draw_dashed_polyline(canvas: np.ndarray, uv: np.ndarray, color, thickness: int = 1,
                         dash_px: float = 6.0) -> None:
    """(K, 2) pixel polyline as dashes of `dash_px` with equal gaps (in place)."""
    if len(uv) < 2:
        return
    step = np.diff(uv, axis=0)
    length = np.hypot(step[:, 0], step[:, 1])
    along = np.concatenate([[0.0], np.cumsum(length)])
    total = along[-1]
    if total <= 0:
        return
    starts = np.arange(0.0, total, 2 * dash_px)
    ends = np.minimum(starts + dash_px, total)
    x = np.interp(np.concatenate([starts, ends]), along, uv[:, 0])
    y = np.interp(np.concatenate([starts, ends]), along, uv[:, 1])
    points = _fixed(np.column_stack([x, y]))
    lines = np.stack([points[:len(starts)], points[len(starts):]], axis=1)      # (dashes, 2, 2)
    cv2.polylines(canvas, list(lines), False, color, thickness, cv2.LINE_AA, _SHIFT)


def draw_track_plot(gt_tracks: dict, hyp_tracks: dict, grid: BevGrid, pixels_per_m: float = 8.0,
                    title: str = '') -> np.ndarray:
    """One scene's trajectories as a BEV picture.

    gt_tracks / hyp_tracks: id -> (frames (K,) int frame numbers in the scene, xy (K, 2) metres),
    in time order. The picture covers `grid`'s x/y area; points outside are clipped by drawing.
    """
    height = int(round((grid.x_max_m - grid.x_min_m) * pixels_per_m))
    width = int(round((grid.y_max_m - grid.y_min_m) * pixels_per_m))
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    for x in np.arange(np.ceil(grid.x_min_m / 10) * 10, grid.x_max_m, 10.0):       # 10 m grid lines
        v = int(round(bev_pixels(x, 0.0, grid, pixels_per_m)[1]))
        cv2.line(canvas, (0, v), (width - 1, v), (48, 48, 48), 1)
    for y in np.arange(np.ceil(grid.y_min_m / 10) * 10, grid.y_max_m, 10.0):
        u = int(round(bev_pixels(0.0, y, grid, pixels_per_m)[0]))
        cv2.line(canvas, (u, 0), (u, height - 1), (48, 48, 48), 1)

    for track_id, (frames, xy) in sorted(hyp_tracks.items()):
        color = track_color(track_id)
        uv = bev_pixels(xy[:, 0], xy[:, 1], grid, pixels_per_m)
        for run in _split_at_gaps(np.asarray(frames)):
            cv2.polylines(canvas, [_fixed(uv[run])], False, color, 2, cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, tuple(_fixed(uv[0]).tolist()), 3 << _SHIFT, color, -1, cv2.LINE_AA, _SHIFT)
        end = tuple(np.round(uv[-1] + (4, -4)).astype(int).tolist())
        cv2.putText(canvas, str(track_id), end, cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    # GT last, thin, so that it stays visible on top of the tracks that follow it
    for _, (frames, xy) in sorted(gt_tracks.items()):
        uv = bev_pixels(xy[:, 0], xy[:, 1], grid, pixels_per_m)
        for run in _split_at_gaps(np.asarray(frames)):
            draw_dashed_polyline(canvas, uv[run], GT_COLOR, thickness=1)
    cv2.putText(canvas, 'GT: dashed grey   tracks: solid, colour = id (dot = start)', (6, height - 8),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, WHITE, 1, cv2.LINE_AA)
    return add_title(canvas, title) if title else canvas
