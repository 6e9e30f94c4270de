"""Message factories: how the builders of this package make a message without knowing its world.

A factory is a callable `new(msgtype, **fields)` -> message, `msgtype` as 'pkg/msg/Name'. Fields
not given get their ROS defaults, nested messages included, so a builder may fill a nested field
in place (`msg.bbox.center.theta = yaw`). Numeric arrays (uint8[] data, float64[9] k, ...) are
given as numpy arrays; the factory stores them the way its world wants them, in one copy at most.

- `ros_message` (here): the rosidl-generated Python classes that rclpy publishes
  (`sensor_msgs.msg.Image`, ...), imported on first use of each type, so this module imports
  on a machine without ROS.
- `mtl_perception_ros.bags.typestore.bag_message`: rosbags message objects, for writing bags.

Inner loops (thousands of Points per MarkerArray) bind a type once with `message_maker(new,
msgtype)`; a factory with a `maker(msgtype)` method gives its fast path there (rclpy: the
generated class itself, so the builders cost what hand-written rclpy code costs).
"""
from __future__ import annotations

import array
import functools
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ['MessageFactory', 'RosMessageFactory', 'ros_message', 'ros_message_class', 'message_maker',
           'set_sequence']

MessageFactory = Callable[..., Any]

# rosidl basic type -> array.array typecode of its unbounded/bounded sequences (what rclpy stores).
_SEQUENCE_TYPECODES = {'float': 'f', 'double': 'd', 'int8': 'b', 'uint8': 'B', 'int16': 'h', 'uint16': 'H',
                       'int32': 'i', 'uint32': 'I', 'int64': 'q', 'uint64': 'Q'}
_ARRAY_DTYPES = {'float': np.float32, 'double': np.float64, 'int8': np.int8, 'uint8': np.uint8, 'int16': np.int16,
                 'uint16': np.uint16, 'int32': np.int32, 'uint32': np.uint32, 'int64': np.int64,
                 'uint64': np.uint64, 'boolean': np.bool_, 'octet': np.uint8, 'char': np.uint8}
_ROS_TYPES: dict[str, tuple[type, dict, dict]] = {}


def _as_sequence(typecode: str, dtype):
    def convert(value: np.ndarray) -> array.array:
        out = array.array(typecode)
        out.frombytes(np.ascontiguousarray(value, dtype=dtype).reshape(-1).view(np.uint8))
        return out
    return convert


def _ros_type(msgtype: str) -> tuple[type, dict, dict]:
    """(class, {sequence field: ndarray -> array.array}, {fixed array field: dtype}) of 'pkg/msg/Name'."""
    try:
        package, kind, name = msgtype.split('/')
    except ValueError:
        raise ValueError(f'message type {msgtype!r}: expected "package/msg/Name"') from None
    cls = getattr(importlib.import_module(f'{package}.{kind}'), name)
    sequences, arrays = {}, {}
    for field, type_name in cls.get_fields_and_field_types().items():
        if type_name.startswith('sequence<'):
            element = type_name[len('sequence<'):-1].split(',')[0].strip()
            if element in _SEQUENCE_TYPECODES:
                sequences[field] = _as_sequence(_SEQUENCE_TYPECODES[element], _ARRAY_DTYPES[element])
        elif type_name.endswith(']') and type_name.split('[')[0] in _ARRAY_DTYPES:
            arrays[field] = _ARRAY_DTYPES[type_name.split('[')[0]]
    return cls, sequences, arrays


def _known_ros_type(msgtype: str) -> tuple[type, dict, dict]:
    known = _ROS_TYPES.get(msgtype)
    return known if known is not None else _ROS_TYPES.setdefault(msgtype, _ros_type(msgtype))


def ros_message_class(msgtype: str) -> type:
    """The rosidl-generated class of 'pkg/msg/Name'; ImportError / AttributeError when it is not installed."""
    return _known_ros_type(msgtype)[0]


class RosMessageFactory:
    """The rclpy message factory (use the instance `ros_message`)."""

    def __call__(self, msgtype: str, **fields):
        """A rosidl-generated (rclpy) message of `msgtype` ('pkg/msg/Name') with `fields` set.

        numpy arrays for sequence fields (e.g. Image.data) become one array.array (a single
        memcpy; the generated setter would check and copy them element by element), an array.array
        of the field's typecode is stored as it is (no copy: set_sequence); for
        fixed-size arrays (e.g. CameraInfo.k) they are cast to the field's dtype and kept as numpy
        arrays. Fields are set after default construction, which is faster than constructor
        keywords for messages with many fields (the generated __init__ checks each name).
        """
        cls, sequences, arrays = _known_ros_type(msgtype)
        msg = cls()
        for field, value in fields.items():
            if field in sequences and isinstance(value, (np.ndarray, array.array)):
                set_sequence(msg, field, sequences[field](value) if isinstance(value, np.ndarray) else value)
                continue
            if field in arrays and isinstance(value, np.ndarray):
                value = np.asarray(value, dtype=arrays[field]).reshape(-1)
            setattr(msg, field, value)
        return msg

    def maker(self, msgtype: str) -> Callable[..., Any]:
        """A callable(**fields) for one type: the generated class itself when no field needs a
        numpy conversion (no per-call lookup: what builders use for thousands of Points)."""
        cls, sequences, arrays = _known_ros_type(msgtype)
        return functools.partial(self, msgtype) if sequences or arrays else cls


ros_message = RosMessageFactory()


def set_sequence(msg, field: str, values: array.array) -> None:
    """Store an array.array in a sequence field of a rosidl-generated message as it is.

    The generated setter copies it when field checks are off (rosidl's default since Kilted:
    `array.array('B', value)`, 7 MB for a camera image); the message's slot `_<field>` is what
    its getter and rclpy's conversion to C read, so it is set directly where the class has one."""
    slot = '_' + field
    if slot in getattr(type(msg), '__slots__', ()):
        object.__setattr__(msg, slot, values)
    else:
        setattr(msg, field, values)


def message_maker(new: MessageFactory, msgtype: str) -> Callable[..., Any]:
    """`new` bound to one message type, for a builder's inner loop (the factory's fast path when it has one)."""
    maker = getattr(new, 'maker', None)
    return maker(msgtype) if maker is not None else functools.partial(new, msgtype)
