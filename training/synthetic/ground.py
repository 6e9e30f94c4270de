"""Ground of a synthetic scene as a top-down raster: colour (textured, lit), A2D2 class, reflectance.

Because the ground is a plane, the camera sees it through a homography: the renderer warps
these maps into the image (cv2.warpPerspective; nearest for the labels), and the LiDAR looks
up the class and reflectance where a ray meets the plane. Map pixel (col, row) is the world
point (x0 + col * res, y_max - row * res) on the plane z = GROUND_Z_M.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.synthetic.shapes import class_index
from training.synthetic.world import GROUND_Z_M, Lighting, RoadLayout

MAP_RESOLUTION_M = 0.05
MAP_HALF_WIDTH_M = 40.0


@dataclass
class GroundMap:
    x0: float
    y_max: float
    resolution_m: float
    color: np.ndarray          # (R, C, 3) uint8 RGB, lit
    label: np.ndarray          # (R, C) uint8 A2D2 class index
    reflectance: np.ndarray    # (R, C) uint8 LiDAR reflectance
    border_label: int          # class beyond the map (grass)
    border_color: tuple        # RGB beyond the map
    border_reflectance: int
    z_m: float = GROUND_Z_M

    def world_from_map(self) -> np.ndarray:
        """3x3: map pixel (col, row, 1) -> world (x, y, 1) on the ground plane."""
        res = self.resolution_m
        return np.array([[res, 0.0, self.x0], [0.0, -res, self.y_max], [0.0, 0.0, 1.0]])

    def lookup(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) world x, y -> (class (N,) int64, reflectance (N,) float64), nearest map pixel."""
        rows_count, cols_count = self.label.shape
        cols = np.rint((xy[:, 0] - self.x0) / self.resolution_m).astype(np.int64)
        rows = np.rint((self.y_max - xy[:, 1]) / self.resolution_m).astype(np.int64)
        inside = (cols >= 0) & (cols < cols_count) & (rows >= 0) & (rows < rows_count)
        cols, rows = np.clip(cols, 0, cols_count - 1), np.clip(rows, 0, rows_count - 1)
        labels = np.where(inside, self.label[rows, cols], self.border_label).astype(np.int64)
        reflectance = np.where(inside, self.reflectance[rows, cols], self.border_reflectance).astype(np.float64)
        return labels, reflectance


# Per-class ground material: reflectance (VLP-16 1..255), low-frequency and grain texture amplitude.
_MATERIALS = {
    'Nature object': (28.0, 0.18, 0.10),
    'Sidewalk': (35.0, 0.06, 0.06),
    'Curbstone': (35.0, 0.05, 0.05),
    'RD normal street': (12.0, 0.08, 0.07),
    'Parking area': (16.0, 0.08, 0.08),
    'Solid line': (150.0, 0.06, 0.05),
    'Dashed line': (150.0, 0.06, 0.05),
    'Zebra crossing': (160.0, 0.06, 0.05),
    'Painted driv. instr.': (140.0, 0.06, 0.05),
}


class _Painter:
    """Axis-aligned painting on the map rasters in world coordinates."""

    def __init__(self, x0, y_max, res, shape):
        self.x0, self.y_max, self.res = x0, y_max, res
        self.label = np.full(shape, class_index('Nature object'), dtype=np.uint8)

    def rows(self, y_a, y_b) -> slice:
        lo, hi = min(y_a, y_b), max(y_a, y_b)
        return self._clamp(int(np.floor((self.y_max - hi) / self.res)), int(np.ceil((self.y_max - lo) / self.res)),
                           self.label.shape[0])

    def cols(self, x_a, x_b) -> slice:
        lo, hi = min(x_a, x_b), max(x_a, x_b)
        return self._clamp(int(np.floor((lo - self.x0) / self.res)), int(np.ceil((hi - self.x0) / self.res)),
                           self.label.shape[1])

    @staticmethod
    def _clamp(start: int, stop: int, size: int) -> slice:
        start = min(max(start, 0), size)
        return slice(start, min(max(stop, start), size))

    def rect(self, x_a, x_b, y_a, y_b, name: str) -> None:
        self.label[self.rows(y_a, y_b), self.cols(x_a, x_b)] = class_index(name)

    def line(self, y_centre, width_m, x_a, x_b, name, dash=None, phase_m=0.0, skip=None) -> None:
        """A painted line along x; dashed when dash = (dash_m, gap_m); `skip(x)` -> True leaves gaps."""
        rows = self.rows(y_centre - width_m / 2, y_centre + width_m / 2)
        cols = self.cols(x_a, x_b)
        xs = self.x0 + np.arange(cols.start, cols.stop) * self.res
        paint = np.ones(len(xs), dtype=bool)
        if dash is not None:
            paint &= np.mod(xs - phase_m, dash[0] + dash[1]) < dash[0]
        if skip is not None:
            paint &= ~skip(xs)
        block = self.label[rows, cols]
        block[:, paint] = class_index(name)

    def polygon(self, xy: np.ndarray, name: str) -> None:
        pixels = np.column_stack([(xy[:, 0] - self.x0) / self.res, (self.y_max - xy[:, 1]) / self.res])
        cv2.fillPoly(self.label, [np.round(pixels * 16).astype(np.int32)], int(class_index(name)), cv2.LINE_8, 4)


