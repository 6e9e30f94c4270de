"""Per-stage and end-to-end latency of the running node (p50 / p95), and drops.

Starts mtl_perception_node as a real process, publishes a LiDAR cloud + camera image pair at
--rate_hz for --seconds, subscribes to the detections and semantic outputs (so they are all
computed), and prints the node's own measurements from /diagnostics: end-to-end = receipt of
the later message of a pair -> its outputs published. The node runs once per combination of
--cameras (A2D2's camera names, each with the shipped calibration, one image per camera and
cloud), --backends and --threads (its inference_threads; 0 = all cores but one), and a table
compares them side by side at the end, with the node's memory (RSS at the end, and its peak).

  .venv/bin/python benchmarks/bench_node_latency.py [--checkpoint model.pt] [--image_hw 1208 1920]
      [--cameras 1 3 6] [--backends torch onnxruntime] [--threads 2 0] [--precisions fp32 bf16 int8]
      [--detections_only]
Without --checkpoint a randomly initialised network of the default (deploy) ModelConfig is used:
same cost as a trained one. Backend onnxruntime needs the checkpoint's ONNX export: made here
(training.export.to_onnx) when it is missing.
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


A2D2_CAMERAS = ('front_center', 'front_left', 'front_right', 'side_left', 'side_right', 'rear_center')


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
    parser.add_argument('--cameras', type=int, nargs='+', default=[1], choices=range(1, 7),
                        help='camera counts to run, one node run each (default 1: the shipped camera `camera`)')
    parser.add_argument('--backends', nargs='+', default=['torch', 'onnxruntime'],
                        choices=('torch', 'onnxruntime', 'tensorrt'))
    parser.add_argument('--threads', type=int, nargs='+', default=[0],
                        help="the node's inference_threads, one run each (0 = all cores but one)")
    parser.add_argument('--precisions', nargs='+', default=['fp32'], choices=('fp32', 'fp16', 'bf16', 'int8'),
                        help="the node's precision, one run each (int8: onnxruntime only, after "
                             "training.export.to_int8 of --checkpoint)")
    args = parser.parse_args()
    if 'int8' in args.precisions and (args.checkpoint is None or 'onnxruntime' not in args.backends):
        parser.error('--precisions int8 needs backend onnxruntime and a --checkpoint whose export has int8 graphs '
                     '(python -m training.export.to_int8 --checkpoint CKPT --chunks CHUNK_DIR)')
    profile = None if args.default_transport else REPO / 'config/fastdds_large_images.xml'
    if profile is not None:   # for this process's participant and the node's (inherited)
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    else:
        os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)

    import rclpy
    rclpy.init()
    workdir = Path(tempfile.mkdtemp(prefix='bench_node_'))
    checkpoint = args.checkpoint or default_checkpoint(workdir / 'default.pt')
    summary = []
    try:
        if any(backend != 'torch' for backend in args.backends):
            ensure_onnx_export(checkpoint)
        for count in args.cameras:
            for backend in args.backends:
                for precision in args.precisions:
                    if not runs(backend, precision):
                        continue
                    for threads in args.threads:
                        values, sent, rss = run_node(args, count, checkpoint, workdir, profile, backend, threads,
                                                     precision)
                        summary.append((count, backend, threads, sent, values, rss))
    finally:
        rclpy.shutdown()
    print(f'\n{"cameras":>7s} {"backend":>11s} {"prec":>4s} {"threads":>7s} {"pairs":>5s} {"processed":>9s} {"busy":>4s} '
          f'{"e2e p50":>7s} {"e2e p95":>7s} {"model p50":>9s} {"publish p50":>11s} {"RSS MB":>6s} {"peak MB":>7s}')
    for count, backend, threads, sent, values, (rss, peak) in summary:
        get = values.get
        print(f'{count:7d} {backend:>11s} {get("precision", "?"):>4s} {get("inference_threads", "?"):>7s} {sent:5d} {get("processed", "0"):>9s} '
              f'{get("dropped_busy", "0"):>4s} {get("latency_ms.end_to_end.p50", "-"):>7s} '
              f'{get("latency_ms.end_to_end.p95", "-"):>7s} {get("latency_ms.model.model.p50", "-"):>9s} '
              f'{get("latency_ms.publish.p50", "-"):>11s} {rss:6.0f} {peak:7.0f}')


def runs(backend: str, precision: str) -> bool:
    """Whether the pair is a run of its own: ONNX Runtime's graphs are fp32 or int8 (a half precision
    would run fp32 again), int8 runs in ONNX Runtime only."""
    return precision in ('fp32', 'int8') if backend == 'onnxruntime' else precision != 'int8'


def ensure_onnx_export(checkpoint: Path) -> None:
    import subprocess

    from mtl_perception_ros.core.inference_backends import default_onnx_dir
    if (default_onnx_dir(checkpoint) / 'onnx_export.json').is_file():
        return
    print(f'exporting {checkpoint} to ONNX ...', flush=True)
    subprocess.run([sys.executable, '-m', 'training.export.to_onnx', '--checkpoint', str(checkpoint), '--frames', '1'],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of a process, from /proc (0, 0 where there is no /proc)."""
    try:
        fields = dict(line.split(':', 1) for line in Path(f'/proc/{pid}/status').read_text().splitlines())
    except OSError:
        return 0.0, 0.0
    return tuple(int(fields[key].split()[0]) / 1024 for key in ('VmRSS', 'VmHWM'))


