"""Message <-> numpy conversion speed: PointCloud2 decoding against a per-point struct.unpack
decoder and a plain copy of the buffer, Image conversions, the camera encodings (Bayer, YUV, NV12, JPEG, PNG) against the rgb8 path, and the detection message builders
(rclpy messages, and a row each with the rosbags message factory that bags are written with).

Run: .venv/bin/python benchmarks/bench_msg_conversions.py [--repeats 30]
Prints medians over the repeats (milliseconds) and ratios.
"""
from __future__ import annotations

import argparse
import math
import struct

import cv2
import numpy as np
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

from mtl_perception_ros.bags.typestore import bag_message
from mtl_perception_ros.messages.camera_image import camera_image_to_rgb
from mtl_perception_ros.messages.compressed_image import rgb_to_compressed_image
from mtl_perception_ros.messages.image import image_to_rgb, rgb_to_image
from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2, pointcloud2_to_array
from timing import median_ms

CLOUD_FIELDS = ('x', 'y', 'z', 'intensity', 'ring', 'time')


def lidar_cloud(count: int, point_step: int, nan_fraction: float = 0.0, is_bigendian: bool = False) -> PointCloud2:
    """A driver-like cloud: x, y, z, intensity float32 @0..12, ring uint16 @16, time float32 @18."""
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.uniform(-80, 80, (count, 3)), rng.uniform(0, 255, count),
                              rng.integers(0, 128, count), rng.uniform(0, 0.1, count)])
    values[rng.random(count) < nan_fraction, 0] = np.nan
    return array_to_pointcloud2(values, CLOUD_FIELDS, Header(frame_id='lidar'), dtypes={'ring': np.uint16},
                                offsets=[0, 4, 8, 12, 16, 18], point_step=point_step, is_bigendian=is_bigendian)


def struct_unpack_decoder(msg: PointCloud2) -> np.ndarray:
    """The straightforward decoder: one struct.unpack_from per point, NaN points skipped."""
    unpack = struct.Struct(('>' if msg.is_bigendian else '<') + 'ffff').unpack_from
    data = bytes(msg.data)
    rows = []
    for index in range(msg.width * msg.height):
        point = unpack(data, index * msg.point_step)
        if all(math.isfinite(value) for value in point):
            rows.append(point)
    return np.array(rows, dtype=np.float32).reshape(-1, 4)


