"""outputs.box_markers straight to bytes: the serialized visualization_msgs/MarkerArray, from numpy.

rclpy's `Publisher.publish` also takes `bytes`, a serialized message handed to the middleware as
is. box_markers makes one Python object per Point (300 boxes with arrows: ~20 ms, then rclpy
converts them all again to serialize); `BoxMarkerSerializer.serialize` takes box_markers'
arguments and writes that MarkerArray's CDR bytes from the numpy arrays (~1 ms):

    serializer = BoxMarkerSerializer.for_installed_messages()   # MarkerLayoutError: keep box_markers
    publisher.publish(serializer.serialize(boxes, names, classes, scores, header, colors,
                                           track_ids=track_ids, velocities=velocities))

The content is box_markers' (layout in the outputs module docstring): the same markers in the
same order, ids, label texts and numbers (the same numpy expressions), and the same input checks
(outputs._checked_inputs, the same ConversionError messages). `header` is a std_msgs/Header, or
any object with .stamp.sec, .stamp.nanosec and .frame_id.

CDR as the bytes are written (XCDR1 "plain CDR", little endian, as rmw_fastrtps serializes these
types; `for_installed_messages` checks them against rclpy's serialize_message):
- a 4-byte encapsulation header 00 01 00 00 (CDR_LE), then the fields in definition order, nested
  messages inline; alignment counts from the byte after the encapsulation header;
- a primitive of n bytes (bool 1, int32 / uint32 / float32 4, float64 8) starts at a multiple of
  n (float64 at 8: XCDR1; XCDR2 would align it to 4). Padding bytes are zeros here; rmw leaves
  them uninitialised (heap garbage), so rmw's bytes equal these only up to the padding;
- string: uint32 byte count including the terminating NUL, the UTF-8 bytes, NUL (rosidl ends a
  string at its first NUL, and so does this);
- sequence: uint32 element count, then the elements (each primitive aligned as above); fixed
  array: the elements only; nothing after the last field.

The Marker layout comes from the installed message definitions (`rosidl_fields`: rosidl's
get_fields_and_field_types()), not from one distro: Humble and later have texture_resource,
texture, uv_coordinates and mesh_file, Foxy / Galactic do not; fields box_markers leaves at
their defaults are written from a default-constructed Marker. It works for any Marker whose pose
(float64, aligned to 8) comes before points and text: from the pose on, offsets mod 8 do not
depend on where the marker starts, so every marker's length is known without a scan.

How: markers of one kind (outline, label, arrow) that start at the same offset mod 8 share one
numpy structured dtype (fields at their CDR offsets, constants and padding in a template); all of
them are filled at once and the rows joined in marker order, a label's text bytes after its row.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from mtl_perception_ros.messages.message_factory import ros_message_class
from mtl_perception_ros.messages.outputs import (ARROW_HEAD_M, ARROW_SHAFT_M, LINE_WIDTH_M, MARKER_ADD, MARKER_ARROW,
                                                 MARKER_DELETEALL, MARKER_LINE_LIST, MARKER_TEXT_VIEW_FACING,
                                                 TEXT_HEIGHT_M, _checked_marker_inputs, _duration_parts,
                                                 _marker_geometry, box_markers, label_text)

__all__ = ['BoxMarkerSerializer', 'MarkerLayoutError', 'rosidl_fields', 'cdr_mismatch', 'CDR_LE_HEADER']

MARKER_TYPE = 'visualization_msgs/msg/Marker'
MARKER_ARRAY_TYPE = 'visualization_msgs/msg/MarkerArray'
POINT_TYPE = 'geometry_msgs/msg/Point'
CDR_LE_HEADER = b'\x00\x01\x00\x00'   # encapsulation: plain CDR, little endian, options 0

# A field type as the layout code sees it: ('basic', struct code), ('string',),
# ('message', 'pkg/msg/Name'), ('array', element type, length), ('sequence', element type).
FieldType = tuple
FieldsOf = Callable[[str], Sequence[tuple[str, FieldType]]]

_ROSIDL_BASIC = {'boolean': '?', 'octet': 'B', 'char': 'B', 'int8': 'b', 'uint8': 'B', 'int16': 'h',
                 'uint16': 'H', 'int32': 'i', 'uint32': 'I', 'int64': 'q', 'uint64': 'Q', 'float': 'f',
                 'double': 'd'}
# The Marker fields box_markers sets, and their leaves (path below the field, struct code or
# 'string') in the order the layout must have them; every other field keeps its default.
_POSE_LEAVES = tuple((f'{part}.{axis}', 'd') for part, axes in (('position', 'xyz'), ('orientation', 'xyzw'))
                     for axis in axes)
_FILLED_FIELDS = {
    'header': (('stamp.sec', 'i'), ('stamp.nanosec', 'I'), ('frame_id', 'string')),
    'ns': (('', 'string'),),
    'id': (('', 'i'),), 'type': (('', 'i'),), 'action': (('', 'i'),),
    'pose': _POSE_LEAVES,
    'scale': (('x', 'd'), ('y', 'd'), ('z', 'd')),
    'color': (('r', 'f'), ('g', 'f'), ('b', 'f'), ('a', 'f')),
    'lifetime': (('sec', 'i'), ('nanosec', 'I')),
    'text': (('', 'string'),),
}
_PER_CALL_FIELDS = ('header', 'ns')      # the same in every marker of one call
_IDENTITY_POSE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
_MAX_CACHED_RECORDS = 256


class MarkerLayoutError(RuntimeError):
    """The installed Marker cannot be written by BoxMarkerSerializer, or its bytes differ from rclpy's."""


