"""Message types for bags without ROS: the rosbags typestore, (de)serialization, the message factory.

Types come from `bag_typestore()`: rosbags' Humble store (sensor_msgs, geometry_msgs, tf2_msgs,
rosgraph_msgs, visualization_msgs, diagnostic_msgs, ...; the same definitions and type hashes as
Jazzy/Kilted for these) plus vision_msgs registered from its .msg files (third_party/vision_msgs
in the source tree, else an installed share/vision_msgs/msg). `ensure_msgtype` adds any other
type whose .msg file an installed ROS prefix has.

`bag_message` is the rosbags message factory of messages.message_factory: the shared builders
(messages.outputs, .pointcloud2, .image, ...) called with `new=bag_message` build rosbags
messages with the same content as the rclpy messages the node publishes.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype

__all__ = ['ros_prefixes', 'find_msg_file', 'ensure_msgtype', 'bag_typestore', 'msg_class', 'serialize',
           'deserialize', 'bag_message']

_REPO_VISION_MSGS = Path(__file__).resolve().parents[2] / 'third_party' / 'vision_msgs' / 'msg'

# rosbags keeps no default values from the .msg files; these are the non-zero ones of the ROS 2
# common interfaces (every other field defaults to 0 / '' / empty).
_NONZERO_DEFAULTS = {'geometry_msgs/msg/Quaternion': {'w': 1.0}, 'sensor_msgs/msg/NavSatStatus': {'status': -2}}
_NUMPY_OF_BASE = {'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'octet': np.uint8, 'int8': np.int8,
                  'uint8': np.uint8, 'int16': np.int16, 'uint16': np.uint16, 'int32': np.int32,
                  'uint32': np.uint32, 'int64': np.int64, 'uint64': np.uint64, 'float32': np.float32,
                  'float64': np.float64}


# ----------------------------------------------------------------------------- types
def ros_prefixes() -> list[Path]:
    """Install prefixes that may hold share/<package>/msg: AMENT_PREFIX_PATH, then this Python's prefix."""
    paths = [Path(p) for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    return paths + [Path(sys.prefix)]


def find_msg_file(msgtype: str) -> Path | None:
    """The .msg file of 'pkg/msg/Name' in an installed ROS prefix (vision_msgs: also third_party/), or None."""
    package, _, name = msgtype.split('/')
    candidates = [_REPO_VISION_MSGS / f'{name}.msg'] if package == 'vision_msgs' else []
    candidates += [prefix / 'share' / package / 'msg' / f'{name}.msg' for prefix in ros_prefixes()]
    return next((path for path in candidates if path.is_file()), None)


def _referenced_types(fields) -> set[str]:
    names = set()
    for _, (kind, detail) in fields:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, detail = detail[0]
        if kind == Nodetype.NAME:
            names.add(detail)
    return names


def ensure_msgtype(typestore, msgtype: str) -> bool:
    """Register `msgtype` (and the types it uses) from installed .msg files unless known; False when not found."""
    pending, found = [msgtype], {}
    while pending:
        name = pending.pop()
        if name in typestore.fielddefs or name in found:
            continue
        path = find_msg_file(name) if name.count('/') == 2 else None
        if path is None:
            return False
        parsed = get_types_from_msg(path.read_text(), name)
        found.update(parsed)
        pending.extend(_referenced_types(parsed[name][1]))
    if found:
        typestore.register(found)
    return True


@functools.lru_cache(maxsize=1)
def bag_typestore():
    """rosbags' ROS 2 Humble typestore with vision_msgs registered (shared; `ensure_msgtype` extends it)."""
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    msg_dir = _REPO_VISION_MSGS if _REPO_VISION_MSGS.is_dir() else None
    if msg_dir is None:
        installed = find_msg_file('vision_msgs/msg/Detection2DArray')
        msg_dir = installed.parent if installed is not None else None
    if msg_dir is not None:
        types = {}
        for path in sorted(msg_dir.glob('*.msg')):
            types.update(get_types_from_msg(path.read_text(), f'vision_msgs/msg/{path.stem}'))
        typestore.register(types)
    return typestore


def msg_class(msgtype: str):
    """The rosbags message class of 'pkg/msg/Name' (vision_msgs included)."""
    typestore = bag_typestore()
    if msgtype not in typestore.types and not ensure_msgtype(typestore, msgtype):
        raise KeyError(f'message type {msgtype} is unknown: no definition in rosbags and no {msgtype}.msg '
                       f'under {[str(p) for p in ros_prefixes()]}/share')
    return typestore.types[msgtype]


def serialize(msg) -> bytes:
    """A rosbags message -> CDR bytes (little endian, with the 4-byte encapsulation header, as rmw sends them)."""
    return bytes(bag_typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes, msgtype: str):
    """CDR bytes -> rosbags message object."""
    msg_class(msgtype)
    return bag_typestore().deserialize_cdr(data, msgtype)


# ----------------------------------------------------------------------------- the message factory
def _default_maker(kind, detail):
    """A zero-argument callable making a fresh default value of one field definition."""
    if kind == Nodetype.NAME:
        return functools.partial(bag_message, detail)
    if kind == Nodetype.BASE:
        base = detail[0]
        if base in ('string', 'wstring'):
            return str
        return bool if base == 'bool' else float if base.startswith('float') else int
    (element_kind, element), size = detail
    dtype = _NUMPY_OF_BASE.get(element[0]) if element_kind == Nodetype.BASE else None
    if kind == Nodetype.ARRAY:
        if dtype is not None:
            return functools.partial(np.zeros, size, dtype=dtype)
        item = _default_maker(element_kind, element)
        return lambda: [item() for _ in range(size)]
    return functools.partial(np.zeros, 0, dtype=dtype) if dtype is not None else list


@functools.lru_cache(maxsize=None)
def _message_plan(msgtype: str):
    """(class, [(field, default maker, numpy dtype of a numeric array field or None)]) of a type."""
    cls = msg_class(msgtype)
    overrides = _NONZERO_DEFAULTS.get(msgtype, {})
    plan = []
    for name, (kind, detail) in bag_typestore().fielddefs[msgtype][1]:
        maker = (lambda value=overrides[name]: value) if name in overrides else _default_maker(kind, detail)
        dtype = None
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) and detail[0][0] == Nodetype.BASE:
            dtype = _NUMPY_OF_BASE.get(detail[0][1][0])
        plan.append((name, maker, dtype))
    return cls, tuple(plan), frozenset(name for name, _, _ in plan)


def bag_message(msgtype: str, **fields):
    """A rosbags message of `msgtype` ('pkg/msg/Name') with `fields` set and every other field at its
    ROS default (nested messages too). Numeric arrays are stored as numpy arrays of the field's
    dtype (no copy when they already are), as rosbags serializes them."""
    cls, plan, names = _message_plan(msgtype)
    unknown = fields.keys() - names
    if unknown:
        raise TypeError(f'{msgtype} has no fields {sorted(unknown)}; it has {[name for name, _, _ in plan]}')
    values = {}
    for name, maker, dtype in plan:
        if name not in fields:
            values[name] = maker()
        elif dtype is not None:
            values[name] = np.asarray(fields[name], dtype=dtype).reshape(-1)
        else:
            values[name] = fields[name]
    return cls(**values)
