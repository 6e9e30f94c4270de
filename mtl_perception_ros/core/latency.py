"""Latency summaries (p50 / p95 in ms) shared by the node's diagnostics, the bag evaluation and
the benchmarks, so all of them report the same statistic (numpy's linear-interpolated percentile)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def latency_percentiles(values_ms: Sequence[float]) -> tuple[float, float]:
    """(p50, p95) of a non-empty sequence of latencies."""
    p50, p95 = np.percentile(np.asarray(values_ms, dtype=np.float64), (50, 95))
    return float(p50), float(p95)


def latency_summary(samples_ms: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
    """stage -> latencies (ms)  ->  stage -> (p50, p95); stages without samples are left out."""
    return {stage: latency_percentiles(values) for stage, values in samples_ms.items() if len(values)}
