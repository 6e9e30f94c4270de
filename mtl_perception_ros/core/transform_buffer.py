"""A static + dynamic transform tree with tf2's lookup semantics, without ROS.

The node takes its extrinsics (point cloud frame -> camera optical frame) from TF. On a ROS
install that is tf2_ros; where tf2_ros is missing (the pip environment) it is this buffer, fed
from /tf and /tf_static by mtl_perception_ros.ros.tf_lookup. Offline bag evaluation fills one
from the bag's /tf_static. The semantics follow tf2's BufferCore:

- Every frame has one parent; `set_transform(parent, child, ...)` gives the pose of `child` in
  `parent` (child -> parent). A static transform holds at every time; a dynamic one is a history
  of stamped samples kept for `cache_time_s` (tf2's 10 s) behind the newest.
- `lookup(target, source, stamp_ns)` returns the 4x4 matrix that maps points in `source` into
  `target` (tf2's lookupTransform(target, source, time)), composed through the frames' common
  ancestor. Stamp 0 means the latest time at which every dynamic link of the chain has data (tf2's
  "latest common time"); any other stamp interpolates each dynamic link between the samples around
  it (linear translation, spherical rotation) and a stamp outside a link's samples is an
  extrapolation error. A frame to itself is the identity.
- Incoming transforms are checked as tf2 checks them (TransformError): frame ids set and
  different, finite numbers, a unit quaternion (|q|^2 within 0.01 of 1; normalised before use).
  A leading '/' of a frame id is dropped (a ROS 1 habit).

Deliberate differences: a new parent for a frame replaces its history (tf2 keeps samples with
either parent); a dynamic sample older than the link's newest minus the cache time restarts the
link's history (a replayed bag or a driver clock reset) where tf2 drops the sample (TF_OLD_DATA)
until the clock catches up; `clear()` drops the dynamic history and keeps the static transforms,
as tf2_ros does on a jump back of the clock.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from mtl_perception_ros.core.camera import invert_rigid

DEFAULT_CACHE_TIME_S = 10.0

# TransformUnavailable.kind
LOOKUP = 'lookup'                       # a frame is unknown
CONNECTIVITY = 'connectivity'           # both known, in different trees
EXTRAPOLATION_FUTURE = 'extrapolation_future'   # the stamp is after a link's newest sample
EXTRAPOLATION_PAST = 'extrapolation_past'       # the stamp is before a link's oldest sample
INVALID = 'invalid'                     # an empty frame id


class TransformError(ValueError):
    """A transform that cannot enter the buffer (tf2's TF_NAN_INPUT, TF_SELF_TRANSFORM, ...)."""


class TransformUnavailable(LookupError):
    """A lookup that the buffer cannot answer; `kind` says why (LOOKUP, CONNECTIVITY, ...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def frame_id(name: str) -> str:
    """A frame id as the buffer stores it: without a leading '/'."""
    return str(name).lstrip('/')


def slerp(q0: np.ndarray, q1: np.ndarray, ratio: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions along the shorter arc (ratio 0 -> q0, 1 -> q1)."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:                          # nearly the same: linear, renormalised
        q = q0 + ratio * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(dot, 1.0))
    return (np.sin((1 - ratio) * theta) * q0 + np.sin(ratio * theta) * q1) / np.sin(theta)


@dataclass
class _Sample:
    stamp_ns: int
    translation: np.ndarray       # (3,)
    rotation: np.ndarray          # (4,) unit quaternion x, y, z, w
    _matrix: np.ndarray | None = field(default=None, repr=False)

    def matrix(self) -> np.ndarray:
        """4x4 child -> parent (computed once: a static link is looked up every frame)."""
        if self._matrix is None:
            out = np.eye(4)
            out[:3, :3] = Rotation.from_quat(self.rotation).as_matrix()
            out[:3, 3] = self.translation
            self._matrix = out
        return self._matrix


@dataclass
class _Link:
    """child -> parent: one static sample, or a history of dynamic samples sorted by stamp."""
    parent: str
    static: bool
    samples: list = field(default_factory=list)

    @property
    def newest_ns(self) -> int:
        return self.samples[-1].stamp_ns

    def at(self, stamp_ns: int, child: str) -> np.ndarray:
        if self.static or stamp_ns == 0:
            return self.samples[-1].matrix()
        stamps = [s.stamp_ns for s in self.samples]
        if stamp_ns > stamps[-1] or stamp_ns < stamps[0]:
            future = stamp_ns > stamps[-1]
            raise TransformUnavailable(
                EXTRAPOLATION_FUTURE if future else EXTRAPOLATION_PAST,
                f'lookup would require extrapolation into the {"future" if future else "past"}: requested time '
                f'{stamp_ns * 1e-9:.9f} s but the {"latest" if future else "earliest"} data of {self.parent} -> '
                f'{child} is at {(stamps[-1] if future else stamps[0]) * 1e-9:.9f} s')
        index = int(np.searchsorted(stamps, stamp_ns))
        after = self.samples[index]
        if after.stamp_ns == stamp_ns:
            return after.matrix()
        before = self.samples[index - 1]
        ratio = (stamp_ns - before.stamp_ns) / (after.stamp_ns - before.stamp_ns)
        return _Sample(stamp_ns, before.translation + ratio * (after.translation - before.translation),
                       slerp(before.rotation, after.rotation, ratio)).matrix()


class TransformBuffer:
    """Static and dynamic transforms between named frames, looked up with tf2's semantics (module doc).
    Thread-safe: one thread may set while another looks up."""

    def __init__(self, cache_time_s: float = DEFAULT_CACHE_TIME_S):
        if not cache_time_s > 0:
            raise ValueError(f'cache_time_s must be > 0, got {cache_time_s}')
        self.cache_time_ns = int(round(cache_time_s * 1e9))
        self._links: dict[str, _Link] = {}       # child -> link to its parent
        self._lock = threading.Lock()
        self.restarted_links = 0                  # dynamic histories restarted by a stamp going back

    # ----------------------------------------------------------------------------- input
    def set_transform(self, parent: str, child: str, stamp_ns: int, translation, rotation,
                      static: bool = False) -> None:
        """The pose of `child` in `parent` at `stamp_ns`: translation (x, y, z), rotation quaternion
        (x, y, z, w). TransformError when tf2 would refuse it (module doc)."""
        parent, child = frame_id(parent), frame_id(child)
        if not child:
            raise TransformError(f'a transform from {parent!r} has an empty child_frame_id')
        if not parent:
            raise TransformError(f'the transform to {child!r} has an empty parent frame_id')
        if parent == child:
            raise TransformError(f'the transform of {child!r} names it as its own parent')
        translation = np.asarray(translation, dtype=np.float64).reshape(3)
        rotation = np.asarray(rotation, dtype=np.float64).reshape(4)
        if not (np.all(np.isfinite(translation)) and np.all(np.isfinite(rotation))):
            raise TransformError(f'the transform {parent} -> {child} has non-finite numbers: '
                                 f'translation {translation.tolist()}, rotation {rotation.tolist()}')
        norm2 = float(rotation @ rotation)
        if abs(norm2 - 1.0) > 0.01:
            raise TransformError(f'the rotation of {parent} -> {child} is not a unit quaternion '
                                 f'({rotation.tolist()}, |q|^2 = {norm2:.4f})')
        sample = _Sample(int(stamp_ns), translation, rotation / np.sqrt(norm2))
        with self._lock:
            link = self._links.get(child)
            if static or link is None or link.static or link.parent != parent:
                self._links[child] = _Link(parent, bool(static), [sample])
                return
            if sample.stamp_ns < link.newest_ns - self.cache_time_ns:
                self.restarted_links += 1
                link.samples = [sample]
                return
            stamps = [s.stamp_ns for s in link.samples]
            index = int(np.searchsorted(stamps, sample.stamp_ns))
            if index < len(stamps) and stamps[index] == sample.stamp_ns:
                link.samples[index] = sample          # the same stamp again: the newer message wins
            else:
                link.samples.insert(index, sample)
            oldest_kept = link.newest_ns - self.cache_time_ns
            while link.samples[0].stamp_ns < oldest_kept:
                link.samples.pop(0)

    def set_matrix(self, parent: str, child: str, stamp_ns: int, parent_from_child, static: bool = False) -> None:
        """set_transform from a 4x4 rigid matrix (child -> parent)."""
        matrix = np.asarray(parent_from_child, dtype=np.float64).reshape(4, 4)
        if not np.all(np.isfinite(matrix)):
            raise TransformError(f'the transform {parent} -> {child} has non-finite numbers')
        self.set_transform(parent, child, stamp_ns, matrix[:3, 3], Rotation.from_matrix(matrix[:3, :3]).as_quat(),
                           static=static)

    def clear(self) -> None:
        """Drop every dynamic transform; the static ones stay (tf2_ros on a jump back of the clock)."""
        with self._lock:
            self._links = {child: link for child, link in self._links.items() if link.static}

    # ----------------------------------------------------------------------------- lookups
    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """4x4 target_from_source at `stamp_ns` (0: the latest common time); TransformUnavailable
        when it cannot be answered (module doc)."""
        target, source = frame_id(target), frame_id(source)
        if not target or not source:
            raise TransformUnavailable(INVALID, f'a lookup needs two frame ids, got target {target!r} and source '
                                                f'{source!r}')
        with self._lock:
            known = set(self._links) | {link.parent for link in self._links.values()}
            for name, frame in (('target', target), ('source', source)):
                if frame not in known:
                    raise TransformUnavailable(LOOKUP, f'"{frame}" passed to lookup as the {name} frame does not '
                                                       f'exist' + (f' (frames: {", ".join(sorted(known))})' if known
                                                                   else ' (no transforms received)'))
            if target == source:
                return np.eye(4)
            source_chain, target_chain = self._chain(source), self._chain(target)
            target_frames = [frame for frame, _ in target_chain] + [self._root(target, target_chain)]
            common = None
            for depth, (frame, _) in enumerate(source_chain + [(self._root(source, source_chain), None)]):
                if frame in target_frames:
                    common = frame
                    source_links = source_chain[:depth]
                    target_links = target_chain[:target_frames.index(frame)]
                    break
            if common is None:
                raise TransformUnavailable(CONNECTIVITY, f'could not find a connection between "{target}" and '
                                                         f'"{source}": they are not part of the same tree')
            links = source_links + target_links
            if stamp_ns == 0:
                dynamic = [link.newest_ns for _, link in links if not link.static]
                stamp_ns = min(dynamic) if dynamic else 0
            common_from_source = np.eye(4)
            for child, link in source_links:          # source up to the common frame
                common_from_source = link.at(stamp_ns, child) @ common_from_source
            common_from_target = np.eye(4)
            for child, link in target_links:
                common_from_target = link.at(stamp_ns, child) @ common_from_target
        return invert_rigid(common_from_target) @ common_from_source

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
        except TransformUnavailable:
            return False
        return True

    def _chain(self, frame: str) -> list:
        """[(child, link)] from `frame` up to (not including) its root; a loop is a connectivity error."""
        chain, seen = [], {frame}
        while frame in self._links:
            link = self._links[frame]
            chain.append((frame, link))
            if link.parent in seen:
                raise TransformUnavailable(CONNECTIVITY, f'the transforms form a loop through "{link.parent}"')
            seen.add(link.parent)
            frame = link.parent
        return chain

    @staticmethod
    def _root(frame: str, chain: list) -> str:
        return chain[-1][1].parent if chain else frame