def bench_clouds(repeats: int) -> None:
    print('PointCloud2 -> (N, 4) float32 x, y, z, intensity (120000 points)')
    print(f'{"cloud":<42}{"struct.unpack":>14}{"ours":>10}{"memcpy":>10}{"unpack/ours":>13}{"ours/memcpy":>13}')
    for label, msg in [('point_step 22 (packed, unaligned)', lidar_cloud(120_000, 22)),
                       ('point_step 32 (padded)', lidar_cloud(120_000, 32)),
                       ('point_step 22, 10% NaN points', lidar_cloud(120_000, 22, nan_fraction=0.1)),
                       ('point_step 22, big-endian', lidar_cloud(120_000, 22, is_bigendian=True))]:
        ours, _ = pointcloud2_to_array(msg)
        baseline = struct_unpack_decoder(msg)
        np.testing.assert_array_equal(ours, baseline)  # same answer before comparing speed
        baseline_ms = median_ms(lambda: struct_unpack_decoder(msg), max(3, repeats // 10))
        ours_ms = median_ms(lambda: pointcloud2_to_array(msg), repeats)
        copy_ms = median_ms(lambda: np.frombuffer(msg.data, dtype=np.uint8).copy(), repeats)
        print(f'{label:<42}{baseline_ms:>12.2f}ms{ours_ms:>8.3f}ms{copy_ms:>8.3f}ms'
              f'{baseline_ms / ours_ms:>12.0f}x{ours_ms / copy_ms:>12.2f}x')
    msg = lidar_cloud(120_000, 22)
    values, _ = pointcloud2_to_array(msg, CLOUD_FIELDS)
    build_ms = median_ms(lambda: array_to_pointcloud2(values, CLOUD_FIELDS, dtypes={'ring': np.uint16}), repeats)
    print(f'array_to_pointcloud2, 120000 points, 6 fields: {build_ms:.2f} ms')


def bench_images(repeats: int) -> None:
    height, width = 1208, 1920
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    bgr_msg = rgb_to_image(np.ascontiguousarray(rgb[..., ::-1]))
    bgr_msg.encoding = 'bgr8'
    rgb_msg = rgb_to_image(rgb)
    mono16 = Image(height=height, width=width, encoding='mono16', step=width * 2)
    mono16.data = np.random.default_rng(1).integers(0, 2 ** 16, (height, width), dtype=np.uint16).tobytes()
    padded = Image(height=height, width=width, encoding='bgr8', step=width * 3 + 64)
    padded.data = np.zeros(height * (width * 3 + 64), dtype=np.uint8).tobytes()
    np.testing.assert_array_equal(image_to_rgb(bgr_msg), rgb)
    print(f'\nImage conversions, {width}x{height} (median ms)')
    rows = [('bgr8 Image -> RGB array', lambda: image_to_rgb(bgr_msg)),
            ('bgr8 Image with row padding -> RGB array', lambda: image_to_rgb(padded)),
            ('rgb8 Image -> RGB array (zero-copy view)', lambda: image_to_rgb(rgb_msg)),
            ('mono16 Image -> RGB array', lambda: image_to_rgb(mono16)),
            ('RGB array -> rgb8 Image message', lambda: rgb_to_image(rgb)),
            ('RGB array -> rgb8 Image, rosbags message', lambda: rgb_to_image(rgb, new=bag_message)),
            ('plain copy of the 7 MB array (reference)', lambda: rgb.copy())]
    for label, function in rows:
        print(f'{label:<46}{median_ms(function, repeats):>8.2f} ms')
    bench_camera_encodings(rgb, rgb_msg, repeats)


def bench_camera_encodings(rgb: np.ndarray, rgb_msg, repeats: int) -> None:
    """Each camera encoding (and JPEG / PNG) -> RGB at the same size, against the rgb8 path."""
    height, width = rgb.shape[:2]
    grey = rgb[..., 1]
    messages = {'rgb8 (baseline: a view, + 1 copy)': rgb_msg}
    for encoding in ('bayer_rggb8', 'bayer_grbg16'):
        pixels = grey if encoding.endswith('8') else grey.astype(np.uint16) << 8
        messages[encoding] = Image(height=height, width=width, encoding=encoding, step=width * pixels.itemsize,
                                   data=pixels.tobytes())
    for encoding in ('yuv422', 'yuv422_yuy2'):
        messages[encoding] = Image(height=height, width=width, encoding=encoding, step=width * 2,
                                   data=np.repeat(grey, 2, axis=1).tobytes())
    messages['nv12'] = Image(height=height, width=width, encoding='nv12', step=width,
                             data=np.concatenate([grey, grey[::2]]).tobytes())
    smooth = cv2.GaussianBlur(rgb, (0, 0), 8)           # camera-like content, not noise, for the codecs
    messages['CompressedImage JPEG q90'] = rgb_to_compressed_image(smooth)
    messages['CompressedImage PNG'] = rgb_to_compressed_image(smooth, format='png')
    print(f'\nCamera encodings -> RGB, {width}x{height} (median ms; x = time / rgb8 path)')
    baseline = median_ms(lambda: np.ascontiguousarray(camera_image_to_rgb(rgb_msg)).copy(), repeats)
    for label, msg in messages.items():
        size = len(msg.data)
        ms = baseline if label.startswith('rgb8') else median_ms(lambda msg=msg: camera_image_to_rgb(msg), repeats)
        print(f'{label:<36}{size / 1e6:>7.2f} MB {ms:>8.2f} ms {ms / baseline:>7.1f}x')


def bench_builders(repeats: int) -> None:
    try:
        from rclpy.serialization import serialize_message
        from visualization_msgs.msg import MarkerArray

        from mtl_perception_ros.messages.marker_serialization import BoxMarkerSerializer, cdr_mismatch
        from mtl_perception_ros.messages.outputs import box_markers, detection2d_array, detection3d_array
        from mtl_perception_ros.messages.stamps import header_msg
    except ImportError as error:  # vision_msgs missing
        print(f'\n(detection builders skipped: {error})')
        return
    rng = np.random.default_rng(0)
    count = 300
    boxes = np.column_stack([rng.uniform(0, 64, count), rng.uniform(-32, 32, count), rng.normal(size=count),
                             np.full(count, 4.5), np.full(count, 1.9), np.full(count, 1.6),
                             rng.uniform(-3, 3, count)])
    classes, scores = rng.integers(0, 4, count), rng.random(count)
    names, colors = ['car', 'truck', 'pedestrian', 'cyclist'], [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    header = Header(frame_id='lidar')
    velocities = rng.normal(size=(count, 2))
    print(f'\nDetection message builders, {count} boxes (median ms)')
    rows = [('detection2d_array', lambda: detection2d_array(boxes, names, classes, scores, header)),
            ('detection3d_array', lambda: detection3d_array(boxes, names, classes, scores, header)),
            ('detection2d_array, rosbags messages', lambda: detection2d_array(
                boxes, names, classes, scores, header_msg(0, 'lidar', new=bag_message), new=bag_message)),
            ('box_markers (+ velocity arrows, track ids)',
             lambda: box_markers(boxes, names, classes, scores, header, colors, track_ids=list(range(count)),
                                 velocities=velocities)),
            ('  serialize_message(box_markers) (reference)',
             lambda: serialize_message(box_markers(boxes, names, classes, scores, header, colors,
                                                   track_ids=list(range(count)), velocities=velocities))),
            ('  BoxMarkerSerializer: the same, as bytes',
             lambda: serializer.serialize(boxes, names, classes, scores, header, colors, track_ids=list(range(count)),
                                          velocities=velocities))]
    serializer = BoxMarkerSerializer.for_installed_messages()
    mismatch = cdr_mismatch(rows[-1][1](), rows[-2][1](), MarkerArray)  # same bytes before comparing speed
    assert not mismatch, mismatch
    for label, function in rows:
        print(f'{label:<46}{median_ms(function, max(3, repeats // 3)):>8.2f} ms')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=30)
    args = parser.parse_args()
    bench_clouds(args.repeats)
    bench_images(args.repeats)
    bench_builders(args.repeats)


if __name__ == '__main__':
    main()
