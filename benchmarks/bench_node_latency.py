"""Per-stage and end-to-end latency of the running node (p50 / p95), and drops.

Starts mtl_perception_node as a real process, publishes a LiDAR cloud + camera image pair at
--rate_hz for --seconds, subscribes to the detections and semantic outputs (so they are all
computed), and prints the node's own measurements from /diagnostics: end-to-end = receipt of
the later message of a pair -> its outputs published.

  .venv/bin/python benchmarks/bench_node_latency.py [--checkpoint model.pt] [--image_hw 1208 1920]
Without --checkpoint a randomly initialised network of the default (deploy) ModelConfig is used:
same cost as a trained one.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'test'))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(0, 101)))


def default_checkpoint(path: Path) -> Path:
    from mtl_perception_ros.core.checkpoint import save_checkpoint
    from mtl_perception_ros.core.labels import LabelSet
    from mtl_perception_ros.core.model import ModelConfig, MultiTaskNet
    semantic = LabelSet.from_yaml(REPO / 'config/a2d2/semantic_classes.yaml')
    detection = LabelSet.from_yaml(REPO / 'config/a2d2/box_classes.yaml')
    model = MultiTaskNet(ModelConfig(num_det_classes=len(detection), num_sem_classes=len(semantic)))
    save_checkpoint(path, model.eval(), semantic, detection)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', type=Path)
    parser.add_argument('--rate_hz', type=float, default=10.0)
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--points', type=int, default=8000)
    parser.add_argument('--image_hw', type=int, nargs=2, default=(1208, 1920))
    parser.add_argument('--device', default='auto')
    parser.add_argument('--default_transport', action='store_true',
                        help="Fast DDS's default transports instead of config/fastdds_large_images.xml")
    parser.add_argument('--detections_only', action='store_true',
                        help='subscribe to the detections only (the node then computes no semantic images)')
    parser.add_argument('--qos', choices=('sensor_data', 'reliable'), default='reliable',
                        help='input QoS of the node and of the publishers here (best effort loses '
                             'large images in Fast DDS: docs/node.md, Known limits)')
    args = parser.parse_args()
    profile = None if args.default_transport else REPO / 'config/fastdds_large_images.xml'
    if profile is not None:   # for this process's participant and the node's (inherited)
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    else:
        os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2
    from vision_msgs.msg import Detection2DArray

    from ros_test_utils import RosProcess, subprocess_env
    from sensor_samples import sensor_pair, synthetic_cloud, synthetic_image

    workdir = Path(tempfile.mkdtemp(prefix='bench_node_'))
    checkpoint = args.checkpoint or default_checkpoint(workdir / 'default.pt')
    executable = shutil.which('mtl_perception_node', path=str(Path(sys.executable).parent)) or 'mtl_perception_node'
    node_process = RosProcess([executable, '--ros-args', '--params-file', str(REPO / 'config/mtl_perception.yaml'),
                               '-p', f'model_path:={checkpoint}', '-p', f'device:={args.device}',
                               '-p', f'input_qos:={args.qos}',
                               '-r', '__ns:=/bench'], workdir / 'node.log', env=subprocess_env())
    rclpy.init()
    node = rclpy.create_node('latency_bench')
    outputs = {'detections': 0, 'labels': 0, 'overlay': 0}
    statuses = []
    node.create_subscription(Detection2DArray, '/bench/mtl_perception/detections',
                             lambda m: outputs.__setitem__('detections', outputs['detections'] + 1), 10)
    if not args.detections_only:
        node.create_subscription(Image, '/bench/mtl_perception/camera/semantic/labels',
                                 lambda m: outputs.__setitem__('labels', outputs['labels'] + 1), 10)
        node.create_subscription(Image, '/bench/mtl_perception/camera/semantic/overlay',
                                 lambda m: outputs.__setitem__('overlay', outputs['overlay'] + 1), 10)
    node.create_subscription(DiagnosticArray, '/diagnostics',
                             lambda m: statuses.extend(s for s in m.status if 'mtl_perception' in s.name), 10)
    input_qos = qos_profile_sensor_data if args.qos == 'sensor_data' else 10
    pub_points = node.create_publisher(PointCloud2, '/bench/points', input_qos)
    pub_image = node.create_publisher(Image, '/bench/camera/image_raw', input_qos)
    rng = np.random.default_rng(0)
    clouds = [synthetic_cloud(rng, args.points) for _ in range(4)]
    images = [synthetic_image(rng, tuple(args.image_hw)) for _ in range(4)]
    try:
        print(f'waiting for the node (log: {workdir / "node.log"}) ...', flush=True)
        stamp, deadline = 0.0, time.monotonic() + 120
        while outputs['detections'] == 0 and time.monotonic() < deadline:
            node_process.assert_running()
            stamp += 1.0 / args.rate_hz
            for msg, pub in zip(sensor_pair(rng, stamp, clouds[0], images[0]), (pub_points, pub_image)):
                pub.publish(msg)
            rclpy.spin_once(node, timeout_sec=0.2)
        time.sleep(2.0)   # let the warm-up frames leave the diagnostics window (200 samples)
        for key in outputs:
            outputs[key] = 0
        start, sent = time.monotonic(), 0
        while time.monotonic() - start < args.seconds:
            stamp += 1.0 / args.rate_hz
            cloud_msg, image_msg = sensor_pair(rng, stamp, clouds[sent % 4], images[sent % 4])
            pub_points.publish(cloud_msg)
            pub_image.publish(image_msg)
            sent += 1
            next_send = start + sent / args.rate_hz
            while time.monotonic() < next_send:
                rclpy.spin_once(node, timeout_sec=max(0.0, next_send - time.monotonic()))
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        values = {kv.key: kv.value for kv in statuses[-1].values}
        print(f'\nFast DDS profile: {profile or "default transports"}')
        print(f'node on {values["device"]} ({values["precision"]}), input QoS {args.qos}, {args.points} points, '
              f'{args.image_hw[1]}x{args.image_hw[0]} rgb8 images, {args.rate_hz:g} Hz for {args.seconds:g} s')
        print(f'sent {sent} pairs; received {outputs["detections"]} detections, {outputs["labels"]} label images, '
              f'{outputs["overlay"]} overlays; dropped_busy={values.get("dropped_busy", "0")}, '
              f'skipped={sum(int(v) for k, v in values.items() if k.startswith("skipped."))}')
        print("synchronizer: " + ", ".join(f"{k[5:]}={v}" for k, v in values.items() if k.startswith("sync.") and v != "0"))
        print(f'{"stage":28s} {"p50 ms":>8s} {"p95 ms":>8s}')
        for key in sorted(k for k in values if k.startswith('latency_ms.') and k.endswith('.p50')):
            stage = key[len('latency_ms.'):-len('.p50')]
            print(f'{stage:28s} {float(values[key]):8.1f} {float(values[key[:-4] + ".p95"]):8.1f}')
    finally:
        node.destroy_node()
        rclpy.shutdown()
        code = node_process.interrupt()
        print(f'node exit code after SIGINT: {code}')


if __name__ == '__main__':
    main()