def build_ground_map(layout: RoadLayout, lighting: Lighting, rng: np.random.Generator,
                     resolution_m: float = MAP_RESOLUTION_M) -> GroundMap:
    """Paint the road layout (lanes, markings, kerbs, sidewalks, grass) and texture it."""
    x_min, x_max = layout.x_range
    y_max = layout.centre_y + MAP_HALF_WIDTH_M
    shape = (int(round(2 * MAP_HALF_WIDTH_M / resolution_m)), int(round((x_max - x_min) / resolution_m)))
    painter = _Painter(x_min, y_max, resolution_m, shape)
    _paint_layout(painter, layout, rng)
    label = painter.label
    color, reflectance = _texture(label, layout, lighting, rng, resolution_m, x_min, y_max)
    grass_gain = lighting.shade(np.array([0.0, 0.0, 1.0]))
    border_color = tuple(int(v) for v in np.clip(np.array([70.0, 100.0, 45.0]) * grass_gain, 0, 255))
    return GroundMap(x0=x_min, y_max=y_max, resolution_m=resolution_m, color=color, label=label,
                     reflectance=reflectance, border_label=class_index('Nature object'),
                     border_color=border_color, border_reflectance=28)


def _paint_layout(painter: _Painter, layout: RoadLayout, rng) -> None:
    x_min, x_max = layout.x_range
    for side in (-1, 1):
        inner, outer = layout.sidewalk(side)
        painter.rect(x_min, x_max, inner, outer, 'Sidewalk')
        painter.rect(x_min, x_max, layout.road_edge(side), inner, 'Curbstone')
        if layout.parking[side]:
            painter.rect(x_min, x_max, layout.carriageway_edge(side), layout.road_edge(side), 'Parking area')
    painter.rect(x_min, x_max, layout.carriageway_edge(-1), layout.carriageway_edge(1), 'RD normal street')
    skip = None
    if layout.side_street is not None:
        x_street, side, width = layout.side_street
        far = layout.centre_y + side * (MAP_HALF_WIDTH_M + 1.0)
        painter.rect(x_street - width / 2, x_street + width / 2, layout.carriageway_edge(side), far,
                     'RD normal street')
        painter.line(layout.road_edge(side) + side * 1.5, 0.3, x_street, x_street - side * width / 2,
                     'Solid line')      # stop line across the exit half
        skip = (lambda xs: np.abs(xs - x_street) < width / 2)

    lane_width = layout.lane_width_m
    y_c = layout.centre_y
    if layout.centre_line == 'double':
        for offset in (-0.12, 0.12):
            painter.line(y_c + offset, 0.12, x_min, x_max, 'Solid line')
    elif layout.centre_line == 'solid':
        painter.line(y_c, 0.15, x_min, x_max, 'Solid line')
    else:
        painter.line(y_c, 0.15, x_min, x_max, 'Dashed line', dash=layout.lane_dash_m, phase_m=rng.uniform(0, 9))
    for side, lanes in ((-1, layout.lanes_same), (1, layout.lanes_oncoming)):
        for lane in range(1, lanes):
            painter.line(y_c + side * lane * lane_width, 0.13, x_min, x_max, 'Dashed line',
                         dash=layout.lane_dash_m, phase_m=rng.uniform(0, 9))
        if layout.edge_lines:
            painter.line(layout.carriageway_edge(side) - side * 0.25, 0.15, x_min, x_max, 'Solid line', skip=skip)
        for lane in range(lanes):                  # arrows "straight ahead" in some lanes
            for x in rng.uniform(x_min + 40.0, x_max - 60.0, rng.integers(0, 3)):
                painter.polygon(_arrow(x, layout.lane_y(side, lane), side), 'Painted driv. instr.')
    if layout.zebra_x is not None:
        lo, hi = layout.carriageway_edge(-1), layout.carriageway_edge(1)
        for y in np.arange(lo + 0.3, hi - 0.4, 1.0):
            painter.rect(layout.zebra_x, layout.zebra_x + 4.0, y, y + 0.5, 'Zebra crossing')
        for side in (-1, 1):
            stop_x = layout.zebra_x - 2.0 if side < 0 else layout.zebra_x + 6.0
            painter.rect(stop_x - 0.25, stop_x + 0.25, y_c, layout.carriageway_edge(side), 'Solid line')


def _arrow(x: float, y: float, side: int) -> np.ndarray:
    """Straight-ahead arrow (5 m long) painted in a lane; points along the lane's direction."""
    pts = np.array([[0.0, -0.15], [3.6, -0.15], [3.6, -0.5], [5.0, 0.0], [3.6, 0.5], [3.6, 0.15], [0.0, 0.15]])
    direction = -1.0 if side > 0 else 1.0
    return np.column_stack([x + direction * pts[:, 0], y + pts[:, 1]])


