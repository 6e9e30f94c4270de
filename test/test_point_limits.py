"""Limits on a cloud's points before the model: non-finite and absurd points dropped, intensity
clamped to [0, 1], at most max_points kept by a seeded uniform subsample; counts per reason."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from mtl_perception_ros.core.point_limits import (DEFAULT_MAX_POINTS, POINT_LIMIT_REASONS, cap_points,
                                                  limit_points)

NO_COUNTS = dict.fromkeys(POINT_LIMIT_REASONS, 0)


def lidar_points(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-80, 80, (count, 2)), rng.uniform(-2, 4, count),
                            rng.uniform(0, 1, count)]).astype(np.float32)


def test_a_clean_cloud_passes_untouched():
    points = lidar_points(1000)
    kept, counts = limit_points(points)
    assert kept is points and counts == NO_COUNTS
    assert DEFAULT_MAX_POINTS == 128 * 2048
    empty, counts = limit_points(np.zeros((0, 4), np.float32))
    assert empty.shape == (0, 4) and counts == NO_COUNTS


def test_each_rule_on_hand_made_points():
    good = [1.0, 2.0, 0.5, 0.25]
    points = np.array([
        good,
        [np.nan, 2.0, 0.5, 0.25],          # non_finite
        [1.0, 2.0, 0.5, np.inf],           # non_finite (intensity)
        [np.nan, 3e38, 0.5, 3e38],         # non_finite: counted once, under the first rule
        [1.0, 3e38, 0.5, 0.25],            # coordinate_out_of_range
        [-2e4, 2.0, 0.5, 0.25],            # coordinate_out_of_range
        [1.0, 2.0, 1.5e4, 7.0],            # coordinate_out_of_range (its intensity is not counted)
        [9999.0, -9999.0, 0.5, 0.25],      # within 10 km: kept
        [3.0, 4.0, 0.5, 3e38],             # intensity_clamped -> 1
        [3.0, 4.0, 0.5, -0.5],             # intensity_clamped -> 0
        [3.0, 4.0, 0.5, 1.0],              # 0 and 1 are in range
        [3.0, 4.0, 0.5, 0.0],
    ], dtype=np.float32)
    before = points.copy()
    kept, counts = limit_points(points)
    assert counts == {'non_finite': 3, 'coordinate_out_of_range': 3, 'intensity_clamped': 2, 'over_max_points': 0}
    np.testing.assert_array_equal(kept, np.array([good, [9999.0, -9999.0, 0.5, 0.25], [3, 4, 0.5, 1], [3, 4, 0.5, 0],
                                                  [3, 4, 0.5, 1], [3, 4, 0.5, 0]], np.float32))
    np.testing.assert_array_equal(points, before)     # the input is never modified
    # clamping alone copies too
    only_clamp = np.array([good, [3.0, 4.0, 0.5, 2.0]], np.float32)
    kept, counts = limit_points(only_clamp)
    assert kept[1, 3] == 1.0 and only_clamp[1, 3] == 2.0 and counts['intensity_clamped'] == 1
    # without an intensity column only the coordinates are checked
    kept, counts = limit_points(np.array([[1.0, 2.0, 3.0, 50.0]], np.float32), intensity_column=None)
    assert kept[0, 3] == 50.0 and counts == NO_COUNTS
    kept, counts = limit_points(np.array([[np.nan, 0, 0, 0]], np.float32))
    assert kept.shape == (0, 4) and counts['non_finite'] == 1


def test_intensity_3e38_from_a_message_reaches_the_model_as_1():
    """The conversion's intensity_scale (1/255) leaves 3e38 finite; 255 as a wrong scale makes it inf,
    which the conversion drops (without an overflow warning)."""
    pytest.importorskip('sensor_msgs.msg', reason='needs the ROS 2 message packages')
    from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2, pointcloud2_to_array
    msg = array_to_pointcloud2(np.array([[10, 0, 0, 3e38], [12, 1, 0, 128]], np.float32))
    read, dropped = pointcloud2_to_array(msg, scales={'intensity': 1 / 255})
    assert dropped == 0 and read[0, 3] > 1e35
    kept, counts = limit_points(read)
    np.testing.assert_allclose(kept[:, 3], [1.0, 128 / 255], rtol=1e-6)
    assert counts['intensity_clamped'] == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        read, dropped = pointcloud2_to_array(msg, scales={'intensity': 255.0})
    assert dropped == 1 and read.tolist() == [[12, 1, 0, 128 * 255]]
    kept, counts = limit_points(read)
    assert counts['intensity_clamped'] == 1 and kept.tolist() == [[12, 1, 0, 1]]
    read, dropped = pointcloud2_to_array(msg, scales={'intensity': 255.0}, drop_nonfinite=False)   # as bags read
    kept, counts = limit_points(read)
    assert dropped == 0 and counts['non_finite'] == 1 and kept.tolist() == [[12, 1, 0, 1]]


def test_cap_keeps_a_seeded_uniform_subset_in_cloud_order():
    points = lidar_points(50_000)
    points[:, 0] = np.arange(50_000)            # row index in x: order and coverage are visible
    kept, dropped = cap_points(points, 10_000)
    assert kept.shape == (10_000, 4) and dropped == 40_000
    assert np.all(np.diff(kept[:, 0]) > 0)      # a subsequence, in the cloud's order, no repeats
    np.testing.assert_array_equal(points[kept[:, 0].astype(int)], kept)
    np.testing.assert_array_equal(cap_points(points, 10_000)[0], kept)          # same cloud, same points
    assert not np.array_equal(cap_points(points, 10_000, seed=1)[0], kept)
    # uniform: every tenth of the cloud (e.g. near and far) keeps about a fifth of its points
    per_tenth = np.bincount((kept[:, 0] // 5_000).astype(int), minlength=10)
    assert per_tenth.min() > 850 and per_tenth.max() < 1150
    assert cap_points(points, 50_000)[0] is points and cap_points(points, 0) == (points, 0)
    with pytest.raises(ValueError, match=r'max_points must be >= 0 \(0 = no cap\), got -1'):
        cap_points(points, -1)


def test_the_cap_counts_after_the_bad_points_are_gone():
    points = lidar_points(110)
    points[:10, 2] = np.nan
    kept, counts = limit_points(points, max_points=100)
    assert counts == {'non_finite': 10, 'coordinate_out_of_range': 0, 'intensity_clamped': 0, 'over_max_points': 0}
    np.testing.assert_array_equal(kept, points[10:])
    kept, counts = limit_points(lidar_points(300_000))
    assert len(kept) == DEFAULT_MAX_POINTS and counts['over_max_points'] == 300_000 - DEFAULT_MAX_POINTS


def test_inputs_that_are_not_points_are_refused():
    with pytest.raises(ValueError, match=r'\(N, >=3\) float array'):
        limit_points(np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match=r'\(N, >=3\) float array'):
        limit_points(np.zeros((5, 4), np.int32))
    with pytest.raises(ValueError, match='intensity_column 3 is not a column'):
        limit_points(np.zeros((5, 3), np.float32))
