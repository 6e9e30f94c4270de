"""Multi-object tracking metrics in BEV: CLEAR-MOT (MOTA, MOTP, ID switches, fragmentations)
and the identity metrics IDF1 / IDP / IDR.

Matching, per class and per frame, with BEV centre distance < max_distance_m (2 m, strict):
1. Correspondences kept from the past (Bernardin & Stiefelhagen 2008, CLEAR-MOT; as in
   py-motmetrics, "past" = the last hypothesis each GT object was matched to, even frames ago):
   if that hypothesis is present and still within the distance, the pair is matched again.
2. The remaining objects and hypotheses are matched by the Hungarian algorithm
   (scipy.optimize.linear_sum_assignment) minimising the summed distance among pairs within the
   threshold, after maximising their number.
3. A new match of an object whose last matched hypothesis was a different one is an ID switch.
   Unmatched objects are misses (FN), unmatched hypotheses false positives (FP).

MOTA = 1 - (FN + FP + IDSW) / num_gt; MOTP = mean distance of matched pairs (metres).
Fragmentations (as py-motmetrics): for each GT trajectory, over the frames where it exists
between its first and last matched frame, the number of times it goes from matched to missed.
IDF1 (Ristani et al. 2016): one global one-to-one assignment of GT trajectories to hypothesis
trajectories maximising IDTP = the number of frames in which the assigned pair is within the
distance (linear_sum_assignment on the pairwise co-occurrence counts); IDFN = GT detections -
IDTP, IDFP = hypothesis detections - IDTP; IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN).

Classes are evaluated separately (an object and a hypothesis of different classes never match;
a hypothesis whose class changes becomes separate trajectories per class). "overall" is computed
from the counts summed over classes. Call start_sequence() between scenes: identities and
kept correspondences do not carry across sequences.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from mtl_perception_ros.core.matching import gated_assignment

COUNT_KEYS = ('num_frames', 'num_gt', 'num_hyp', 'num_matches', 'fn', 'fp', 'idsw', 'frag',
              'idtp', 'idfp', 'idfn')


def match_tracks_to_gt(gt_ids: np.ndarray, gt_xy: np.ndarray, hyp_ids: np.ndarray, hyp_xy: np.ndarray,
                       previous: dict, max_distance_m: float) -> list[tuple[int, int, float, bool]]:
    """CLEAR-MOT matching of one frame of one class.

    gt_ids (M,), gt_xy (M, 2), hyp_ids (N,), hyp_xy (N, 2); `previous` maps a GT id to the
    hypothesis id it was last matched to. Returns [(gt index, hyp index, distance m, is_switch)].
    """
    if len(gt_ids) == 0 or len(hyp_ids) == 0:
        return []
    distance = np.hypot(gt_xy[:, None, 0] - hyp_xy[None, :, 0], gt_xy[:, None, 1] - hyp_xy[None, :, 1])
    within = distance < max_distance_m
    gt_free = np.ones(len(gt_ids), dtype=bool)
    hyp_free = np.ones(len(hyp_ids), dtype=bool)
    hyp_index = {int(h): j for j, h in enumerate(hyp_ids)}
    matches = []
    for i, gt_id in enumerate(gt_ids):
        j = hyp_index.get(previous.get(int(gt_id), None), None)
        if j is not None and hyp_free[j] and within[i, j]:
            matches.append((i, j, float(distance[i, j]), False))
            gt_free[i] = hyp_free[j] = False
    rows, cols = np.nonzero(gt_free)[0], np.nonzero(hyp_free)[0]
    if len(rows) and len(cols):
        # Maximum number of matches first, then minimum total distance (strictly within the distance).
        for r, c in zip(*gated_assignment(distance[np.ix_(rows, cols)], max_distance_m, inclusive=False)):
            i, j = int(rows[r]), int(cols[c])
            last = previous.get(int(gt_ids[i]), None)
            matches.append((i, j, float(distance[i, j]), last is not None and last != int(hyp_ids[j])))
    return matches


class _ClassState:
    """Counts and per-trajectory history of one class."""

    def __init__(self):
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.distance_sum = 0.0
        self.previous: dict[int, int] = {}
        self.gt_tracked: dict[tuple, list[bool]] = defaultdict(list)
        self.gt_length: dict[tuple, int] = defaultdict(int)
        self.hyp_length: dict[tuple, int] = defaultdict(int)
        self.pair_overlap: dict[tuple, int] = defaultdict(int)


class TrackingAccumulator:
    """Streams frames of (GT, hypothesis) tracks; compute() gives CLEAR-MOT and IDF1 metrics.

    update() per frame: gt_ids (M,) int, gt_xy (M, 2) metres, gt_classes (M,) int, hyp_ids (N,)
    int, hyp_xy (N, 2), hyp_classes (N,) int; ids unique within a frame and class.
    """

    def __init__(self, class_names, max_distance_m: float = 2.0):
        self.class_names = tuple(class_names)
        self.max_distance_m = float(max_distance_m)
        self.reset()

    def reset(self) -> None:
        self._states = [_ClassState() for _ in self.class_names]
        self._sequence = 0
        self.num_frames = 0

    def start_sequence(self) -> None:
        """Begin a new scene: ids are namespaced per sequence, kept correspondences dropped."""
        self._sequence += 1
        for state in self._states:
            state.previous = {}

    def update(self, gt_ids, gt_xy, gt_classes, hyp_ids, hyp_xy, hyp_classes) -> None:
        gt_ids, gt_xy, gt_classes = self._check('gt', gt_ids, gt_xy, gt_classes)
        hyp_ids, hyp_xy, hyp_classes = self._check('hyp', hyp_ids, hyp_xy, hyp_classes)
        self.num_frames += 1
        seq = self._sequence
        for cls, state in enumerate(self._states):
            g = np.nonzero(gt_classes == cls)[0]
            h = np.nonzero(hyp_classes == cls)[0]
            c_gt_ids, c_hyp_ids = gt_ids[g], hyp_ids[h]
            for kind, ids in (('gt', c_gt_ids), ('hyp', c_hyp_ids)):
                if len(np.unique(ids)) != len(ids):
                    raise ValueError(f'{kind}_ids: duplicate ids {ids.tolist()} in one frame for class '
                                     f'{self.class_names[cls]!r}')
            state.counts['num_frames'] += 1
            matches = match_tracks_to_gt(c_gt_ids, gt_xy[g], c_hyp_ids, hyp_xy[h], state.previous,
                                         self.max_distance_m)
            matched_gt = np.zeros(len(g), dtype=bool)
            for i, j, distance, is_switch in matches:
                matched_gt[i] = True
                state.previous[int(c_gt_ids[i])] = int(c_hyp_ids[j])
                state.distance_sum += distance
                state.counts['idsw'] += int(is_switch)
            counts = state.counts
            counts['num_gt'] += len(g)
            counts['num_hyp'] += len(h)
            counts['num_matches'] += len(matches)
            counts['fn'] += len(g) - len(matches)
            counts['fp'] += len(h) - len(matches)
            for i, gt_id in enumerate(c_gt_ids):
                state.gt_tracked[(seq, int(gt_id))].append(bool(matched_gt[i]))
                state.gt_length[(seq, int(gt_id))] += 1
            for hyp_id in c_hyp_ids:
                state.hyp_length[(seq, int(hyp_id))] += 1
            if len(g) and len(h):
                d = np.hypot(gt_xy[g][:, None, 0] - hyp_xy[h][None, :, 0],
                             gt_xy[g][:, None, 1] - hyp_xy[h][None, :, 1])
                for i, j in zip(*np.nonzero(d < self.max_distance_m)):
                    state.pair_overlap[((seq, int(c_gt_ids[i])), (seq, int(c_hyp_ids[j])))] += 1

    def compute(self) -> dict:
        """dict: per class name and 'overall' -> metrics (see _metrics_from_counts)."""
        result = {}
        total = dict.fromkeys(COUNT_KEYS, 0)
        total_distance = 0.0
        for name, state in zip(self.class_names, self._states):
            counts = dict(state.counts)
            counts['frag'] = sum(count_fragmentations(t) for t in state.gt_tracked.values())
            counts['idtp'] = id_true_positives(state.gt_length, state.hyp_length, state.pair_overlap)
            counts['idfn'] = counts['num_gt'] - counts['idtp']
            counts['idfp'] = counts['num_hyp'] - counts['idtp']
            result[name] = _metrics_from_counts(counts, state.distance_sum)
            for key in COUNT_KEYS:
                total[key] += counts[key]
            total_distance += state.distance_sum
        total['num_frames'] = self.num_frames
        result['overall'] = _metrics_from_counts(total, total_distance)
        return result

    def _check(self, kind: str, ids, xy, classes):
        ids = np.asarray(ids).reshape(-1)
        xy = np.asarray(xy, dtype=np.float64)
        classes = np.asarray(classes).reshape(-1)
        n = len(ids)
        xy = xy.reshape(0, 2) if xy.size == 0 else xy
        if xy.shape[0] != n or xy.ndim != 2 or xy.shape[1] < 2 or classes.shape != (n,):
            raise ValueError(f'{kind}: expected {kind}_ids (N,), {kind}_xy (N, 2), {kind}_classes (N,), '
                             f'got {ids.shape}, {xy.shape}, {classes.shape}')
        if n and not (np.issubdtype(ids.dtype, np.integer) and np.issubdtype(classes.dtype, np.integer)):
            raise ValueError(f'{kind}: ids and classes must be integers, got {ids.dtype}, {classes.dtype}')
        if n and (classes.min() < 0 or classes.max() >= len(self.class_names)):
            raise ValueError(f'{kind}_classes: expected ids in 0..{len(self.class_names) - 1}, '
                             f'got {np.unique(classes).tolist()}')
        return ids.astype(np.int64), xy[:, :2], classes.astype(np.int64)


def count_fragmentations(tracked: list[bool]) -> int:
    """Matched/missed flags of one GT trajectory over the frames where it exists -> the number of
    matched -> missed transitions between its first and last matched frame."""
    flags = np.asarray(tracked, dtype=bool)
    hits = np.nonzero(flags)[0]
    if len(hits) == 0:
        return 0
    span = flags[hits[0]:hits[-1] + 1]
    return int(np.count_nonzero(span[:-1] & ~span[1:]))


def id_true_positives(gt_length: dict, hyp_length: dict, pair_overlap: dict) -> int:
    """Global ID assignment: max over one-to-one GT <-> hypothesis trajectory assignments of the
    summed co-occurrence (frames in which the pair is within the distance)."""
    if not pair_overlap:
        return 0
    gt_keys = {key: i for i, key in enumerate(gt_length)}
    hyp_keys = {key: j for j, key in enumerate(hyp_length)}
    overlap = np.zeros((len(gt_keys), len(hyp_keys)), dtype=np.int64)
    for (gt_key, hyp_key), count in pair_overlap.items():
        overlap[gt_keys[gt_key], hyp_keys[hyp_key]] = count
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return int(overlap[rows, cols].sum())


def _metrics_from_counts(counts: dict, distance_sum: float) -> dict:
    """Counts -> dict with the counts plus mota, motp_m, idf1, idp, idr (NaN when undefined)."""
    num_gt, num_hyp, idtp = counts['num_gt'], counts['num_hyp'], counts['idtp']
    nan = float('nan')
    out = {key: int(counts[key]) for key in COUNT_KEYS}
    out['mota'] = 1.0 - (counts['fn'] + counts['fp'] + counts['idsw']) / num_gt if num_gt else nan
    out['motp_m'] = distance_sum / counts['num_matches'] if counts['num_matches'] else nan
    out['idf1'] = 2.0 * idtp / (num_gt + num_hyp) if num_gt + num_hyp else nan
    out['idp'] = idtp / num_hyp if num_hyp else nan
    out['idr'] = idtp / num_gt if num_gt else nan
    return out
