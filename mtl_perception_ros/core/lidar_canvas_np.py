"""The camera-painted pillar canvas in NumPy: `MultiTaskNet.lidar_canvas` for one sample, without torch.

The ONNX Runtime path runs the camera and BEV networks as graphs; the stage between them (points ->
pillars, painted with the camera features) has data-dependent shapes and is not exported. This is
that stage in NumPy, so such a process need not import torch (about 190 MB of memory): the same
steps as core.model (pillar_geometry, choose_views with project_to_grid_sample_coords,
sample_per_point, PillarEncoder in eval mode), equal to float rounding.

The pillar encoder comes as one affine map: `weight` (F, Cp) and `bias` (Cp,) are its Linear and
eval-mode BatchNorm folded together (core.model.folded_pillar_weights), F = 9 geometry + Dc camera
+ 1 no-camera flag channels, in that order.
"""
from __future__ import annotations

import numpy as np

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.camera import MIN_DEPTH_M
from mtl_perception_ros.core.model_config import POINT_GEOMETRY_CHANNELS  # torch-free, as core.model uses it

NO_VIEW_GRID_XY = -2.0       # grid_sample coordinate of a point no view sees (outside [-1, 1])
GROUPED_RANKS = 8            # pillar_max_np: the first 8 points of every pillar in vectorised steps


