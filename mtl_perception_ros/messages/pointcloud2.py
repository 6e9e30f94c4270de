"""sensor_msgs/PointCloud2 <-> numpy, strict and without per-point Python loops.

Reading views `msg.data` in place (np.frombuffer: no copy of the message buffer) through numpy
strides (row_step, point_step) and copies only the requested fields into an (N, k) float32 array.
Runs of adjacent native-endian FLOAT32 fields (the usual x, y, z, intensity at offsets 0..12) are
copied as raw bytes in one strided pass; other types are cast column by column. Any field order,
offsets, point_step / row_step padding, big-endian data and organized clouds (height > 1,
flattened row-major) are handled; fields are found by their exact name.

Writing builds one numpy structured array and hands its bytes to the message factory (`new`,
messages.message_factory: rclpy messages by default, rosbags ones with bags.typestore.bag_message)
as one flat uint8 array (rclpy: one array.array('B') copy, never per byte).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np

from mtl_perception_ros.messages.conversion_errors import ConversionError
from mtl_perception_ros.messages.message_factory import MessageFactory, ros_message

__all__ = ['ConversionError', 'POINT_FIELD_DTYPES', 'pointcloud2_to_array', 'array_to_pointcloud2']

# sensor_msgs/PointField datatype constant -> (name, numpy type code without byte order).
POINT_FIELD_DTYPES = {
    1: ('INT8', 'i1'), 2: ('UINT8', 'u1'), 3: ('INT16', 'i2'), 4: ('UINT16', 'u2'),
    5: ('INT32', 'i4'), 6: ('UINT32', 'u4'), 7: ('FLOAT32', 'f4'), 8: ('FLOAT64', 'f8'),
}
_DATATYPE_OF_NUMPY = {np.dtype(code).str[1:]: datatype for datatype, (_, code) in POINT_FIELD_DTYPES.items()}
_FLOAT_DATATYPES = (7, 8)
_FLOAT32 = 7
_NATIVE_IS_BIG = sys.byteorder == 'big'


def buffer_as_uint8(data) -> np.ndarray:
    """A message's `data` (array.array, bytes, memoryview, numpy array or list) as a flat uint8 array.

    Buffer-protocol objects are viewed without a copy; only a plain list is converted.
    """
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _byte_order(is_bigendian: bool) -> str:
    return '>' if is_bigendian else '<'


def _cloud_geometry(msg, data_size: int) -> tuple[int, int, int, int]:
    """Check height, width, point_step, row_step against the data size; return them."""
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    negative = [f'{name} {value}' for name, value in
                (('height', height), ('width', width), ('point_step', point_step), ('row_step', row_step)) if value < 0]
    if negative:  # uint32 in ROS; only a hand-made or corrupted message gets here
        raise ConversionError(f'PointCloud2: {", ".join(negative)}, expected >= 0')
    if height * width > 0 and point_step <= 0:
        raise ConversionError(f'PointCloud2 ({width}x{height} points): point_step is {point_step}, '
                              'expected the size of one point in bytes (> 0)')
    if row_step < width * point_step:
        raise ConversionError(f'PointCloud2: row_step {row_step} is smaller than width {width} * '
                              f'point_step {point_step} = {width * point_step} bytes')
    if data_size != row_step * height:
        raise ConversionError(f'PointCloud2: data has {data_size} bytes, expected row_step {row_step} * '
                              f'height {height} = {row_step * height} (width {width}, point_step {point_step})')
    return height, width, point_step, row_step


def _requested_fields(fields, field_names: Sequence[str], point_step: int) -> list[tuple[int, int]]:
    """(offset, datatype) of each requested field, checked against point_step and each other."""
    by_name: dict[str, list] = {}
    for field in fields:
        by_name.setdefault(field.name, []).append(field)
    layout = []
    spans: dict[str, tuple[int, int, str]] = {}   # name -> (offset, bytes, type): a name asked twice is one span
    for name in field_names:
        matches = by_name.get(name, [])
        if not matches:
            raise ConversionError(f'PointCloud2 has no field {name!r}; it has {[f.name for f in fields]} '
                                  '(field names must match exactly)')
        if len(matches) > 1:
            raise ConversionError(f'PointCloud2 has {len(matches)} fields named {name!r}, expected one')
        field = matches[0]
        datatype, offset, count = int(field.datatype), int(field.offset), int(field.count)
        if datatype not in POINT_FIELD_DTYPES:
            raise ConversionError(f'PointCloud2 field {name!r}: datatype {datatype} is not a PointField type '
                                  '(expected 1..8, INT8 .. FLOAT64)')
        if count != 1:
            raise ConversionError(f'PointCloud2 field {name!r}: count {count}, expected 1')
        type_name, code = POINT_FIELD_DTYPES[datatype]
        size = np.dtype(code).itemsize
        if offset < 0 or offset + size > point_step:
            raise ConversionError(f'PointCloud2 field {name!r}: offset {offset} + {size} bytes ({type_name}) '
                                  f'does not fit in point_step {point_step}')
        layout.append((offset, datatype))
        spans[name] = (offset, size, type_name)
    # Fields that share bytes are a broken layout (e.g. all at offset 0 with point_step 1 reads
    # every byte as a point): refuse it instead of returning garbage.
    ordered = sorted(((offset, size, type_name, name) for name, (offset, size, type_name) in spans.items()),
                     key=lambda span: span[0])   # stable: ties keep the requested order
    for (offset_a, size_a, type_a, name_a), (offset_b, _, type_b, name_b) in zip(ordered, ordered[1:]):
        if offset_a + size_a > offset_b:
            raise ConversionError(f'PointCloud2 fields {name_a!r} ({type_a} at offset {offset_a}, {size_a} bytes) and '
                                  f'{name_b!r} ({type_b} at offset {offset_b}) overlap; requested fields must not '
                                  'share bytes')
    return layout


def _scale_factors(scales, field_names: Sequence[str]) -> list[float | None]:
    if scales is None:
        return [None] * len(field_names)
    if isinstance(scales, Mapping):
        unknown = set(scales) - set(field_names)
        if unknown:
            raise ValueError(f'scales names fields {sorted(unknown)} that were not requested ({list(field_names)})')
        return [scales.get(name) for name in field_names]
    scales = list(scales)
    if len(scales) != len(field_names):
        raise ValueError(f'scales has {len(scales)} entries, expected one per field {list(field_names)} (or a dict)')
    return scales


def _raw_copy_runs(layout, is_bigendian: bool) -> list[tuple[int, int]]:
    """[start, stop) runs of requested fields that are native FLOAT32 at consecutive 4-byte offsets.

    Such a run is laid out in the message exactly as in the float32 output row, so it is copied as
    raw bytes (one numpy 'V' item per point) instead of field by field. Foreign byte order goes
    through the per-field cast (measured: a raw copy plus an in-place byteswap is no faster).
    """
    runs = []
    if bool(is_bigendian) != _NATIVE_IS_BIG:
        return runs
    start = None
    for j, (offset, datatype) in enumerate(layout):
        if datatype != _FLOAT32:
            start = None
            continue
        if start is not None and offset == layout[j - 1][0] + 4:
            runs[-1] = (start, j + 1)
        else:
            start = j
            runs.append((j, j + 1))
    return runs


def pointcloud2_to_array(msg, field_names: Sequence[str] = ('x', 'y', 'z', 'intensity'), scales=None,
                         drop_nonfinite: bool = True) -> tuple[np.ndarray, int]:
    """Read the named fields of a PointCloud2 into an (N, k) float32 array.

    Args:
        msg: sensor_msgs/PointCloud2 (any object with its fields works, e.g. a rosbags message).
        field_names: k field names, exact; the output columns follow this order.
        scales: optional per-field multipliers, a sequence aligned with `field_names` (None = 1) or
            a dict {name: factor}, e.g. {'intensity': 1 / 255}. Applied after the float32 cast.
        drop_nonfinite: drop points with a NaN / inf in any requested field (after scaling, so a
            finite value that a scale takes past float32's range is dropped too).

    Returns:
        points (N, k) float32 (organized clouds flattened row by row), and the number of points
        dropped as non-finite (0 when `drop_nonfinite` is False).

    Raises:
        ConversionError: a requested field is missing, duplicated, has count != 1, an unknown
            datatype, does not fit in point_step or overlaps another requested field; or data
            size != row_step * height, row_step < width * point_step, or a negative size.
    """
    if isinstance(field_names, str):
        field_names = (field_names,)
    field_names = tuple(field_names)
    buffer = buffer_as_uint8(msg.data)
    height, width, point_step, row_step = _cloud_geometry(msg, buffer.size)
    layout = _requested_fields(msg.fields, field_names, point_step)
    factors = _scale_factors(scales, field_names)
    k, count = len(field_names), height * width
    if count == 0:
        return np.empty((0, k), dtype=np.float32), 0

    out = np.empty((count, k), dtype=np.float32)
    source_strides = (row_step, point_step)
    target_strides = (width * k * 4, k * 4)
    copied = [False] * k
    for start, stop in _raw_copy_runs(layout, msg.is_bigendian):
        raw = np.dtype(f'V{4 * (stop - start)}')
        source = np.ndarray((height, width), dtype=raw, buffer=buffer, offset=layout[start][0],
                            strides=source_strides)
        target = np.ndarray((height, width), dtype=raw, buffer=out, offset=4 * start, strides=target_strides)
        target[...] = source
        copied[start:stop] = [True] * (stop - start)
    order = _byte_order(msg.is_bigendian)
    for j, (offset, datatype) in enumerate(layout):
        if copied[j]:
            continue
        dtype = np.dtype(order + POINT_FIELD_DTYPES[datatype][1])
        source = np.ndarray((height, width), dtype=dtype, buffer=buffer, offset=offset, strides=source_strides)
        target = np.ndarray((height, width), dtype=np.float32, buffer=out, offset=4 * j, strides=target_strides)
        target[...] = source  # cast (and byte swap) into output column j

    scaled = False
    for j, factor in enumerate(factors):
        if factor is not None and factor != 1:
            with np.errstate(over='ignore'):  # a huge value times the scale -> inf, dropped below
                out[:, j] *= np.float32(factor)
            scaled = True
    dropped = 0
    if drop_nonfinite and (scaled or any(datatype in _FLOAT_DATATYPES for _, datatype in layout)):
        if not np.isfinite(out).all():  # one flat pass; the per-row mask only when needed
            keep = np.isfinite(out[:, 0])
            for j in range(1, k):
                keep &= np.isfinite(out[:, j])
            dropped = count - int(np.count_nonzero(keep))
            out = np.compress(keep, out, axis=0)  # ~10x faster than out[keep] for (N, k) rows
    return out, dropped


def _field_dtypes(dtypes, field_names: Sequence[str]) -> list[np.dtype]:
    if dtypes is None:
        return [np.dtype(np.float32)] * len(field_names)
    if isinstance(dtypes, Mapping):
        unknown = set(dtypes) - set(field_names)
        if unknown:
            raise ValueError(f'dtypes names fields {sorted(unknown)} that are not in {list(field_names)}')
        return [np.dtype(dtypes.get(name, np.float32)) for name in field_names]
    dtypes = list(dtypes)
    if len(dtypes) != len(field_names):
        raise ValueError(f'dtypes has {len(dtypes)} entries, expected one per field {list(field_names)} (or a dict)')
    return [np.dtype(d) for d in dtypes]


def array_to_pointcloud2(points, field_names: Sequence[str] = ('x', 'y', 'z', 'intensity'), header=None,
                         dtypes=None, *, offsets: Sequence[int] | None = None, point_step: int | None = None,
                         is_bigendian: bool = False, new: MessageFactory = ros_message):
    """Build a sensor_msgs/PointCloud2 from an (N, k) array (or (H, W, k) for an organized cloud).

    Args:
        points: values per point, column j -> field_names[j].
        field_names: k field names.
        header: std_msgs/Header (default: an empty one).
        dtypes: per-field numpy dtypes (a sequence aligned with field_names, or a dict
            {name: dtype}, others float32). Any of int8/uint8/int16/uint16/int32/uint32/float32/float64.
            Integer fields are rounded; values outside the type's range raise ConversionError.
        offsets: byte offset of each field (default: packed in the given order).
        point_step: bytes per point (default: the end of the last field; larger = padding).
        is_bigendian: write the fields big-endian.
        new: message factory (default: rclpy messages; bags.typestore.bag_message for rosbags).

    The padding bytes are zero; row_step = width * point_step; is_dense = all values finite.
    """
    if isinstance(field_names, str):
        field_names = (field_names,)
    field_names = tuple(field_names)
    k = len(field_names)
    values = np.asarray(points)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or values.shape[-1] != k:
        raise ConversionError(f'points has shape {np.shape(points)}, expected (N, {k}) or (H, W, {k}) '
                              f'for fields {list(field_names)}')
    height, width = values.shape[:2]
    field_dtypes = _field_dtypes(dtypes, field_names)
    sizes = [d.itemsize for d in field_dtypes]
    for name, dtype in zip(field_names, field_dtypes):
        if dtype.str[1:] not in _DATATYPE_OF_NUMPY:
            raise ConversionError(f'field {name!r}: dtype {dtype} has no PointField datatype '
                                  '(expected int8/uint8/int16/uint16/int32/uint32/float32/float64)')
    if offsets is None:
        offsets = list(np.cumsum([0] + sizes[:-1]).astype(int))
    offsets = [int(o) for o in offsets]
    if len(offsets) != k:
        raise ValueError(f'offsets has {len(offsets)} entries, expected one per field {list(field_names)}')
    end = max((o + s for o, s in zip(offsets, sizes)), default=0)
    point_step = end if point_step is None else int(point_step)
    if point_step < end:
        raise ConversionError(f'point_step {point_step} is smaller than the end of the last field ({end} bytes)')
    spans = sorted(zip(offsets, sizes, field_names))
    for (offset_a, size_a, name_a), (offset_b, _, name_b) in zip(spans, spans[1:]):
        if offset_a + size_a > offset_b:
            raise ConversionError(f'fields {name_a!r} (offset {offset_a}, {size_a} bytes) and {name_b!r} '
                                  f'(offset {offset_b}) overlap')

    order = _byte_order(is_bigendian)
    record = np.dtype({'names': list(field_names),
                       'formats': [d.newbyteorder(order) for d in field_dtypes],
                       'offsets': offsets, 'itemsize': point_step})
    cloud = np.zeros((height, width), dtype=record)  # zeros: deterministic padding bytes
    for j, (name, dtype) in enumerate(zip(field_names, field_dtypes)):
        column = values[..., j]
        if dtype.kind in 'iu':
            column = np.rint(np.asarray(column, dtype=np.float64))
            info = np.iinfo(dtype)
            in_range = np.isfinite(column).all() and column.min() >= info.min and column.max() <= info.max
            if column.size and not in_range:
                raise ConversionError(f'field {name!r}: values outside {dtype} range [{info.min}, {info.max}] '
                                      'or not finite')
        cloud[name] = column

    fields = [new('sensor_msgs/msg/PointField', name=name, offset=offset,
                  datatype=_DATATYPE_OF_NUMPY[dtype.str[1:]], count=1)
              for name, offset, dtype in zip(field_names, offsets, field_dtypes)]
    is_dense = values.dtype.kind != 'f' or bool(np.isfinite(values).all())
    return new('sensor_msgs/msg/PointCloud2', header=header if header is not None else new('std_msgs/msg/Header'),
               height=int(height), width=int(width), fields=fields, is_bigendian=bool(is_bigendian),
               point_step=int(point_step), row_step=int(width * point_step),
               data=cloud.reshape(-1).view(np.uint8), is_dense=is_dense)