def run_node(args, count: int, checkpoint: Path, workdir: Path, profile, backend: str, threads: int,
             precision: str = 'fp32'):
    """One node run with `count` cameras: prints its stages, returns (its last diagnostics, pairs
    sent, (RSS, peak RSS) MB of the node at the end)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2
    from vision_msgs.msg import Detection2DArray

    from mtl_perception_ros.messages.image import rgb_to_image
    from ros_test_utils import RosProcess, subprocess_env
    from sensor_samples import header, rig_params_yaml, sensor_pair, synthetic_cloud, synthetic_image

    cameras = ('camera',) if count == 1 else A2D2_CAMERAS[:count]
    params = REPO / 'config/mtl_perception.yaml' if count == 1 else rig_params_yaml(workdir / f'cameras_{count}.yaml', cameras)
    executable = shutil.which('mtl_perception_node', path=str(Path(sys.executable).parent)) or 'mtl_perception_node'
    node_process = RosProcess([executable, '--ros-args', '--params-file', str(params),
                               '-p', f'model_path:={checkpoint}', '-p', f'device:={args.device}',
                               '-p', f'input_qos:={args.qos}', '-p', f'backend:={backend}',
                               '-p', f'inference_threads:={threads}', '-p', f'precision:={precision}',
                               '-r', '__ns:=/bench'], workdir / f'node_{count}_{backend}_{precision}_{threads}.log',
                              env=subprocess_env())
    node = rclpy.create_node(f'latency_bench_{count}')
    outputs = {'detections': 0, 'labels': 0, 'overlay': 0}
    statuses = []

    def counter(key):
        return lambda msg: outputs.__setitem__(key, outputs[key] + 1)
    node.create_subscription(Detection2DArray, '/bench/mtl_perception/detections', counter('detections'), 10)
    if not args.detections_only:
        for camera in cameras:
            node.create_subscription(Image, f'/bench/mtl_perception/{camera}/semantic/labels', counter('labels'), 10)
            node.create_subscription(Image, f'/bench/mtl_perception/{camera}/semantic/overlay', counter('overlay'), 10)
    node.create_subscription(DiagnosticArray, '/diagnostics',
                             lambda m: statuses.extend(s for s in m.status if 'mtl_perception' in s.name), 10)
    input_qos = qos_profile_sensor_data if args.qos == 'sensor_data' else 10
    pub_points = node.create_publisher(PointCloud2, '/bench/points', input_qos)
    pub_images = [node.create_publisher(Image, f'/bench/{camera}/image_raw', input_qos) for camera in cameras]
    rng = np.random.default_rng(0)
    clouds = [synthetic_cloud(rng, args.points) for _ in range(4)]
    images = [synthetic_image(rng, tuple(args.image_hw)) for _ in range(4)]

    def publish(stamp: float, index: int):
        cloud_msg, _ = sensor_pair(rng, stamp, clouds[index % 4], images[index % 4])
        pub_points.publish(cloud_msg)
        for camera, pub in zip(cameras, pub_images):
            pub.publish(rgb_to_image(images[index % 4], header(stamp + 0.004, f'{camera}_optical')))

    try:
        print(f'\n== {count} camera(s), backend {backend}, inference_threads {threads}: waiting for the node '
              f'(log: {node_process.log_path}) ...', flush=True)
        stamp, deadline = 0.0, time.monotonic() + 120
        while outputs['detections'] == 0 and time.monotonic() < deadline:
            node_process.assert_running()
            stamp += 1.0 / args.rate_hz
            publish(stamp, 0)
            rclpy.spin_once(node, timeout_sec=0.2)
        time.sleep(2.0)   # let the warm-up frames leave the diagnostics window (200 samples)
        for key in outputs:
            outputs[key] = 0
        start, sent = time.monotonic(), 0
        while time.monotonic() - start < args.seconds:
            stamp += 1.0 / args.rate_hz
            publish(stamp, sent)
            sent += 1
            next_send = start + sent / args.rate_hz
            while time.monotonic() < next_send:
                rclpy.spin_once(node, timeout_sec=max(0.0, next_send - time.monotonic()))
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        values = {kv.key: kv.value for kv in statuses[-1].values}
        memory = memory_mb(node_process.pid)
        print(f'Fast DDS profile: {profile or "default transports"}')
        print(f'node on {values["device"]}, backend {values["backend"]} ({values["precision"]}, '
              f'{values["inference_threads"]} threads, {values["execution_providers"] or "torch"}), input QoS {args.qos}, {args.points} points, '
              f'{count} camera(s) of {args.image_hw[1]}x{args.image_hw[0]} rgb8, {args.rate_hz:g} Hz for '
              f'{args.seconds:g} s')
        print(f'sent {sent} clouds; received {outputs["detections"]} detections, {outputs["labels"]} label images, '
              f'{outputs["overlay"]} overlays; dropped_busy={values.get("dropped_busy", "0")}, '
              f'skipped={sum(int(v) for k, v in values.items() if k.startswith("skipped."))}')
        print("synchronizer: " + ", ".join(f"{k[5:]}={v}" for k, v in values.items() if k.startswith("sync.") and v != "0"))
        print(f'{"stage":28s} {"p50 ms":>8s} {"p95 ms":>8s}')
        for key in sorted(k for k in values if k.startswith('latency_ms.') and k.endswith('.p50')):
            stage = key[len('latency_ms.'):-len('.p50')]
            print(f'{stage:28s} {float(values[key]):8.1f} {float(values[key[:-4] + ".p95"]):8.1f}')
        print(f'node memory: RSS {memory[0]:.0f} MB, peak {memory[1]:.0f} MB')
        return values, sent, memory
    finally:
        node.destroy_node()
        code = node_process.interrupt()
        print(f'node exit code after SIGINT: {code}')


if __name__ == '__main__':
    main()