def lidar_canvas_np(points: np.ndarray, grid: BevGrid, weight: np.ndarray, bias: np.ndarray,
                    camera_features: np.ndarray | None = None, camera_matrix: np.ndarray | None = None,
                    vehicle_to_camera: np.ndarray | None = None,
                    image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Camera-painted pillars of one point cloud -> BEV canvas (1, Cp, Hg, Wg) float32.

    points (P, >=4) x, y, z (m, vehicle frame), reflectance; points outside the grid (x, y or z) are
    dropped. camera_features (V, Dc, h, w), e.g. at 1/4 of the model input image of size
    image_hw = (Hi, Wi), with camera_matrix (V, 3, 3) for that image and vehicle_to_camera (V, 4, 4)
    into the optical frame; each point is painted by the view that sees it nearest its image centre
    (core.model.choose_views). camera_features None: LiDAR-only. weight (F, Cp), bias (Cp,): the
    folded pillar encoder (module docstring). Empty pillars are 0.
    """
    points = np.asarray(points, dtype=np.float32)
    weight = np.asarray(weight, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    if camera_features is not None:
        camera_features = np.asarray(camera_features, dtype=np.float32)
    camera_channels = _check_inputs(points, weight, bias, camera_features, camera_matrix,
                                    vehicle_to_camera, image_hw)
    rows, cols = grid.shape
    canvas = np.zeros((rows * cols, weight.shape[1]), np.float32)             # (Hg*Wg, Cp)
    cell, geometry = pillar_geometry_np(points, grid)                        # sorted by cell
    if len(cell):
        # relu(features @ weight + bias) without building the (P, F) features: camera rows only
        # where a view sees the point (the others have zero camera features and the flag set).
        encoded = geometry @ weight[:POINT_GEOMETRY_CHANNELS] + bias                # (P_kept, Cp)
        visible = np.zeros(len(cell), dtype=bool)
        if camera_features is not None:
            view, grid_xy, visible = choose_views_np(geometry[:, :3], camera_matrix, vehicle_to_camera, image_hw)
            seen = np.flatnonzero(visible)
            painted = sample_per_point_np(camera_features, grid_xy[seen], view[seen])   # (P_seen, Dc)
            camera_term = painted @ weight[POINT_GEOMETRY_CHANNELS:POINT_GEOMETRY_CHANNELS + camera_channels]
            encoded[seen] += camera_term
        encoded += (~visible).astype(np.float32)[:, None] * weight[-1]             # the no-camera flag
        occupied, pillars = pillar_max_np(np.maximum(encoded, 0.0), cell)
        canvas[occupied] = pillars            # whole rows: a fifth of the time of canvas.T[:, occupied] = pillars.T
    return np.ascontiguousarray(canvas.reshape(rows, cols, -1).transpose(2, 0, 1))[None]   # (1, Cp, Hg, Wg)


def pillar_geometry_np(points: np.ndarray, grid: BevGrid) -> tuple[np.ndarray, np.ndarray]:
    """core.model.pillar_geometry for one sample, the kept points sorted by pillar.

    points (P, >=4) float32. Returns (cell (P_kept,) int64 flat pillar index row*Wg + col,
    ascending; features (P_kept, 9) float32: x, y, z, reflectance, x/y offset to the pillar centre,
    x/y/z offset to the mean of the pillar's points). Sorted, so that each pillar's points are one
    run for the scatter-max (the canvas does not depend on the points' order).
    """
    rows, cols = grid.shape
    points = points[grid.in_range(points), :4]
    row_f, col_f = grid.xy_to_cell(points[:, 0], points[:, 1], cell_m=grid.cell_m)
    row = np.clip(np.floor(row_f).astype(np.int64), 0, rows - 1)  # clip: float rounding just below x_max
    col = np.clip(np.floor(col_f).astype(np.int64), 0, cols - 1)
    cell = row * cols + col
    order = np.argsort(cell)       # not stable: a pillar's max does not depend on its points' order
    points, row, col, cell = points[order], row[order], col[order], cell[order]
    centre_x, centre_y = grid.cell_to_xy(row.astype(np.float32) + 0.5, col.astype(np.float32) + 0.5,
                                         cell_m=grid.cell_m)
    starts, counts = _runs(cell)
    sums = np.add.reduceat(points[:, :3].astype(np.float64), starts, axis=0) if len(cell) else np.zeros((0, 3))
    mean = np.repeat(sums / counts[:, None], counts, axis=0).astype(np.float32)  # (P_kept, 3)
    features = np.concatenate([points, (points[:, 0] - centre_x)[:, None], (points[:, 1] - centre_y)[:, None],
                               points[:, :3] - mean], axis=1)
    return cell, features.astype(np.float32, copy=False)


def project_to_grid_sample_coords_np(xyz: np.ndarray, camera_matrix: np.ndarray, vehicle_to_camera: np.ndarray,
                                     image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """core.model.project_to_grid_sample_coords for one view: xyz (P, 3) float32, camera_matrix (3, 3),
    vehicle_to_camera (4, 4). Returns (grid_xy (P, 2) float32 in [-1, 1] for align_corners=False,
    -2 where not visible; visible (P,) bool: depth > MIN_DEPTH_M and 0 <= u < Wi, 0 <= v < Hi)."""
    grid_x, grid_y, visible = _project(tuple(np.ascontiguousarray(xyz[:, i]) for i in range(3)),
                                       camera_matrix, vehicle_to_camera, image_hw)
    return np.stack((grid_x, grid_y), axis=-1), visible


def _project(xyz: tuple, camera_matrix: np.ndarray, vehicle_to_camera: np.ndarray, image_hw: tuple[int, int]):
    """`project_to_grid_sample_coords_np` on coordinate arrays: xyz = (x, y, z), each (P,) float32 ->
    (grid_x (P,), grid_y (P,), visible (P,)). Coordinates one array each, not (P, 3) rows: a 3 x 3
    product is then nine contiguous multiply-adds (a tenth of a (P, 3) @ (3, 3) matmul's time)."""
    height, width = image_hw
    transform = np.asarray(vehicle_to_camera, dtype=np.float32)
    intrinsics = np.asarray(camera_matrix, dtype=np.float32)
    cam = [c + t for c, t in zip(_matrix_times(transform[:3, :3], xyz), transform[:3, 3])]  # fp32 as the model
    u, v, _ = _matrix_times(intrinsics, cam)
    depth = cam[2]
    in_front = depth > MIN_DEPTH_M
    safe_depth = np.where(in_front, depth, np.float32(1.0))
    u, v = u / safe_depth, v / safe_depth
    visible = in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    outside = np.float32(NO_VIEW_GRID_XY)
    return (np.where(visible, (u + 0.5) / width * 2 - 1, outside),
            np.where(visible, (v + 0.5) / height * 2 - 1, outside), visible)


def _matrix_times(matrix: np.ndarray, vectors) -> list:
    """(3, 3) float32 matrix times vectors given as three (P,) coordinate arrays -> three arrays."""
    return [matrix[i, 0] * vectors[0] + matrix[i, 1] * vectors[1] + matrix[i, 2] * vectors[2] for i in range(3)]


def choose_views_np(xyz: np.ndarray, camera_matrix: np.ndarray, vehicle_to_camera: np.ndarray,
                    image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """core.model.choose_views for one sample with V views (all in use): for each point the view
    that sees it with the smallest max(|grid_x|, |grid_y|), the first such view on a tie.

    Returns (view (P,) int64, 0 where none; grid_xy (P, 2) in that view, -2 where none;
    seen (P,) bool). One vectorised pass per view (V is a handful of cameras).
    """
    num_points, num_views = xyz.shape[0], len(camera_matrix)
    if num_views == 0:
        return (np.zeros(num_points, np.int64), np.full((num_points, 2), NO_VIEW_GRID_XY, np.float32),
                np.zeros(num_points, dtype=bool))
    coordinates = tuple(np.ascontiguousarray(xyz[:, i], dtype=np.float32) for i in range(3))
    grid_x, grid_y, seen_by = (np.stack(per_view) for per_view in zip(
        *(_project(coordinates, camera_matrix[v], vehicle_to_camera[v], image_hw) for v in range(num_views))))
    off_centre = np.where(seen_by, np.maximum(np.abs(grid_x), np.abs(grid_y)), np.float32(3.0))   # (V, P)
    best = off_centre.argmin(axis=0)                                          # first minimum, as torch
    index = np.arange(num_points)
    seen = seen_by[best, index]
    outside = np.float32(NO_VIEW_GRID_XY)
    point_grid = np.stack((np.where(seen, grid_x[best, index], outside), np.where(seen, grid_y[best, index], outside)),
                          axis=-1)
    return np.where(seen, best, 0).astype(np.int64), point_grid, seen


def sample_per_point_np(feature_maps: np.ndarray, grid_xy: np.ndarray, view: np.ndarray) -> np.ndarray:
    """Bilinear sampling with F.grid_sample's rules (mode bilinear, padding zeros,
    align_corners=False): feature_maps (V, D, h, w), grid_xy (P, 2) in [-1, 1], view (P,) -> (P, D).

    Pixel x = ((grid_x + 1) * w - 1) / 2 (the same for y); a tap outside the map contributes 0.
    """
    num_views, channels, height, width = feature_maps.shape
    if len(grid_xy) == 0:
        return np.zeros((0, channels), np.float32)
    # channels last: each tap then reads D contiguous values (one transpose of the small maps)
    flat = np.ascontiguousarray(feature_maps.transpose(0, 2, 3, 1), dtype=np.float32).reshape(-1, channels)
    ix = ((grid_xy[:, 0] + 1) * width - 1) / 2
    iy = ((grid_xy[:, 1] + 1) * height - 1) / 2
    x0, y0 = np.floor(ix), np.floor(iy)
    east, south = ix - x0, iy - y0                                          # weights of the x0+1, y0+1 taps
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    out = np.zeros((len(grid_xy), channels), np.float32)
    for dx, dy, tap_weight in ((0, 0, (1 - east) * (1 - south)), (1, 0, east * (1 - south)),
                               (0, 1, (1 - east) * south), (1, 1, east * south)):
        x, y = x0 + dx, y0 + dy
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        index = (view * height + np.clip(y, 0, height - 1)) * width + np.clip(x, 0, width - 1)
        tap = np.take(flat, index, axis=0)           # np.take: several times faster than flat[index]
        tap *= np.where(inside, tap_weight, np.float32(0))[:, None]
        out += tap
    return out


def pillar_max_np(point_features: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max over each pillar's points: point_features (P, C) and cell (P,) ascending ->
    (occupied (N,) pillar indices, pillars (N, C)).

    np.maximum.reduceat alone costs about half a microsecond per pillar, most of the canvas time
    when pillars hold a point or two. So the k-th point of every pillar (k < GROUPED_RANKS) is
    taken in one vectorised step for all pillars at once, and only the points past that in the
    few long pillars go through reduceat. Exact: a max in any order is the same max.
    """
    starts, counts = _runs(cell)
    if len(starts) == 0:
        return cell[:0], point_features[:0]
    pillars = np.take(point_features, starts, axis=0)                      # each pillar's first point
    for k in range(1, min(int(counts.max()), GROUPED_RANKS)):
        has_k = np.flatnonzero(counts > k)                                  # pillars with a k-th point
        pillars[has_k] = np.maximum(np.take(pillars, has_k, axis=0),
                                    np.take(point_features, starts[has_k] + k, axis=0))
    long = np.flatnonzero(counts > GROUPED_RANKS)
    if len(long):
        rest = counts[long] - GROUPED_RANKS                                 # their points not yet taken
        rest_starts = np.r_[0, np.cumsum(rest)[:-1]]
        rows = np.repeat(starts[long] + GROUPED_RANKS - rest_starts, rest) + np.arange(rest.sum())
        rest_max = np.maximum.reduceat(np.take(point_features, rows, axis=0), rest_starts, axis=0)
        pillars[long] = np.maximum(pillars[long], rest_max)
    return cell[starts], pillars


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal values in a sorted (P,) array."""
    if len(sorted_values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_values)])


def _check_inputs(points, weight, bias, camera_features, camera_matrix, vehicle_to_camera, image_hw) -> int:
    """Shapes as lidar_canvas_np documents them; returns Dc (camera feature channels)."""
    if points.ndim != 2 or points.shape[1] < 4:
        raise ValueError(f'lidar_canvas_np: points must be (P, >=4) x, y, z, reflectance; got {points.shape}')
    camera_channels = weight.shape[0] - POINT_GEOMETRY_CHANNELS - 1 if weight.ndim == 2 else -1
    if camera_channels < 0 or bias.shape != weight.shape[1:]:
        raise ValueError(f'lidar_canvas_np: expected weight (F, Cp) with F = {POINT_GEOMETRY_CHANNELS} + Dc + 1 '
                         f'and bias (Cp,) (core.model.folded_pillar_weights), got {weight.shape} and {bias.shape}')
    if camera_features is None:
        return camera_channels
    if camera_features.ndim != 4 or camera_features.shape[1] != camera_channels:
        raise ValueError(f'lidar_canvas_np: camera_features must be (V, {camera_channels}, h, w) for a weight '
                         f'of {weight.shape[0]} rows, got {camera_features.shape}')
    num_views = camera_features.shape[0]
    if (camera_matrix is None or vehicle_to_camera is None or np.shape(camera_matrix) != (num_views, 3, 3)
            or np.shape(vehicle_to_camera) != (num_views, 4, 4)):
        raise ValueError(f'lidar_canvas_np: {num_views} camera views need camera_matrix ({num_views}, 3, 3) and '
                         f'vehicle_to_camera ({num_views}, 4, 4), got {np.shape(camera_matrix)} and '
                         f'{np.shape(vehicle_to_camera)}')
    if image_hw is None or len(image_hw) != 2:
        raise ValueError(f'lidar_canvas_np: camera views need image_hw = (Hi, Wi) of the image the '
                         f'camera_matrix is for, got {image_hw}')
    return camera_channels
