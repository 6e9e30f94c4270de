"""Timing helper shared by the benchmark scripts (each runs as `python benchmarks/bench_X.py`)."""
import time

import numpy as np


def median_ms(function, repeats: int) -> float:
    """Median wall time of `function()` over `repeats` calls after one warm-up call, in milliseconds."""
    function()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3
