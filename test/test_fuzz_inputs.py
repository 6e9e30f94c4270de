"""Fuzz over real DDS: thousands of malformed PointCloud2, Image and CameraInfo messages (valid ROS
messages, damaged in meaning) interleaved with valid pairs, sent to the real node process.

What must hold (docs/node.md "Input checks"): the node stays up, a valid pair after the fuzz is
answered with its exact header, every reason targeted is counted in /diagnostics, the counts add up
(every pair the synchronizer emitted is processed, skipped for a reason or dropped while busy; every
bad CameraInfo is one `skipped.bad_camera_info`), warnings stay throttled (at most one per 5 s per
key), and no traceback.

Inputs are reliable (input_qos:=reliable, a deep queue) so that DDS loses nothing and the counts are
exact. A cloud or an image is only converted when the worker takes its pair, so each malformed one
goes out as a pair with a valid partner of the same stamp, and pairs whose cloud is usable are sent
one at a time (the next after the node published its answer), refused pairs 5 ms apart: nothing is
dropped as busy in practice, and the checks allow for `dropped_busy` where they must. Every generated
message is also serialised, deserialised and classified with the library's own checks before it is
sent, so a disagreement names the exact input (generator bug or library bug) before the node is blamed.

`pytest -s` prints what was sent per kind and what the node counted per reason.
"""
from __future__ import annotations

import array
import math
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from ros_test_utils import require_ros

require_ros('diagnostic_msgs.msg', 'vision_msgs.msg')
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402

from mtl_perception_ros.core.camera_calibration import CalibrationError, CameraCalibration  # noqa: E402
from mtl_perception_ros.messages.camera_info import camera_info_data  # noqa: E402
from mtl_perception_ros.messages.conversion_errors import ConversionError  # noqa: E402
from mtl_perception_ros.messages.image import image_to_rgb, rgb_to_image  # noqa: E402
from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2, pointcloud2_to_array  # noqa: E402
from mtl_perception_ros.messages.stamps import header_msg, stamp_to_ns  # noqa: E402
from sensor_samples import IMAGE_HW, make_small_checkpoint, synthetic_cloud, synthetic_image  # noqa: E402
from test_node import NAMESPACE, Harness, node_args  # noqa: E402

pytestmark = pytest.mark.ros

SEED = 20240611
MAX_POINTS = 1000              # max_points:=1000 makes an over-long cloud cheap
QUEUE_SIZE = 1000              # the schema's largest queue_size: the reliable QoS depth too
DIAGNOSTICS_PERIOD_S = 0.5
THROTTLE_S = 5.0               # node.py _on_pipeline_event: one warning per key per 5 s

# How many of each are sent (malformed: all but the valid / odd-but-valid ones).
N_BAD_CLOUDS = 700             # -> skipped.bad_pointcloud
N_EMPTY_CLOUDS = 120           # -> skipped.empty_pointcloud
N_DAMAGED_CLOUDS = 160         # valid layout, bad points (NaN/inf, 3e38 intensity, 1e30 coordinates, > max_points)
N_ODD_CLOUDS = 60              # unusual but valid layouts: processed
N_BAD_IMAGES = 560             # -> skipped.bad_image (frame runs LiDAR-only)
N_ODD_IMAGES = 60              # unusual but valid encodings / padding: processed with the camera
N_BAD_INFOS = 640              # -> skipped.bad_camera_info
N_VALID_INFOS = 40             # the shipped calibration again: accepted, nothing counted
N_VALID_PAIRS = 100            # plain valid pairs, spread over the run

# Per-point counters of core/point_limits.py (`points.<reason>`): > 0, and equal to the points the
# rules of docs/node.md pick in the clouds sent (points.non_finite within a range, see below).
REQUIRE_POINT_LIMIT_KEYS = True
POINT_LIMIT_KEYS = {          # key -> damaged-cloud variant that targets it (the counts are per point: exact)
    'points.non_finite': 'some_nonfinite',
    'points.coordinate_out_of_range': 'far_coordinates',
    'points.intensity_clamped': 'huge_intensity',
    'points.over_max_points': 'over_max_points',
}
NON_FINITE_KEYS = ('non_finite_points', 'points.non_finite')   # today's name, the point-limits name

XYZI = ('x', 'y', 'z', 'intensity')
F32 = PointField.FLOAT32
# The shipped calibration (config/mtl_perception.yaml): valid CameraInfos repeat it, bad ones damage it.
SHIPPED_K = [1687.33691, 0.0, 965.434141, 0.0, 1783.42847, 684.41936, 0.0, 0.0, 1.0]
SHIPPED_WH = (1920, 1208)
RELIABLE = QoSProfile(depth=QUEUE_SIZE, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
WARN_LINE = re.compile(r'\[WARN\] \[(\d+(?:\.\d+)?)\] \[[^\]]*\]: ([A-Za-z0-9_.]+): ')   # (time s, key)


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory) -> Path:
    return make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt')


