"""Speed of the synthetic A2D2-layout generator (training/synthetic/synthesize.py), PNG / npz writing included.

Run (single-threaded, as on a shared machine):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_synthesize.py --scenes 2 --frames 10 --cv-threads 1
    .venv/bin/python benchmarks/bench_synthesize.py --rig surround --scenes 1 --frames 4   # six cameras
Prints frames/s end to end (scene setup included, like the CLI), frames/s without the per-scene
setup, and milliseconds per frame for each stage. Output goes to a temporary folder.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.synthetic.synthesize import Summary, Synthesizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--scenes', type=int, default=2)
    parser.add_argument('--frames', type=int, default=10, help='frames per scene')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--rig', default='front', choices=('front', 'surround'))
    parser.add_argument('--cv-threads', type=int, default=-1, help='cv2.setNumThreads (-1: OpenCV default)')
    args = parser.parse_args()
    if args.cv_threads >= 0:
        cv2.setNumThreads(args.cv_threads)

    started = time.perf_counter()
    synthesizer = Synthesizer(rig=args.rig)
    rig_seconds = time.perf_counter() - started
    summary = Summary()
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        for scene in range(args.scenes):
            synthesizer.write_scene(Path(root), args.seed, scene, args.frames, summary)
        summary.seconds = time.perf_counter() - started
    per_frame = summary.seconds - summary.stage_seconds['scene_setup']
    print(f'{summary.frames} frames ({args.scenes} scenes x {args.frames}, rig {args.rig}), '
          f'cv2 threads {cv2.getNumThreads()}')
    print(f'  rigs (once per run): {rig_seconds:.2f} s; scene setup: '
          f'{summary.stage_seconds["scene_setup"] / args.scenes:.2f} s per scene')
    print(f'  end to end: {summary.frames / summary.seconds:.2f} frames/s; '
          f'without scene setup: {summary.frames / per_frame:.2f} frames/s')
    for stage in ('render', 'lidar', 'encode', 'write'):
        print(f'  {stage:>6}: {summary.stage_seconds[stage] / summary.frames * 1e3:6.1f} ms per frame')
    print(f'  {summary.points / summary.frames:.0f} LiDAR points, {summary.boxes / summary.frames:.1f} boxes, '
          f'{summary.bytes_written / summary.frames / 1e6:.1f} MB per frame')


if __name__ == '__main__':
    main()