def _smooth_noise(rng, shape, cell_px: int) -> np.ndarray:
    """(R, C) float32 smooth noise in about [-1, 1] with features of ~cell_px pixels."""
    small = rng.uniform(-1.0, 1.0, (max(shape[0] // cell_px, 2) + 1, max(shape[1] // cell_px, 2) + 1))
    return cv2.resize(small.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _texture(label, layout: RoadLayout, lighting: Lighting, rng, res, x0, y_max):
    """Lit colour and reflectance rasters from the class raster."""
    count = 256
    base = np.zeros((count, 3), np.float32)
    low_amp, grain_amp, refl = np.zeros(count, np.float32), np.zeros(count, np.float32), np.zeros(count, np.float32)
    asphalt = rng.uniform(65, 115) + rng.normal(0, 3, 3)
    sidewalk = [np.array([170.0, 168.0, 162.0]), np.array([175.0, 125.0, 110.0]), np.array([190.0, 180.0, 155.0]),
                np.array([135.0, 135.0, 138.0])][rng.integers(4)] + rng.normal(0, 6, 3)
    colors = {
        'Nature object': np.array([75.0, 105.0, 45.0]) + rng.normal(0, 10, 3),
        'Sidewalk': sidewalk,
        'Curbstone': np.array([175.0, 172.0, 165.0]),
        'RD normal street': asphalt,
        'Parking area': asphalt * rng.uniform(0.85, 1.15),
        'Solid line': layout.paint_color, 'Dashed line': layout.paint_color,
        'Zebra crossing': layout.paint_color, 'Painted driv. instr.': layout.paint_color,
    }
    for name, (reflectance, low, grain) in _MATERIALS.items():
        index = class_index(name)
        base[index], low_amp[index], grain_amp[index], refl[index] = colors[name], low, grain, reflectance

    shape = label.shape
    low_noise = 0.7 * _smooth_noise(rng, shape, 60) + 0.3 * _smooth_noise(rng, shape, 8)
    grain = rng.random(shape, dtype=np.float32) * 2.0 - 1.0
    gain = cv2.LUT(label, low_amp) * low_noise
    gain += cv2.LUT(label, grain_amp) * grain
    gain += 1.0
    painter = _Painter(x0, y_max, res, shape)
    cols_x = x0 + np.arange(shape[1], dtype=np.float32) * res
    # joints between paving slabs (sidewalks) and cobbles (parking strips)
    slab = rng.uniform(0.3, 0.6)
    for side in (-1, 1):
        _joints(painter.rows(*layout.sidewalk(side)), label, gain, cols_x, y_max, res, slab, 0.0,
                class_index('Sidewalk'), 0.8)
        if layout.parking[side]:
            _joints(painter.rows(layout.carriageway_edge(side), layout.road_edge(side)), label, gain, cols_x,
                    y_max, res, 0.14, 0.07, class_index('Parking area'), 0.75)
    road = class_index('RD normal street')
    for side, lanes in ((-1, layout.lanes_same), (1, layout.lanes_oncoming)):   # tyre tracks
        for lane in range(lanes):
            for offset in (-0.8, 0.8):
                centre = layout.lane_y(side, lane) + offset
                rows = painter.rows(centre - 0.35, centre + 0.35)
                block = gain[rows]
                block[label[rows] == road] *= rng.uniform(0.88, 0.95)
    for _ in range(rng.integers(0, 8)):               # repair patches
        x_a, y_a = rng.uniform(x0, x0 + shape[1] * res - 10), rng.uniform(y_max - shape[0] * res, y_max)
        rows, cols = painter.rows(y_a, y_a - rng.uniform(1, 4)), painter.cols(x_a, x_a + rng.uniform(2, 10))
        block = gain[rows, cols]
        block[label[rows, cols] == road] *= 0.85
    light = lighting.shade(np.array([0.0, 0.0, 1.0])).astype(np.float32)
    lut = np.clip(base * light, 0, 255).astype(np.float32)
    color = np.empty(shape + (3,), np.uint8)
    for channel in range(3):
        value = cv2.LUT(label, lut[:, channel].copy())
        value *= gain
        color[..., channel] = cv2.convertScaleAbs(value)      # values are >= 0: rounds and saturates
    grain *= 0.25
    grain += 1.0
    reflectance = cv2.LUT(label, refl)
    reflectance *= grain
    return color, np.maximum(cv2.convertScaleAbs(reflectance), 1)


def _joints(rows: slice, label, gain, cols_x, y_max, res, tile_m, row_shift_m, class_id, factor) -> None:
    """Darken `gain` along a grid of joints (tile_m apart; odd rows of tiles shifted) in a row band."""
    rows_y = y_max - np.arange(rows.start, rows.stop, dtype=np.float32) * res
    row_joint = np.mod(rows_y, tile_m) < res      # one pixel wide, every tile
    shift = (np.floor(rows_y / tile_m) * row_shift_m)[:, None]
    joint = row_joint[:, None] | (np.mod(cols_x[None, :] + shift, tile_m) < res)
    block = gain[rows]
    block[joint & (label[rows] == class_id)] *= factor