class ReliableHarness(Harness):
    """test_node's Harness (spin_until, last_status, received) with reliable input publishers,
    a CameraInfo publisher and the set of cloud stamps the node answered."""

    def __init__(self, ros):
        self.answered: set[int] = set()          # cloud stamps (ns) of the Detection2DArrays received
        self.labelled: set[int] = set()          # image stamps (ns) of the semantic label images received
        super().__init__(ros, input_qos=RELIABLE, name='fuzz_test_harness')
        self.pub_info = self.node.create_publisher(CameraInfo, f'{NAMESPACE}/camera/camera_info', RELIABLE)

    def _on_labels(self, msg):
        self.labelled.add(stamp_to_ns(msg.header.stamp))

    def _on_detections(self, msg):
        self.answered.add(stamp_to_ns(msg.header.stamp))
        self.received['detections'].append(msg)
        del self.received['detections'][:-20]

    def pump(self, seconds: float, process) -> None:
        """Spin for `seconds` (at least one spin)."""
        deadline = time.monotonic() + seconds
        while True:
            self.ros.spin_once(max(0.0, min(0.01, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                break
        process.assert_running()


@pytest.fixture
def harness(rclpy_context):
    return ReliableHarness(rclpy_context)


# ----------------------------------------------------------------------------- message builders
def good_points(rng, n: int) -> np.ndarray:
    """(n, 4) float32 x y z intensity: ground ahead plus a car-sized cluster, intensity 0..255."""
    if n >= 500:
        return synthetic_cloud(rng, n - 400)
    return np.column_stack([rng.uniform(2, 30, n), rng.uniform(-12, 12, n), rng.uniform(-1.5, 1.0, n),
                            rng.uniform(0, 255, n)]).astype(np.float32)


def raw_cloud(spec, point_step: int, width: int, height: int, data: bytes, row_step=None,
              is_bigendian: bool = False) -> PointCloud2:
    """A PointCloud2 exactly as given: spec = [(name, offset, datatype, count)]."""
    msg = PointCloud2(height=int(height), width=int(width), is_bigendian=is_bigendian, point_step=int(point_step),
                      row_step=int(width * point_step if row_step is None else row_step), is_dense=False,
                      fields=[PointField(name=n, offset=int(o), datatype=int(d), count=int(c)) for n, o, d, c in spec])
    msg.data = array.array('B', bytes(data))
    return msg


def xyzi_spec(offsets=(0, 4, 8, 12)):
    return [(name, offset, F32, 1) for name, offset in zip(XYZI, offsets)]


def random_bytes(rng, n: int) -> bytes:
    return rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()


def other_name(rng, name: str) -> str:
    wrong = [name.upper(), name + ' ', ' ' + name, name + '_', name[:1] + '1', 'reflectance', '', 'i', 'X']
    return str(rng.choice([w for w in wrong if w not in XYZI]))


BAD_CLOUD_VARIANTS = ('missing_field', 'renamed_field', 'duplicate_field', 'overlapping_fields',
                      'random_overlapping_offsets', 'point_step_1', 'all_fields_at_offset_0', 'field_beyond_point_step',
                      'offset_huge', 'data_short', 'data_long', 'row_step_too_small', 'count_not_1',
                      'unknown_datatype', 'point_step_0', 'organized_rows_missing')


def bad_cloud(rng, variant: str) -> PointCloud2:
    """A cloud the conversion must refuse (-> skipped.bad_pointcloud)."""
    n = int(rng.integers(1, 300))
    data = good_points(rng, n).astype('<f4').tobytes()
    spec = xyzi_spec()
    if variant == 'missing_field':
        del spec[int(rng.integers(4))]
        return raw_cloud(spec, 16, n, 1, data)
    if variant == 'renamed_field':
        j = int(rng.integers(4))
        spec[j] = (other_name(rng, XYZI[j]),) + spec[j][1:]
        return raw_cloud(spec, 16, n, 1, data)
    if variant == 'duplicate_field':
        j = int(rng.integers(4))
        spec.append((XYZI[j], 16, F32, 1))
        padded = np.zeros((n, 20), np.uint8)
        padded[:, :16] = np.frombuffer(data, np.uint8).reshape(n, 16)
        return raw_cloud(spec if rng.random() < 0.5 else spec[::-1], 20, n, 1, padded.tobytes())
    if variant == 'overlapping_fields':
        offsets = [0, 4, 8, 12]
        j = int(rng.integers(1, 4))
        offsets[j] = offsets[j - 1] + int(rng.integers(1, 4))          # overlaps the field before by 1..3 bytes
        return raw_cloud(xyzi_spec(offsets), 16, n, 1, data)
    if variant == 'random_overlapping_offsets':
        point_step = int(rng.integers(16, 33))
        while True:
            offsets = sorted(int(o) for o in rng.integers(0, point_step - 3, 4))
            if any(b < a + 4 for a, b in zip(offsets, offsets[1:])):
                break
        rng.shuffle(offsets)
        return raw_cloud(xyzi_spec(offsets), point_step, n, 1, random_bytes(rng, n * point_step))
    if variant == 'point_step_1':                                     # every byte would read as a point
        return raw_cloud(xyzi_spec((0, 0, 0, 0)), 1, n * 16, 1, data)
    if variant == 'all_fields_at_offset_0':
        return raw_cloud(xyzi_spec((0, 0, 0, 0)), 16, n, 1, data)
    if variant == 'field_beyond_point_step':
        point_step = int(rng.integers(4, 16))                          # intensity at 12 does not fit
        return raw_cloud(spec, point_step, n, 1, random_bytes(rng, n * point_step))
    if variant == 'offset_huge':
        j = int(rng.integers(4))
        spec[j] = (XYZI[j], int(rng.choice([16, 1 << 20, (1 << 31) - 1, (1 << 32) - 4, (1 << 32) - 1])), F32, 1)
        return raw_cloud(spec, 16, n, 1, data)
    if variant == 'data_short':
        return raw_cloud(spec, 16, n, 1, data[:len(data) - int(rng.integers(1, len(data) + 1))])
    if variant == 'data_long':
        return raw_cloud(spec, 16, n, 1, data + random_bytes(rng, rng.integers(1, 65)))
    if variant == 'row_step_too_small':
        height = int(rng.integers(1, 4))
        row_step = 16 * n - int(rng.integers(1, 16 * n + 1))
        return raw_cloud(spec, 16, n, height, random_bytes(rng, row_step * height), row_step=row_step)
    if variant == 'count_not_1':
        j = int(rng.integers(4))
        spec[j] = spec[j][:3] + (int(rng.choice([0, 2, 3, 16])),)
        return raw_cloud(spec, 16, n, 1, data)
    if variant == 'unknown_datatype':
        j = int(rng.integers(4))
        spec[j] = (XYZI[j], spec[j][1], int(rng.choice([0, 9, 12, 100, 255])), 1)
        return raw_cloud(spec, 16, n, 1, data)
    if variant == 'point_step_0':
        return raw_cloud(spec, 0, n, 1, b'', row_step=0)
    if variant == 'organized_rows_missing':
        height, width = int(rng.integers(2, 7)), int(rng.integers(1, 60))
        rows = height + (1 if rng.random() < 0.3 else -1)
        return raw_cloud(spec, 16, width, height, random_bytes(rng, 16 * width * rows))
    raise AssertionError(variant)


EMPTY_CLOUD_VARIANTS = ('zero_width', 'zero_height', 'zero_both', 'all_nan', 'all_inf', 'all_nonfinite_mixed')


def empty_cloud(rng, variant: str) -> PointCloud2:
    """A well-formed cloud without one finite point (-> skipped.empty_pointcloud)."""
    n = int(rng.integers(1, 400))
    if variant == 'zero_width':
        return raw_cloud(xyzi_spec(), 16, 0, int(rng.integers(0, 4)), b'', row_step=0)
    if variant == 'zero_height':
        return raw_cloud(xyzi_spec(), 16, n, 0, b'')
    if variant == 'zero_both':
        return raw_cloud(xyzi_spec(), 16, 0, 0, b'')
    points = good_points(rng, n)
    columns = rng.integers(0, 4, n)
    if variant == 'all_nan':
        points[:] = np.nan
    elif variant == 'all_inf':
        points[np.arange(n), columns % 3] = rng.choice([np.inf, -np.inf], n)
    else:
        points[np.arange(n), columns] = rng.choice([np.nan, np.inf, -np.inf], n)
    return array_to_pointcloud2(points, XYZI)


DAMAGED_CLOUD_VARIANTS = ('some_nonfinite', 'huge_intensity', 'far_coordinates', 'over_max_points')


def damaged_cloud(rng, variant: str) -> PointCloud2:
    """Valid layout, some bad points: processed (the bad points dropped, clamped or capped)."""
    if variant == 'over_max_points':
        return array_to_pointcloud2(good_points(rng, int(rng.integers(MAX_POINTS + 1, 4 * MAX_POINTS))), XYZI)
    n = int(rng.integers(500, MAX_POINTS + 1))
    points = good_points(rng, n)
    bad = rng.choice(n, int(rng.integers(1, n // 5)), replace=False)
    if variant == 'some_nonfinite':
        points[bad, rng.integers(0, 4, len(bad))] = rng.choice([np.nan, np.inf, -np.inf], len(bad))
    elif variant == 'huge_intensity':
        points[bad, 3] = np.float32(3e38)
    else:
        points[bad, rng.integers(0, 3, len(bad))] = rng.choice([1e30, -1e30], len(bad)).astype(np.float32)
    return array_to_pointcloud2(points, XYZI)


ODD_CLOUD_VARIANTS = ('float64_fields', 'shuffled_padded_offsets', 'big_endian', 'organized', 'integer_intensity',
                      'extra_fields')


def odd_cloud(rng, variant: str) -> PointCloud2:
    """Unusual but valid layouts: converted and processed like any cloud."""
    n = int(rng.integers(500, MAX_POINTS + 1))
    points = good_points(rng, n)
    if variant == 'float64_fields':
        return array_to_pointcloud2(points, XYZI, dtypes=[rng.choice(['f4', 'f8']) for _ in XYZI])
    if variant == 'shuffled_padded_offsets':
        order = rng.permutation(4)
        offsets, at = [0] * 4, 0
        for j in order:
            at += int(rng.integers(0, 5))
            offsets[j] = at
            at += 4
        return array_to_pointcloud2(points, XYZI, offsets=offsets, point_step=at + int(rng.integers(0, 9)))
    if variant == 'big_endian':
        return array_to_pointcloud2(points, XYZI, is_bigendian=True)
    if variant == 'organized':
        rows = int(rng.choice([2, 4, 5]))
        return array_to_pointcloud2(points[:n - n % rows].reshape(rows, -1, 4), XYZI)
    if variant == 'integer_intensity':
        return array_to_pointcloud2(points, XYZI, dtypes={'intensity': rng.choice(['u1', 'u2', 'i2', 'i4'])})
    if variant == 'extra_fields':
        columns = np.column_stack([rng.integers(0, 128, n), points[:, :2], rng.uniform(0, 0.1, n), points[:, 2:]])
        return array_to_pointcloud2(columns, ('ring', 'x', 'y', 't', 'z', 'intensity'),
                                    dtypes={'ring': 'u2', 't': 'f8'})
    raise AssertionError(variant)


def raw_image(height: int, width: int, encoding: str, step: int, data: bytes, is_bigendian: int = 0) -> Image:
    msg = Image(height=int(height), width=int(width), encoding=encoding, step=int(step), is_bigendian=is_bigendian)
    msg.data = array.array('B', bytes(data))
    return msg


IMAGE_BYTES_PER_PIXEL = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, 'mono16': 2}
BAD_IMAGE_VARIANTS = ('unknown_encoding', 'zero_height', 'zero_width', 'step_too_small', 'data_short', 'data_long',
                      'rows_mismatch', 'other_aspect_ratio')


def bad_image(rng, variant: str) -> Image:
    """An image the node must not use (-> skipped.bad_image; the frame runs LiDAR-only)."""
    height, width = int(rng.integers(1, 80)), int(rng.integers(1, 120))
    encoding = str(rng.choice(list(IMAGE_BYTES_PER_PIXEL)))
    bpp = IMAGE_BYTES_PER_PIXEL[encoding]
    step = width * bpp
    if variant == 'unknown_encoding':
        encoding = str(rng.choice(['yuv420', 'bayer_rggb12', '8UC3', 'RGB8', '', 'rgb16', 'jpeg', 'nv21', '32FC1',
                                   'bgr16', 'rgb8 ', 'mono 8']))
        step = width * 3
        return raw_image(height, width, encoding, step, random_bytes(rng, step * height))
    if variant == 'zero_height':
        return raw_image(0, width, encoding, step, b'')
    if variant == 'zero_width':
        step = int(rng.choice([0, 3, 12]))
        return raw_image(height, 0, encoding, step, random_bytes(rng, step * height))
    if variant == 'step_too_small':
        step = width * bpp - int(rng.integers(1, width * bpp + 1))
        return raw_image(height, width, encoding, step, random_bytes(rng, step * height))
    if variant == 'data_short':
        size = step * height
        return raw_image(height, width, encoding, step, random_bytes(rng, size - int(rng.integers(1, size + 1))))
    if variant == 'data_long':
        return raw_image(height, width, encoding, step, random_bytes(rng, step * height + int(rng.integers(1, 97))))
    if variant == 'rows_mismatch':
        rows = height + int(rng.choice([-1, 1, 2])) if height > 1 else 2
        return raw_image(height, width, encoding, step, random_bytes(rng, step * rows))
    if variant == 'other_aspect_ratio':
        target = SHIPPED_WH[0] / SHIPPED_WH[1]
        while True:
            height, width = int(rng.integers(8, 120)), int(rng.integers(8, 200))
            if abs(width / height - target) > 0.05:
                return rgb_to_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    raise AssertionError(variant)


ODD_IMAGE_VARIANTS = ('bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'mono16_big_endian', 'rgb8_padded_rows',
                      'quarter_scale')


def odd_image(rng, variant: str) -> Image:
    """Valid images of other encodings / row padding / scale (the calibration's aspect ratio)."""
    height, width = IMAGE_HW
    if variant == 'quarter_scale':
        return rgb_to_image(synthetic_image(rng, (302, 480)))
    if variant == 'rgb8_padded_rows':
        pad = int(rng.integers(1, 17))
        pixels = np.zeros((height, width * 3 + pad), np.uint8)
        pixels[:, :width * 3] = synthetic_image(rng).reshape(height, -1)
        return raw_image(height, width, 'rgb8', width * 3 + pad, pixels.tobytes())
    encoding = 'mono16' if variant.startswith('mono16') else variant
    bpp = IMAGE_BYTES_PER_PIXEL[encoding]
    return raw_image(height, width, encoding, width * bpp, random_bytes(rng, width * bpp * height),
                     is_bigendian=int(variant.endswith('big_endian')))


def camera_info(k=SHIPPED_K, d=(0.0,) * 5, model='plumb_bob', wh=SHIPPED_WH, r=None, p=None) -> CameraInfo:
    k = np.asarray(k, np.float64)
    msg = CameraInfo(width=int(wh[0]), height=int(wh[1]), distortion_model=model, d=[float(v) for v in d])
    msg.k = k
    msg.r = np.eye(3).reshape(-1) if r is None else np.asarray(r, np.float64)
    projection = np.zeros((3, 4))
    projection[:, :3] = k.reshape(3, 3) if np.isfinite(k).all() else np.eye(3)
    msg.p = projection.reshape(-1) if p is None else np.asarray(p, np.float64)
    return msg


BAD_INFO_VARIANTS = ('k_nonfinite', 'fx_or_fy_not_positive', 'k_last_row', 'd_length_plumb_bob',
                     'd_length_rational_polynomial', 'd_length_equidistant', 'unknown_model_nonzero_d',
                     'zero_size', 'd_nonfinite', 'r_nonfinite', 'p_nonfinite')
LENGTHS = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}


def nonzero_d(rng, n: int) -> list:
    d = rng.uniform(-0.2, 0.2, n)
    d[int(rng.integers(n))] = 0.05          # never all zero (all zero is "no distortion" under any model)
    return d.tolist()


def bad_info(rng, variant: str) -> CameraInfo:
    """A CameraInfo with one defect on the shipped calibration (-> skipped.bad_camera_info)."""
    k = list(SHIPPED_K)
    nonfinite = float(rng.choice([np.nan, np.inf, -np.inf]))
    if variant == 'k_nonfinite':
        k[int(rng.integers(9))] = nonfinite
        return camera_info(k=k)
    if variant == 'fx_or_fy_not_positive':
        k[int(rng.choice([0, 4]))] = float(rng.choice([0.0, -1.0, -1687.3, -1e-9]))
        return camera_info(k=k)
    if variant == 'k_last_row':
        k[6:] = [[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.0, -1.0]][
            int(rng.integers(5))]
        return camera_info(k=k)
    if variant.startswith('d_length_'):
        model = variant[len('d_length_'):]
        n = int(rng.choice([m for m in range(1, 15) if m != LENGTHS[model]]))
        return camera_info(d=nonzero_d(rng, n), model=model)
    if variant == 'unknown_model_nonzero_d':
        model = str(rng.choice(['thin_prism', 'fisheye', 'kannala_brandt', 'Plumb_Bob', '', 'pinhole', 'double_sphere',
                                'plumb_bob ', 'rational']))
        return camera_info(d=nonzero_d(rng, int(rng.integers(1, 15))), model=model)
    if variant == 'zero_size':
        return camera_info(wh=[(0, 1208), (1920, 0), (0, 0)][int(rng.integers(3))])
    if variant == 'd_nonfinite':
        model = str(rng.choice(list(LENGTHS)))
        d = [0.0] * LENGTHS[model]
        d[int(rng.integers(len(d)))] = nonfinite
        return camera_info(d=d, model=model)
    if variant == 'r_nonfinite':
        r = np.eye(3).reshape(-1)
        r[int(rng.integers(9))] = nonfinite
        return camera_info(r=r)
    if variant == 'p_nonfinite':
        info = camera_info()
        p = np.asarray(info.p)
        p[int(rng.integers(12))] = nonfinite
        info.p = p
        return info
    raise AssertionError(variant)


VALID_INFO_VARIANTS = ('plumb_bob_zero_d', 'rational_polynomial_zero_d', 'equidistant_zero_d', 'no_model_no_d',
                       'p_unset')


def valid_info(rng, variant: str) -> CameraInfo:
    """The shipped calibration again (nothing changes, nothing is counted)."""
    if variant == 'rational_polynomial_zero_d':
        return camera_info(d=[0.0] * 8, model='rational_polynomial')
    if variant == 'equidistant_zero_d':
        return camera_info(d=[0.0] * 4, model='equidistant')
    if variant == 'no_model_no_d':
        return camera_info(d=[], model='')
    if variant == 'p_unset':
        return camera_info(p=np.zeros(12))
    return camera_info()


# ----------------------------------------------------------------------------- the library's verdict
SHIPPED_CALIBRATION = CameraCalibration.from_parameters(np.eye(4), SHIPPED_K, [0.0] * 5, SHIPPED_WH)


def over_the_wire(msg):
    """The message as the node receives it (and proof that it is a valid ROS message)."""
    return deserialize_message(serialize_message(msg), type(msg))


def cloud_verdict(msg) -> str:
    """'bad' (ConversionError), 'empty' (no finite point) or 'ok', by the node's own conversion."""
    try:
        points, _ = pointcloud2_to_array(over_the_wire(msg), XYZI, scales=[1, 1, 1, 1 / 255], drop_nonfinite=False)
    except ConversionError:
        return 'bad'
    return 'ok' if np.isfinite(points).all(axis=1).any() else 'empty'


def image_verdict(msg) -> str:
    try:
        SHIPPED_CALIBRATION.prepare_image(image_to_rgb(over_the_wire(msg)))
    except (ConversionError, CalibrationError):
        return 'bad'
    return 'ok'


def info_verdict(msg) -> str:
    try:
        info = camera_info_data(over_the_wire(msg))
        SHIPPED_CALIBRATION.with_intrinsics(info.camera_matrix, info.distortion, info.distortion_model,
                                            info.image_size_wh)
    except (ConversionError, CalibrationError):
        return 'bad'
    return 'ok'


def describe(msg) -> str:
    """A short description of an input, enough to rebuild it."""
    if isinstance(msg, PointCloud2):
        return (f'PointCloud2(height={msg.height}, width={msg.width}, point_step={msg.point_step}, '
                f'row_step={msg.row_step}, is_bigendian={msg.is_bigendian}, len(data)={len(msg.data)}, fields='
                f'{[(f.name, f.offset, f.datatype, f.count) for f in msg.fields]})')
    if isinstance(msg, Image):
        return (f'Image(height={msg.height}, width={msg.width}, encoding={msg.encoding!r}, step={msg.step}, '
                f'is_bigendian={msg.is_bigendian}, len(data)={len(msg.data)})')
    return (f'CameraInfo(width={msg.width}, height={msg.height}, distortion_model={msg.distortion_model!r}, '
            f'd={list(msg.d)}, k={list(msg.k)}, r={list(msg.r)}, p={list(msg.p)})')


# ----------------------------------------------------------------------------- the schedule
def schedule(rng) -> list[tuple[str, str]]:
    """(kind, variant) events in a seeded random order, valid pairs spread evenly through them."""
    events = []
    for kind, count, variants in (('bad_cloud', N_BAD_CLOUDS, BAD_CLOUD_VARIANTS),
                                  ('empty_cloud', N_EMPTY_CLOUDS, EMPTY_CLOUD_VARIANTS),
                                  ('damaged_cloud', N_DAMAGED_CLOUDS, DAMAGED_CLOUD_VARIANTS),
                                  ('odd_cloud', N_ODD_CLOUDS, ODD_CLOUD_VARIANTS),
                                  ('bad_image', N_BAD_IMAGES, BAD_IMAGE_VARIANTS),
                                  ('odd_image', N_ODD_IMAGES, ODD_IMAGE_VARIANTS),
                                  ('bad_info', N_BAD_INFOS, BAD_INFO_VARIANTS),
                                  ('valid_info', N_VALID_INFOS, VALID_INFO_VARIANTS)):
        events += [(kind, variants[i % len(variants)]) for i in range(count)]   # every variant, evenly
    order = rng.permutation(len(events))
    events = [events[i] for i in order]
    every = len(events) // N_VALID_PAIRS
    for i in range(N_VALID_PAIRS):
        events.insert(i * (every + 1), ('valid_pair', 'valid_pair'))
    return events


BUILDERS = {'bad_cloud': (bad_cloud, cloud_verdict, 'bad'), 'empty_cloud': (empty_cloud, cloud_verdict, 'empty'),
            'damaged_cloud': (damaged_cloud, cloud_verdict, 'ok'), 'odd_cloud': (odd_cloud, cloud_verdict, 'ok'),
            'bad_image': (bad_image, image_verdict, 'bad'), 'odd_image': (odd_image, image_verdict, 'ok'),
            'bad_info': (bad_info, info_verdict, 'bad'), 'valid_info': (valid_info, info_verdict, 'ok')}
# kind -> the counter each message of that kind must raise (when its pair is processed)
REASON_OF_KIND = {'bad_cloud': 'skipped.bad_pointcloud', 'empty_cloud': 'skipped.empty_pointcloud',
                  'bad_image': 'skipped.bad_image', 'bad_info': 'skipped.bad_camera_info'}
# kinds whose pair the node answers with a Detection2DArray (its cloud is usable), and of those the ones
# whose image is used too (the semantic labels follow, published by the worker after the detections)
ANSWERED_KINDS = ('damaged_cloud', 'odd_cloud', 'bad_image', 'odd_image', 'valid_pair')
LABELLED_KINDS = ('damaged_cloud', 'odd_cloud', 'odd_image', 'valid_pair')
MALFORMED_KINDS = ('bad_cloud', 'empty_cloud', 'damaged_cloud', 'bad_image', 'bad_info')


def expected_point_limits(msg) -> Counter:
    """`points.<reason>` counts for one processed cloud by the rules of docs/node.md "Input checks"
    (first rule that applies: non-finite, |coordinate| > 10 km, intensity outside [0, 1], beyond max_points),
    on the cloud as the node reads it (intensity_scale 1/255 as in the shipped YAML)."""
    points, _ = pointcloud2_to_array(msg, XYZI, scales=[1.0, 1.0, 1.0, 1.0 / 255.0], drop_nonfinite=False)
    finite = np.isfinite(points).all(axis=1)
    in_range = (np.abs(points[:, :3]) <= 1.0e4).all(axis=1)
    kept = points[finite & in_range]
    return Counter({'points.non_finite': int(np.count_nonzero(~finite)),
                    'points.coordinate_out_of_range': int(np.count_nonzero(finite & ~in_range)),
                    'points.intensity_clamped': int(np.count_nonzero((kept[:, 3] < 0) | (kept[:, 3] > 1))),
                    'points.over_max_points': max(0, len(kept) - MAX_POINTS)})


def status_delta(now: dict, base: dict, key: str) -> int:
    return int(now.get(key, 0)) - int(base.get(key, 0))


def accounted(values: dict, base: dict) -> int:
    """Pairs whose fate the node counted: processed, skipped for a reason of the whole frame, dropped."""
    return sum(status_delta(values, base, key) for key in (
        'processed', 'skipped.bad_pointcloud', 'skipped.empty_pointcloud', 'skipped.processing_error',
        'dropped_busy', 'dropped_after_reset'))


def test_thousands_of_malformed_inputs_over_dds_are_counted_throttled_and_survived(
        harness, small_checkpoint, ros_process):
    rng = np.random.default_rng(SEED)
    started = time.monotonic()
    node = ros_process(node_args(small_checkpoint, [
        'input_qos:=reliable', f'queue_size:={QUEUE_SIZE}',
        f'max_points:={MAX_POINTS}', 'camera_timeout_s:=60.0', f'diagnostics_period_s:={DIAGNOSTICS_PERIOD_S}']),
        name='node')

    # valid partners, reused (only the header changes): a cloud under max_points, an image of the calibration's size
    partner_cloud = array_to_pointcloud2(good_points(rng, 600), XYZI)
    partner_image = rgb_to_image(synthetic_image(rng))
    valid_cloud = array_to_pointcloud2(good_points(rng, 900), XYZI)

    stamp_ns = 1_000 * 10 ** 9

    def send_pair(cloud, image) -> int:
        nonlocal stamp_ns
        stamp_ns += 100_000_000                 # 0.1 s: pairs never mix (slop 0.05 s); same stamp in a pair
        cloud.header = header_msg(stamp_ns, 'vehicle')
        image.header = header_msg(stamp_ns, 'camera_front')
        harness.pub_points.publish(cloud)
        harness.pub_image.publish(image)
        return stamp_ns

    # ready: the node answers and all three subscriptions are matched
    deadline = time.monotonic() + 60.0
    while not harness.answered or harness.pub_info.get_subscription_count() == 0:
        assert time.monotonic() < deadline, f'no detections from the node:\n{node.output()}'
        send_pair(valid_cloud, partner_image)
        harness.pump(0.1, node)
    harness.pump(0.5, node)                      # the last readiness pairs go through
    reports = len(harness.received['diagnostics'])   # the baseline: the second report after that
    assert harness.spin_until(lambda: len(harness.received['diagnostics']) >= reports + 2, 10.0, node)
    base = harness.last_status()
    assert base, f'no diagnostics from the node:\n{node.output()}'

    sent = defaultdict(Counter)                  # kind -> variant -> messages
    expected_points = Counter()                  # points.<reason> of the processed clouds
    empty_cloud_points = 0                       # points of the empty clouds (may count as points.non_finite)
    mismatches, late = [], {}                     # late: stamp -> (kind, variant, labelled) not answered in time
    misses = Counter()                           # (kind, variant) -> pairs not answered in time
    pairs = clouds = images = 0
    fuzz_start = time.monotonic()
    for kind, variant in schedule(rng):
        if kind == 'valid_pair':
            msg = None
        else:
            build, verdict, expected = BUILDERS[kind]
            msg = build(rng, variant)
            got = verdict(msg)
            if got != expected:       # the generator and the library disagree: name the exact input
                mismatches.append(f'{kind}/{variant}: expected {expected!r}, the library says {got!r}: {describe(msg)}')
        sent[kind][variant] += 1
        if kind.endswith('info'):
            harness.pub_info.publish(msg)
            harness.pump(0.001, node)
            continue
        cloud, image = (msg, partner_image) if kind.endswith('cloud') else (
            (partner_cloud, msg) if kind.endswith('image') else (valid_cloud, partner_image))
        stamp = send_pair(cloud, image)
        pairs, clouds, images = pairs + 1, clouds + 1, images + 1
        if kind in ANSWERED_KINDS:
            expected_points += expected_point_limits(cloud)
            # one usable pair at a time, the next once the worker published everything of this one:
            # the worker never holds two (a busy drop would leave a message unconverted and uncounted)
            labelled = kind in LABELLED_KINDS
            wait_s = 2.0 if misses[kind, variant] < 2 else 0.05      # a variant that is never answered: move on
            if not harness.spin_until(lambda: stamp in harness.answered and (not labelled or stamp in harness.labelled),
                                      wait_s, node):
                misses[kind, variant] += 1
                late[stamp] = (kind, variant, labelled)
        else:
            if kind == 'empty_cloud':
                empty_cloud_points += cloud.width * cloud.height
            harness.pump(0.005, node)            # refused in microseconds by the worker
    fuzz_s = time.monotonic() - fuzz_start

    # the node is up and a valid pair after the fuzz is answered with its exact header
    node.assert_running()
    final_cloud = array_to_pointcloud2(synthetic_cloud(rng), XYZI)
    final_image = rgb_to_image(synthetic_image(rng))
    final_stamp = send_pair(final_cloud, final_image)
    expected_points += expected_point_limits(final_cloud)
    pairs, clouds, images = pairs + 1, clouds + 1, images + 1
    assert harness.spin_until(lambda: any(d.header == final_cloud.header for d in harness.received['detections']),
                              20.0, node), f'the valid pair after the fuzz was not answered:\n{node.output()[-5000:]}'
    final = next(d for d in harness.received['detections'] if d.header == final_cloud.header)
    assert stamp_to_ns(final.header.stamp) == final_stamp and final.header.frame_id == 'vehicle'
    assert len(final.detections) > 0, 'no detections for the valid pair after the fuzz'

    bad_infos = sum(sent['bad_info'].values())

    def settled() -> bool:     # every message received, every pair's fate counted, every CameraInfo judged
        values = harness.last_status()
        return (status_delta(values, base, 'received_points') == clouds
                and status_delta(values, base, 'received_camera') == images
                and status_delta(values, base, 'sync.emitted_pairs') == pairs
                and accounted(values, base) == pairs
                and status_delta(values, base, 'skipped.bad_camera_info') == bad_infos)
    harness.spin_until(settled, 20.0, node)
    values = harness.last_status()
    delta = {key: status_delta(values, base, key) for key in sorted(set(values) | set(base))
             if key.startswith(('skipped.', 'points.', 'processed', 'dropped', 'non_finite', 'received_', 'sync.'))
             and re.fullmatch(r'-?\d+', values.get(key, '0')) and status_delta(values, base, key)}
    unanswered = Counter((kind, variant) for stamp, (kind, variant, labelled) in late.items()
                         if stamp not in harness.answered or (labelled and stamp not in harness.labelled))
    output = node.output()
    elapsed_s = time.monotonic() - started
    warned_at = defaultdict(list)               # warning key -> log times (s)
    for when, key in WARN_LINE.findall(output):
        warned_at[key].append(float(when))
    warnings = Counter({key: len(times) for key, times in warned_at.items()})
    closest = {key: round(min(b - a for a, b in zip(times, times[1:])), 2)
               for key, times in warned_at.items() if len(times) > 1}

    malformed = sum(sum(sent[kind].values()) for kind in MALFORMED_KINDS)
    print(f'\nfuzz: {malformed} malformed messages of {sum(sum(c.values()) for c in sent.values()) + 1} sent in '
          f'{fuzz_s:.1f} s ({pairs} pairs, {sum(sent["bad_info"].values()) + sum(sent["valid_info"].values())} '
          f'CameraInfo); node up {elapsed_s:.1f} s')
    for kind in BUILDERS:
        print(f'  sent {kind:14s} {sum(sent[kind].values()):4d}  {dict(sorted(sent[kind].items()))}')
    print(f'  sent valid_pair     {sent["valid_pair"]["valid_pair"] + 1:4d}')
    print(f'  counted (delta in /diagnostics): {delta}')
    print(f'  expected points.* from the processed clouds: {dict(expected_points)} '
          f'(+ up to {empty_cloud_points} non-finite points of the empty clouds)')
    warned_s = time.monotonic() - fuzz_start    # every warning of the run comes after the fuzz started
    bound = math.floor(warned_s / THROTTLE_S) + 2   # one per 5 s per key in warned_s, +1 for scheduling
    print(f'  warning lines per key: {dict(sorted(warnings.items()))} '
          f'(throttle bound {bound} each in {warned_s:.1f} s); closest two of a key (s): '
          f'{dict(sorted(closest.items()))}')
    if late:
        print(f'  usable pairs answered after more than {2.0} s or never: {len(late)}; never: {dict(unanswered)}')

    assert not mismatches, 'generated inputs the library judges otherwise:\n' + '\n'.join(mismatches[:30])
    assert malformed >= 2000
    node.assert_running()
    assert 'Traceback' not in output, output[-10000:]

    # nothing lost on the way, every pair paired
    assert delta.get('received_points', 0) == clouds and delta.get('received_camera', 0) == images, \
        (delta, clouds, images)
    assert delta.get('sync.emitted_pairs', 0) == pairs, delta
    # every pair the synchronizer emitted: processed, skipped as a whole, or dropped while busy
    assert accounted(values, base) == pairs, (pairs, delta)
    assert delta.get('skipped.processing_error', 0) == 0, \
        f'the worker raised on some input: {delta}; unanswered usable pairs {dict(unanswered)}\n' + '\n'.join(
            line for line in output.splitlines() if 'processing_error' in line)
    assert not unanswered, f'usable pairs without an answer: {dict(unanswered)}; {delta}'
    busy = delta.get('dropped_busy', 0) + delta.get('dropped_after_reset', 0)
    # each reason targeted is counted: exactly, up to pairs dropped while busy (their messages never converted)
    for kind, reason in REASON_OF_KIND.items():
        expected = sum(sent[kind].values())
        slack = 0 if kind == 'bad_info' else busy
        assert expected - slack <= delta.get(reason, 0) <= expected, (reason, expected, busy, delta)
    # processed: every usable pair (bad images run LiDAR-only); nothing else
    usable = sum(sum(sent[kind].values()) for kind in ANSWERED_KINDS) + 1
    assert usable - busy <= delta.get('processed', 0) <= usable, (usable, busy, delta)
    assert delta.get('processed_lidar_only', 0) >= sum(sent['bad_image'].values()) - busy, delta
    assert any(delta.get(key, 0) > 0 for key in NON_FINITE_KEYS), delta
    for key, variant in POINT_LIMIT_KEYS.items():
        if REQUIRE_POINT_LIMIT_KEYS or key in values:
            assert delta.get(key, 0) > 0, f'{key} not counted for {variant} clouds: {delta}'
            if key == 'points.non_finite':      # the empty clouds' points may count too (or not: skipped first)
                assert expected_points[key] <= delta[key] <= expected_points[key] + empty_cloud_points, \
                    (key, dict(expected_points), empty_cloud_points, delta)
            else:
                assert delta[key] == expected_points[key], (key, dict(expected_points), delta)
    # no other reason shows up (e.g. calibration_projects_nothing after a CameraInfo was wrongly accepted)
    reasons = {key for key in delta if key.startswith('skipped.')}
    assert reasons <= set(REASON_OF_KIND.values()), delta

    # warnings: each reason named, at most one per key per 5 s (log times: the system clock, the
    # throttle's the monotonic one; 0.1 s for the difference)
    assert all(gap >= THROTTLE_S - 0.1 for gap in closest.values()), closest
    for reason in REASON_OF_KIND.values():
        assert warnings[reason[len('skipped.'):]] >= 1, (reason, warnings)
    assert all(count <= bound for count in warnings.values()), (warnings, bound)
    assert node.interrupt() == 0, node.output()[-5000:]
