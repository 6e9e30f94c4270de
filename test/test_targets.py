"""CenterPoint heatmap and regression targets on the BEV output grid."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mtl_perception_ros.core.bev_grid import BevGrid
from training.data.targets import build_targets, gaussian_patch, gaussian_radius

# Default grid: output cells of 1 m, 64 x 64, x 0..64, y -32..32.
GRID = BevGrid()


def box(x, y, length=4.0, width=2.0, yaw=0.0, z=-0.5, height=1.6):
    return [x, y, z, length, width, height, yaw]


def test_gaussian_radius_matches_hand_computed_cases():
    # length 4, width 2 cells, min_overlap 0.1: case 3 gives (-1.2 + sqrt(1.44 + 11.52)) / 2 = 1.2,
    # below cases 1 ((6 + sqrt(36 - 8 * 0.9 / 1.1 * 4)) / 2 = 4.567) and 2 ((12 + sqrt(28.8)) / 2).
    r = gaussian_radius(np.array([4.0, 20.0]), np.array([2.0, 10.0]), min_overlap=0.1)
    assert r[0] == pytest.approx(1.2)
    # 20 x 10 cells: case 3 = (-6 + sqrt(36 + 288)) / 2 = 6.
    assert r[1] == pytest.approx(6.0)
    assert gaussian_radius(4.0, 2.0, 0.1) == pytest.approx(min(1.2, (6 + math.sqrt(36 - 4 * 7.2 / 1.1)) / 2))


def test_heatmap_peak_is_one_at_the_box_centre_cell():
    # x 10.3 m -> row 10, y -5.7 m -> col 26 (1 m output cells from y = -32).
    targets = build_targets(np.array([box(10.3, -5.7)]), np.array([1]), GRID, num_classes=4)
    heatmap = targets.heatmap
    assert heatmap.shape == (4, 64, 64) and heatmap.dtype == np.float32
    assert heatmap[1, 10, 26] == 1.0
    assert np.count_nonzero(heatmap == 1.0) == 1
    assert heatmap[[0, 2, 3]].max() == 0.0
    assert targets.ind[0] == 10 * 64 + 26
    assert targets.mask.tolist()[:2] == [True, False]
    assert targets.cls[0] == 1
    np.testing.assert_allclose(targets.reg[0, :2], [0.3, 0.3], atol=1e-5)


def test_small_box_gets_minimum_radius_two_with_sigma_five_sixths():
    # 4 m x 2 m box: radius 1.2 -> int 1 -> min radius 2; sigma = 5 / 6 cells.
    heatmap = build_targets(np.array([box(20.5, 0.5)]), np.array([0]), GRID, 4).heatmap[0]
    # x 20.5 m -> row 20, y 0.5 m -> col 32.
    assert heatmap[20, 32] == 1.0
    assert heatmap[21, 32] == pytest.approx(math.exp(-1 / (2 * (5 / 6) ** 2)), rel=1e-6)
    assert heatmap[22, 34] == pytest.approx(math.exp(-8 / (2 * (5 / 6) ** 2)), rel=1e-6)
    assert heatmap[23, 32] == 0.0 and heatmap[20, 35] == 0.0
    assert np.count_nonzero(heatmap) == 25


def test_large_box_radius_follows_the_formula():
    # 20 m x 10 m: radius 6 cells, so the Gaussian reaches 6 cells out and no further.
    heatmap = build_targets(np.array([box(30.5, 0.5, 20.0, 10.0)]), np.array([0]), GRID, 4).heatmap[0]
    sigma = 13 / 6
    assert heatmap[30, 32 + 6] == pytest.approx(math.exp(-36 / (2 * sigma ** 2)), rel=1e-6)
    assert heatmap[30, 32 + 7] == 0.0
    np.testing.assert_array_equal(heatmap[24:37, 26:39], gaussian_patch(6))


def test_overlapping_objects_take_the_element_wise_max():
    boxes = np.array([box(20.5, 0.5), box(22.5, 1.5, yaw=1.0)])
    both = build_targets(boxes, np.array([0, 0]), GRID, 4).heatmap
    first = build_targets(boxes[:1], np.array([0]), GRID, 4).heatmap
    second = build_targets(boxes[1:], np.array([0]), GRID, 4).heatmap
    assert np.count_nonzero((first > 0) & (second > 0)) > 0
    np.testing.assert_array_equal(both, np.maximum(first, second))
    # Different classes do not mix.
    apart = build_targets(boxes, np.array([0, 3]), GRID, 4).heatmap
    np.testing.assert_array_equal(apart[0], first[0])
    np.testing.assert_array_equal(apart[3], second[0])


def test_boxes_outside_the_grid_are_skipped():
    boxes = np.array([box(-0.5, 0.0), box(64.0, 0.0), box(10.0, 32.0), box(10.0, -32.5),
                      box(63.9, 31.9), box(0.0, -32.0)])
    targets = build_targets(boxes, np.array([0, 1, 2, 3, 0, 1]), GRID, 4)
    assert targets.mask.sum() == 2
    assert targets.ind[:2].tolist() == [63 * 64 + 63, 0]
    assert targets.cls[:2].tolist() == [0, 1]
    assert targets.heatmap[0, 63, 63] == 1.0 and targets.heatmap[1, 0, 0] == 1.0
    assert targets.heatmap[2:].max() == 0.0


def test_max_objects_keeps_the_first_in_grid_boxes():
    boxes = np.array([box(5.5 + 3 * i, 0.5) for i in range(6)])
    targets = build_targets(boxes, np.zeros(6, np.int64), GRID, 4, max_objects=4)
    assert targets.reg.shape == (4, 8) and targets.mask.all()
    assert targets.ind.tolist() == [(5 + 3 * i) * 64 + 32 for i in range(4)]


def test_no_boxes_gives_empty_targets_and_bad_classes_are_rejected():
    targets = build_targets(np.zeros((0, 7)), np.zeros(0, np.int64), GRID, 4)
    assert targets.heatmap.max() == 0 and not targets.mask.any()
    with pytest.raises(ValueError, match=r'\[0, 4\)'):
        build_targets(np.array([box(5, 0)]), np.array([4]), GRID, 4)


def test_reg_radius_regresses_each_box_from_the_cells_around_its_centre():
    from mtl_perception_ros.core.box_coding import decode_regression
    # a truck whose centre cell is (10, 32), and a pedestrian 2.2 m to its left at (10, 34): the
    # cell between them, (10, 33), is nearer the truck's centre (0.8 vs 1.4 cells) and goes to it.
    boxes = np.array([box(10.3, 0.7, length=10.0, width=2.5), box(10.3, 2.9, length=0.6, width=0.6)])
    plain = build_targets(boxes, np.array([1, 2]), GRID, num_classes=4)
    dense = build_targets(boxes, np.array([1, 2]), GRID, num_classes=4, reg_radius=1)
    assert len(dense.mask) == 9 * len(plain.mask)
    np.testing.assert_array_equal(dense.heatmap, plain.heatmap)     # the heatmap does not change
    for name in ('reg', 'ind', 'cls'):                              # the centre slots come first, as before
        np.testing.assert_array_equal(getattr(dense, name)[:2], getattr(plain, name)[:2])
    valid = dense.mask
    rows, cols = dense.ind[valid] // 64, dense.ind[valid] % 64
    decoded = decode_regression(dense.reg[valid], rows, cols, GRID)
    owner = dense.cls[valid]
    # every slot decodes its own box exactly, whichever cell it sits in
    np.testing.assert_allclose(decoded[:, :2], boxes[np.where(owner == 1, 0, 1), :2], atol=1e-5)
    cells = {(int(r), int(c)): int(k) for r, c, k in zip(rows, cols, owner)}
    assert len(cells) == valid.sum()                                # no cell has two slots
    assert cells[(10, 33)] == 1 and cells[(10, 34)] == 2 and cells[(10, 32)] == 1
    assert sum(k == 1 for k in cells.values()) == 9                 # the truck's full 3 x 3
    assert sum(k == 2 for k in cells.values()) == 6                 # the pedestrian loses column 33
    # loss weights: 1 at the centres, the box's heatmap Gaussian elsewhere (radius 2: sigma 5/6)
    weight = dict(zip(zip(rows.tolist(), cols.tolist()), dense.weight[valid].tolist()))
    assert weight[(10, 32)] == 1.0 and weight[(10, 34)] == 1.0
    assert weight[(11, 35)] == pytest.approx(math.exp(-2 / (2 * (5 / 6) ** 2)), rel=1e-5)
    np.testing.assert_array_equal(dense.weight[~valid], 0.0)
    with pytest.raises(ValueError, match='reg_radius'):
        build_targets(boxes, np.array([1, 2]), GRID, num_classes=4, reg_radius=-1)


def test_reg_radius_stays_inside_the_grid_and_never_takes_another_box_centre():
    # a box in the corner cell (0, 0) and one in the cell next to it: (0, 1) stays the second's
    boxes = np.array([box(0.5, -31.5, 0.6, 0.6), box(0.5, -30.4, 0.6, 0.6)])
    dense = build_targets(boxes, np.array([2, 3]), GRID, num_classes=4, reg_radius=2)
    rows, cols = dense.ind[dense.mask] // 64, dense.ind[dense.mask] % 64
    assert rows.min() >= 0 and cols.min() >= 0
    owners = dict(zip(zip(rows.tolist(), cols.tolist()), dense.cls[dense.mask].tolist()))
    assert owners[(0, 0)] == 2 and owners[(0, 1)] == 3
    assert len(owners) == dense.mask.sum()
