"""Cost of the per-cloud point limits (mtl_perception_ros.core.point_limits.limit_points): a clean
cloud (the fast path), one with 1 % each of non-finite, absurd and out-of-range-intensity points,
and the max_points cap, for a 120k-point cloud, a full 128 x 2048 scan and a 2 M-point cloud.

Run: .venv/bin/python benchmarks/bench_point_limits.py [--repeats 20]
Prints medians over the repeats (milliseconds).
"""
from __future__ import annotations

import argparse

import numpy as np

from mtl_perception_ros.core.point_limits import DEFAULT_MAX_POINTS, cap_points, limit_points
from timing import median_ms


def cloud(count: int, bad_fraction: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-80, 80, (count, 2)), rng.uniform(-2, 4, count),
                              rng.uniform(0, 1, count)]).astype(np.float32)
    if bad_fraction:
        step = int(round(1 / bad_fraction))
        points[::step, 0] = np.nan
        points[1::step, 1] = 3e38
        points[2::step, 3] = 3e38
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=20)
    args = parser.parse_args()
    print(f'limit_points, (N, 4) float32, max_points {DEFAULT_MAX_POINTS} (median ms)')
    print(f'{"points":>10}{"clean, no cap":>16}{"1% bad each":>14}{"cap only":>12}')
    for count in (120_000, DEFAULT_MAX_POINTS, 2_000_000):
        clean, bad = cloud(count), cloud(count, 0.01)
        row = [median_ms(lambda: limit_points(clean, max_points=0), args.repeats),
               median_ms(lambda: limit_points(bad), args.repeats),
               median_ms(lambda: cap_points(clean), args.repeats)]
        print(f'{count:>10}' + ''.join(f'{value:>{width}.2f}' for value, width in zip(row, (16, 14, 12))))


if __name__ == '__main__':
    main()