def _rosidl_type(name: str) -> FieldType:
    if name.startswith('sequence<'):          # bounded ones too: 'sequence<int32, 3>'
        return ('sequence', _rosidl_type(name[len('sequence<'):-1].split(',')[0].strip()))
    if name.endswith(']'):
        element, length = name[:-1].split('[')
        return ('array', _rosidl_type(element), int(length))
    if name == 'string' or name.startswith('string<'):
        return ('string',)
    if name in _ROSIDL_BASIC:
        return ('basic', _ROSIDL_BASIC[name])
    if name.count('/') == 1:
        package, message = name.split('/')
        return ('message', f'{package}/msg/{message}')
    raise MarkerLayoutError(f'field type {name!r} is not supported here (wstring, long double)')


def rosidl_fields(msgtype: str) -> list[tuple[str, FieldType]]:
    """[(field, type)] of an installed rosidl message type 'pkg/msg/Name', in definition (= CDR) order."""
    fields = ros_message_class(msgtype).get_fields_and_field_types()
    return [(field, _rosidl_type(type_name)) for field, type_name in fields.items()]


def _cdr_string(text: str) -> bytes:
    """A string's CDR bytes after its length: UTF-8 up to the first NUL, then NUL (as rosidl stores it)."""
    return text.encode('utf-8').partition(b'\0')[0] + b'\0'


def _number(value) -> Any:
    if value is None:
        return 0
    if isinstance(value, (bytes, bytearray)):    # rosidl octet
        return value[0]
    if isinstance(value, str):                    # rosidl char
        return ord(value)
    return value


class _Record(NamedTuple):
    """The bytes of a run of fields laid out from one start offset mod 8."""
    dtype: np.dtype           # structured: the filled fields at their offsets, itemsize = length
    template: np.ndarray      # (length,) uint8: constants, zero padding, zeros where fields go
    end_phase: int            # (start + length) mod 8


