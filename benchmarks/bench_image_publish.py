"""What rclpy costs to publish a camera-size image, per MB, next to a plain memcpy (prints figures).

A subscriber runs in another process (real DDS, the shipped Fast DDS profile: shared memory), and
this process publishes sensor_msgs/Image at 20 Hz in three ways, per size (a 320x512 rgb8 model
input, a 1920x1208 mono8 class map, a 1920x1208 rgb8 overlay):
- `numpy -> message`: mtl_perception_ros.messages.image.rgb_to_image / mono8_to_image (one copy
  of the pixels into the message's array.array), then publish() -- the node's path before;
- `reused buffer`: the pixels written into an array.array the message keeps across frames
  (messages.image.ImageBuffer: the producer, e.g. cv2, writes there directly), then publish();
- `publish() only`: the publish call alone (rclpy's conversion to C, CDR serialisation, the hand-over
  to Fast DDS), and `serialize_message` alone for reference;
- `raw bytes`: the CDR bytes of the message made here (checked equal to serialize_message's) and
  published with publish(bytes), which skips rclpy's conversion and serialisation.
and a plain numpy memcpy of the same bytes.

  .venv/bin/python benchmarks/bench_image_publish.py [--frames 60]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(0, 101)))
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(REPO / 'config/fastdds_large_images.xml'))

SUBSCRIBER = textwrap.dedent('''
    import sys, rclpy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node('image_publish_bench_subscriber')
    received = [0]
    node.create_subscription(Image, '/bench/image', lambda m: received.__setitem__(0, received[0] + 1), 10)
    print('ready', flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):
        pass
''')
SIZES = (('model input 320x512 rgb8', (320, 512, 3)), ('class map 1920x1208 mono8', (1208, 1920)),
         ('overlay 1920x1208 rgb8', (1208, 1920, 3)))


def cdr_image_prefix(pixels: np.ndarray, encoding: str) -> bytes:
    """CDR (little endian) of a sensor_msgs/Image with a zero stamp and an empty frame_id, up to its data."""
    import struct
    height, width = pixels.shape[:2]
    step = pixels.nbytes // height
    def string(text: bytes, offset: int) -> bytes:
        pad = (-offset) % 4
        return b'\0' * pad + struct.pack('<I', len(text) + 1) + text + b'\0'
    out = b'\x00\x01\x00\x00' + struct.pack('<iI', 0, 0)
    out += string(b'', len(out) - 4)
    out += b'\0' * ((-(len(out) - 4)) % 4) + struct.pack('<II', height, width)
    out += string(encoding.encode(), len(out) - 4)
    out += struct.pack('<B', 0)
    out += b'\0' * ((-(len(out) - 4)) % 4) + struct.pack('<II', step, pixels.nbytes)
    return out


def median_ms(samples) -> float:
    return statistics.median(samples) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=60)
    args = parser.parse_args()
    import rclpy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from mtl_perception_ros.messages.image import ImageBuffer, mono8_to_image, rgb_to_image

    subscriber = subprocess.Popen([sys.executable, '-c', SUBSCRIBER], stdout=subprocess.PIPE, text=True)
    rclpy.init()
    node = rclpy.create_node('image_publish_bench')
    publisher = node.create_publisher(Image, '/bench/image', 10)
    try:
        subscriber.stdout.readline()
        deadline = time.monotonic() + 20
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        rng = np.random.default_rng(0)
        print(f'{"image":28s} {"MB":>5s} {"memcpy":>7s} {"numpy->msg":>10s} {"+publish":>9s} {"reused buf":>10s} '
              f'{"+publish":>9s} {"publish":>8s} {"serialize":>9s} {"raw bytes":>9s}   (ms, median of {args.frames})')
        for name, shape in SIZES:
            pixels = rng.integers(0, 255, shape, dtype=np.uint8)
            target = np.empty_like(pixels)
            convert = rgb_to_image if pixels.ndim == 3 else mono8_to_image
            encoding = 'rgb8' if pixels.ndim == 3 else 'mono8'
            buffer = ImageBuffer()
            times = {key: [] for key in ('memcpy', 'build', 'build_publish', 'reuse', 'reuse_publish', 'publish',
                                         'serialize', 'raw')}
            prefix = cdr_image_prefix(pixels, encoding)
            assert prefix + pixels.tobytes() == serialize_message(convert(pixels)), 'CDR layout differs'
            for _ in range(args.frames):
                start = time.perf_counter()
                np.copyto(target, pixels)
                times['memcpy'].append(time.perf_counter() - start)

                start = time.perf_counter()
                msg = convert(pixels)
                built = time.perf_counter()
                publisher.publish(msg)
                done = time.perf_counter()
                times['build'].append(built - start)
                times['build_publish'].append(done - start)
                times['publish'].append(done - built)
                time.sleep(0.025)

                start = time.perf_counter()
                view = buffer.pixels(pixels.shape)
                np.copyto(view, pixels)
                msg = buffer.message(encoding)
                built = time.perf_counter()
                publisher.publish(msg)
                done = time.perf_counter()
                times['reuse'].append(built - start)
                times['reuse_publish'].append(done - start)
                time.sleep(0.025)

                start = time.perf_counter()
                serialize_message(msg)
                times['serialize'].append(time.perf_counter() - start)

                start = time.perf_counter()
                publisher.publish(b''.join((prefix, pixels.data)))
                times['raw'].append(time.perf_counter() - start)
                time.sleep(0.025)
            megabytes = pixels.nbytes / 1e6
            print(f'{name:28s} {megabytes:5.2f} ' + ' '.join(
                f'{median_ms(times[key]):{width}.2f}' for key, width in (
                    ('memcpy', 7), ('build', 10), ('build_publish', 9), ('reuse', 10), ('reuse_publish', 9),
                    ('publish', 8), ('serialize', 9), ('raw', 9))))
        print('per MB (overlay): memcpy {:.3f} ms, publish() {:.3f} ms'.format(
            median_ms(times['memcpy']) / megabytes, median_ms(times['publish']) / megabytes))
    finally:
        node.destroy_node()
        rclpy.shutdown()
        subscriber.terminate()
        subscriber.wait(timeout=10)


if __name__ == '__main__':
    main()
