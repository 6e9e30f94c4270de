"""Gated one-to-one assignment, shared by the tracker's association and the tracking metrics."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def gated_assignment(cost: np.ndarray, gate: float, inclusive: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment among the pairs within the gate (cost <= gate, or cost < gate when not
    `inclusive`): the most such pairs first, then the least summed cost. cost (M, N) >= 0.

    Returns (rows, cols): int64 indices of the matched pairs, in row order.
    """
    cost = np.asarray(cost, dtype=np.float64)
    within = cost <= gate if inclusive else cost < gate
    rows_used = np.nonzero(within.any(axis=1))[0]
    cols_used = np.nonzero(within.any(axis=0))[0]
    if len(rows_used) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sub_within = within[np.ix_(rows_used, cols_used)]
    # A pair outside the gate costs more than any set of pairs inside it: the most pairs win first.
    outside_cost = gate * (min(sub_within.shape) + 1)
    rows, cols = linear_sum_assignment(np.where(sub_within, cost[np.ix_(rows_used, cols_used)], outside_cost))
    keep = sub_within[rows, cols]
    return rows_used[rows[keep]].astype(np.int64), cols_used[cols[keep]].astype(np.int64)