def _layout(ops: Sequence[tuple], phase: int, point_count: int = 0, string_sizes=None,
            split_text: bool = False) -> tuple[_Record, Sequence[tuple]]:
    """Lay `ops` out from offset `phase` (mod 8); with `split_text`, stop after the text's length
    field (the text bytes vary per marker) and return the ops after the text as well."""
    template = bytearray()
    names, formats, offsets = [], [], []

    def align(size: int) -> None:
        template.extend(bytes(-(phase + len(template)) % size))

    def constant(code: str, value) -> None:
        align(struct.calcsize(code))
        template.extend(struct.pack('<' + code, value))

    def field(name: str, dtype) -> None:
        dtype = np.dtype(dtype)
        align(dtype.base.itemsize if dtype.kind != 'S' else 1)
        names.append(name)
        formats.append(dtype)
        offsets.append(len(template))
        template.extend(bytes(dtype.itemsize))

    rest: Sequence[tuple] = ()
    for index, op in enumerate(ops):
        kind = op[0]
        if kind == 'const':
            constant(op[1], op[2])
        elif kind == 'bytes':
            template.extend(op[1])
        elif kind == 'field':
            field(op[1], (np.dtype('<' + op[2]), (op[3],)) if op[3] > 1 else '<' + op[2])
        elif kind == 'string':
            constant('I', string_sizes[op[1]])
            field(op[1], f'S{string_sizes[op[1]]}')
        elif kind == 'points':
            constant('I', point_count)
            if point_count:
                field('points', ('<f8', (point_count, 3)))
        elif split_text:            # 'text'
            field('text.length', '<u4')
            rest = ops[index + 1:]
            break
        else:
            constant('I', 1)        # ''
            template.extend(b'\0')
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets, 'itemsize': len(template)})
    return _Record(dtype, np.frombuffer(bytes(template), np.uint8), (phase + len(template)) % 8), rest


class _Kind(NamedTuple):
    """Markers of one kind in one call: where they are in the array and what fills their records."""
    positions: np.ndarray     # (K,) marker indices
    point_count: int
    split_text: bool
    per_marker: dict          # record field -> (K, ...) values
    shared: dict              # record field -> one value for all K


