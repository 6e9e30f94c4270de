"""Speed of the A2D2 reader (training/data/a2d2_reader.py): one camera against the whole surround rig.

Run:
    .venv/bin/python benchmarks/bench_reader.py                       # writes a small synthetic surround set first
    .venv/bin/python benchmarks/bench_reader.py --root /data/a2d2/camera_lidar_semantic_bboxes --frames 20
Prints, per camera choice, the listing time (grouping by cam_tstamp included) and milliseconds per
frame to read (PNG decoding, undistortion, LiDAR merge, boxes), after one warm-up frame that
builds the undistortion tables. One process, OpenCV's default threads.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.data.a2d2_reader import A2D2Reader  # noqa: E402


def bench(root: Path, cameras, frames: int) -> None:
    started = time.perf_counter()
    reader = A2D2Reader(root, cameras=cameras)
    listed = [files for scene in reader.scenes for files in reader.frame_files(scene)]
    listing_s = time.perf_counter() - started
    reader.load(listed[0])                                   # warm-up: undistortion tables
    times, points, views = [], [], []
    for files in listed[1:frames + 1]:
        started = time.perf_counter()
        frame = reader.load(files)
        times.append((time.perf_counter() - started) * 1e3)
        if frame is not None:
            points.append(len(frame.points))
            views.append(len(frame.views))
    print(f'cameras {",".join(reader.camera_names)}: listing {listing_s * 1e3:.0f} ms for {len(listed)} frames; '
          f'read {statistics.median(times):.0f} ms per frame (median of {len(times)}), '
          f'{statistics.mean(views):.1f} views, {statistics.mean(points):.0f} points after merging')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', help='an A2D2 set (default: synthesize 1 scene x 6 frames of the surround rig)')
    parser.add_argument('--frames', type=int, default=5, help='frames timed per camera choice')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(args.root) if args.root else Path(folder)
        if not args.root:
            from training.synthetic.synthesize import synthesize
            synthesize(root, scenes=1, frames=args.frames + 1, seed=0, show_progress=False, rig='surround')
        bench(root, ['front_center'], args.frames)
        bench(root, 'all', args.frames)


if __name__ == '__main__':
    main()