class BoxMarkerSerializer:
    """box_markers(...) as CDR bytes, for the Marker layout that `fields_of` describes.

    Args:
        fields_of: 'pkg/msg/Name' -> [(field, type)] in definition order (`rosidl_fields`: the
            installed rclpy messages).
        default_marker: a default-constructed Marker; the fields box_markers does not set, and
            the DELETEALL marker's pose, scale, colour, lifetime, are written from it.
    Raises MarkerLayoutError when the layout has no field box_markers sets, or one of another type.
    """

    def __init__(self, fields_of: FieldsOf, default_marker):
        self._fields_of = fields_of
        array_fields = list(fields_of(MARKER_ARRAY_TYPE))
        if array_fields != [('markers', ('sequence', ('message', MARKER_TYPE)))]:
            raise MarkerLayoutError(f'{MARKER_ARRAY_TYPE} has fields {array_fields}; expected only markers[]')
        self._ops: list[tuple] = []
        self._clear_values: dict[str, Any] = {}
        found = set()
        for name, field_type in fields_of(MARKER_TYPE):
            found.add(name)
            if name == 'points':
                self._add_points(field_type)
            elif name in _FILLED_FIELDS:
                self._add_filled(name, field_type, getattr(default_marker, name))
            else:
                self._ops += self._constant_ops(field_type, getattr(default_marker, name, None))
        missing = (set(_FILLED_FIELDS) | {'points'}) - found
        if missing:
            raise MarkerLayoutError(f'{MARKER_TYPE} has no field {sorted(missing)}: not the Marker box_markers fills')
        # Every label's text is followed by the same fields; lay them out once per start offset mod 8.
        _, self._after_text = _layout(self._ops, 0, string_sizes={'header.frame_id': 1, 'ns': 1}, split_text=True)
        if any(op[0] not in ('const', 'bytes') for op in self._after_text):
            raise MarkerLayoutError(f'{MARKER_TYPE}: a field box_markers sets comes after text')
        tails = [b'\0' + _layout(self._after_text, phase)[0].template.tobytes() for phase in range(8)]
        self._text_tails = np.empty(8, dtype=object)      # [phase after the text's NUL]: NUL + the fields after it
        self._text_tails[:] = tails
        self._text_tail_sizes = np.array([len(tail) - 1 for tail in tails])
        self._records: dict[tuple, _Record] = {}
        for point_count, split_text in ((0, False), (0, True), (2, False), (24, False)):   # the kinds serialize makes
            ends = {self._record(phase, point_count, split_text, 1, 1).end_phase for phase in range(8)}
            if len(ends) != 1:
                raise MarkerLayoutError(f'{MARKER_TYPE}: no float64 field before points and text; '
                                        'marker lengths would depend on where each marker starts')

    # --------------------------------------------------------------------------- the layout
    def _leaves(self, field_type: FieldType, path: str) -> list[tuple[str, str]]:
        kind = field_type[0]
        if kind == 'basic':
            return [(path, field_type[1])]
        if kind == 'string':
            return [(path, 'string')]
        if kind == 'message':
            return [leaf for name, member in self._fields_of(field_type[1])
                    for leaf in self._leaves(member, f'{path}.{name}' if path else name)]
        raise MarkerLayoutError(f'{MARKER_TYPE}.{path} is an array or sequence; box_markers fills a scalar')

    def _add_filled(self, name: str, field_type: FieldType, default) -> None:
        leaves = self._leaves(field_type, '')
        if tuple(leaves) != _FILLED_FIELDS[name]:
            raise MarkerLayoutError(f'{MARKER_TYPE}.{name} has leaves {leaves}, expected {list(_FILLED_FIELDS[name])}')
        codes = {code for _, code in leaves}
        if name == 'text':
            self._ops.append(('text',))
        elif name in _PER_CALL_FIELDS or len(codes) > 1:      # header, ns; lifetime (int32 + uint32)
            for path, code in leaves:
                full = f'{name}.{path}' if path else name
                self._ops.append(('string', full) if code == 'string' else ('field', full, code, 1))
                if name not in _PER_CALL_FIELDS:
                    self._clear_values[full] = _number(_attribute(default, path))
        else:                                                 # id, type, action, pose, scale, color
            self._ops.append(('field', name, codes.pop(), len(leaves)))
            values = [_number(_attribute(default, path)) for path, _ in leaves]
            self._clear_values[name] = values[0] if len(values) == 1 else tuple(values)

    def _add_points(self, field_type: FieldType) -> None:
        if field_type != ('sequence', ('message', POINT_TYPE)) or \
                self._leaves(('message', POINT_TYPE), '') != [('x', 'd'), ('y', 'd'), ('z', 'd')]:
            raise MarkerLayoutError(f'{MARKER_TYPE}.points is {field_type}, expected a sequence of x, y, z float64')
        self._ops.append(('points',))

    def _constant_ops(self, field_type: FieldType, value) -> list[tuple]:
        """The ops writing `value` (None: the type's zero) as a constant."""
        kind = field_type[0]
        if kind == 'basic':
            return [('const', field_type[1], _number(value))]
        if kind == 'string':
            data = _cdr_string(value or '')
            return [('const', 'I', len(data)), ('bytes', data)]
        if kind == 'message':
            return [op for name, member in self._fields_of(field_type[1])
                    for op in self._constant_ops(member, None if value is None else getattr(value, name))]
        if kind == 'array':
            items = [None] * field_type[2] if value is None else list(value)
            return [op for item in items for op in self._constant_ops(field_type[1], item)]
        items = [] if value is None else list(value)
        return [('const', 'I', len(items))] + [op for item in items for op in self._constant_ops(field_type[1], item)]

    def _record(self, phase: int, point_count: int, split_text: bool, frame_id_size: int, ns_size: int) -> _Record:
        key = (phase, point_count, split_text, frame_id_size, ns_size)
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= _MAX_CACHED_RECORDS:
                self._records.clear()
            sizes = {'header.frame_id': frame_id_size, 'ns': ns_size}
            record = self._records[key] = _layout(self._ops, phase, point_count, sizes, split_text)[0]
        return record

    # --------------------------------------------------------------------------- serializing
    def serialize(self, boxes, class_names: Sequence[str], classes, scores, header, colors, track_ids=None,
                  velocities=None, namespace: str = 'detections', lifetime_s: float = 0.0) -> bytes:
        """The CDR bytes (with the encapsulation header) of box_markers(same arguments): publish them as they are.

        Args as box_markers: (N, 7) boxes; colors RGB 0..255 per class id; velocities (N, 2)
        vx, vy [m/s] or None; lifetime_s [s], 0 = until the next DELETEALL. `header` gives the
        stamp and frame_id (a std_msgs/Header or any object with .stamp.sec, .stamp.nanosec,
        .frame_id). Raises ConversionError on the inputs box_markers rejects.
        """
        boxes, names, scores, ids, class_ids, velocities = _checked_marker_inputs(
            boxes, class_names, classes, scores, track_ids, colors, velocities)
        class_index = np.asarray(class_ids, dtype=np.int64)
        count = len(boxes)
        lifetime = _duration_parts(lifetime_s)

        # box_markers' numbers: (N, 24, 3) edge end points, label poses, arrows, colours
        edges, label_anchors, drawn, arrow_points = _marker_geometry(boxes, velocities)
        arrow_points = arrow_points[drawn]
        label_pose = np.zeros((count, 7))
        label_pose[:, :3] = label_anchors
        label_pose[:, 6] = 1.0
        palette = np.zeros((max(class_ids, default=-1) + 1, 4))
        for class_id in set(class_ids):
            rgb = tuple(int(v) for v in colors[class_id])
            palette[class_id] = rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, 1.0
        box_color = palette[class_index]
        labels = [label_text(name, score, track_id) for name, score, track_id in zip(names, scores, ids)]
        texts = '\0'.join(labels).encode('utf-8').split(b'\0')    # UTF-8 of all labels in one call
        if len(texts) != count:      # a NUL in a label (rosidl ends the string there), or no boxes
            texts = [_cdr_string(label)[:-1] for label in labels]

        # marker indices: 0 = DELETEALL, then per box outline, label, arrow (when drawn); id = index - 1
        outline_at = 1 + 2 * np.arange(count) + np.concatenate([[0], np.cumsum(drawn)[:-1]]).astype(np.int64)
        label_at, arrow_at = outline_at + 1, outline_at[drawn] + 2
        marker_count = 1 + 2 * count + len(arrow_at)
        shared = {'header.stamp.sec': header.stamp.sec, 'header.stamp.nanosec': header.stamp.nanosec,
                  'header.frame_id': _cdr_string(header.frame_id)[:-1], 'ns': _cdr_string(namespace)[:-1],
                  'action': MARKER_ADD, 'lifetime.sec': lifetime[0], 'lifetime.nanosec': lifetime[1]}
        kinds = [
            _Kind(np.zeros(1, np.int64), 0, False, {}, {**shared, **self._clear_values, 'action': MARKER_DELETEALL}),
            _Kind(outline_at, 24, False, {'id': outline_at - 1, 'color': box_color, 'points': edges},
                  {**shared, 'type': MARKER_LINE_LIST, 'pose': _IDENTITY_POSE, 'scale': (LINE_WIDTH_M, 0.0, 0.0)}),
            _Kind(label_at, 0, True, {'id': label_at - 1, 'pose': label_pose,
                                      'text.length': np.fromiter(map(len, texts), np.int64, count) + 1},
                  {**shared, 'type': MARKER_TEXT_VIEW_FACING, 'scale': (0.0, 0.0, TEXT_HEIGHT_M),
                   'color': (1.0, 1.0, 1.0, 1.0)}),
            _Kind(arrow_at, 2, False, {'id': arrow_at - 1, 'color': box_color[drawn], 'points': arrow_points},
                  {**shared, 'type': MARKER_ARROW, 'pose': _IDENTITY_POSE,
                   'scale': (ARROW_SHAFT_M, 2 * ARROW_SHAFT_M, ARROW_HEAD_M)})]
        string_sizes = (len(shared['header.frame_id']) + 1, len(shared['ns']) + 1)

        # Where each marker starts mod 8 (its padding depends on it): after the previous one's end.
        end_phase = np.empty(marker_count, np.int64)
        for kind in kinds:
            end_phase[kind.positions] = self._record(0, kind.point_count, kind.split_text, *string_sizes).end_phase
        text_phase = (end_phase[label_at] + kinds[2].per_marker['text.length']) % 8
        end_phase[label_at] = (text_phase + self._text_tail_sizes[text_phase]) % 8
        start_phase = np.concatenate([[4], end_phase[:-1]])   # marker 0 follows the uint32 marker count

        # The bytes in order: marker count, then per marker its record and (labels) text, NUL + the fields after it.
        pieces = np.full(1 + 3 * marker_count, b'', dtype=object)
        pieces[0] = CDR_LE_HEADER + struct.pack('<I', marker_count)
        for kind in kinds:
            phases = start_phase[kind.positions]
            for phase in np.flatnonzero(np.bincount(phases, minlength=8)).tolist():
                rows = np.flatnonzero(phases == phase)
                record = self._record(phase, kind.point_count, kind.split_text, *string_sizes)
                values = np.empty(len(rows), record.dtype)
                values.view(np.uint8).reshape(len(rows), -1)[:] = record.template
                for name, value in kind.shared.items():
                    values[name] = value
                for name, value in kind.per_marker.items():
                    values[name] = value[rows]
                pieces[1 + 3 * kind.positions[rows]] = values.view(np.dtype((np.void, record.dtype.itemsize))).tolist()
        pieces[2 + 3 * label_at] = texts
        pieces[3 + 3 * label_at] = self._text_tails[text_phase]
        return b''.join(pieces.tolist())

    # --------------------------------------------------------------------------- checking
    def self_check(self) -> str:
        """'' when this serializer's bytes match rclpy's serialize_message(box_markers(...)) on a few
        sample MarkerArrays (up to padding: `cdr_mismatch`), else what differs."""
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Header
        from visualization_msgs.msg import MarkerArray

        rng = np.random.default_rng(0)
        boxes = np.column_stack([rng.uniform(-50, 50, (5, 3)), rng.uniform(0.5, 5, (5, 3)), rng.uniform(-3, 3, 5)])
        velocities = np.array([[3.0, -1.0], [0.01, 0.0], [math.nan, 0.0], [0.0, 2.0], [0.5, 0.5]])
        for frame_id, namespace, track_ids in (('lidar_top', 'self_check', [7, None, -1, 12345, 'x']),
                                               ('base_link', 'ns', None)):
            header = Header(frame_id=frame_id)
            header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 123_456_789
            args = (boxes, ['car', 'Fußgänger', 'truck'], [0, 1, 2, 1, 0], rng.random(5), header,
                    [(255, 0, 0), (0, 128, 255), (10, 20, 30)])
            options = dict(track_ids=track_ids, velocities=velocities, namespace=namespace, lifetime_s=0.25)
            problem = cdr_mismatch(self.serialize(*args, **options), serialize_message(box_markers(*args, **options)),
                                   MarkerArray)
            if problem:
                return f'frame_id {frame_id!r}, namespace {namespace!r}: {problem}'
        return ''

    @classmethod
    def for_installed_messages(cls) -> 'BoxMarkerSerializer':
        """The serializer for the installed visualization_msgs, checked against rclpy's serialization.

        Raises MarkerLayoutError (saying why) when rclpy or the messages are missing, the layout is
        not one this class writes, or its bytes differ from rclpy's: publish box_markers then.
        """
        try:
            from visualization_msgs.msg import Marker
            serializer = cls(rosidl_fields, Marker())
            problem = serializer.self_check()
        except ImportError as error:
            raise MarkerLayoutError(f'cannot import rclpy / visualization_msgs: {error}') from error
        if problem:
            raise MarkerLayoutError(f'serialized MarkerArray differs from rclpy serialize_message: {problem}')
        return serializer


def _attribute(value, path: str):
    for name in filter(None, path.split('.')):
        value = getattr(value, name)
    return value


def cdr_mismatch(ours: bytes, reference: bytes, msg_class=None) -> str:
    """'' when `ours` equals `reference` up to padding, else the first difference.

    Up to padding: the same length, the same byte wherever `ours` is not 0 (padding is 0 in ours,
    uninitialised memory in rmw's bytes), and, given `msg_class` (an rclpy message class), the
    same message when both are deserialized (so no zero in ours stands for a non-zero value).
    """
    if len(ours) != len(reference):
        return f'{len(ours)} bytes, expected {len(reference)}'
    ours_u8, reference_u8 = np.frombuffer(ours, np.uint8), np.frombuffer(reference, np.uint8)
    wrong = np.flatnonzero((ours_u8 != reference_u8) & (ours_u8 != 0))
    if len(wrong):
        at = int(wrong[0])
        return (f'{len(wrong)} bytes differ, first at offset {at}: {ours[at:at + 16].hex()} '
                f'instead of {reference[at:at + 16].hex()}')
    if msg_class is not None:
        from rclpy.serialization import deserialize_message
        if deserialize_message(ours, msg_class) != deserialize_message(reference, msg_class):
            return 'the same bytes up to zeros, but they deserialize to a different message'
    return ''
