"""Tiny hand-made chunk folders (train/val by scene, with a manifest) for tests, CI and benchmarks.

    python -m training.data.toy_chunks --out CHUNK_DIR [--scenes 3] [--frames 4] [--seed 0]
        [--image-hw 64 128] [--extent-m 16]

Each frame is a simple, learnable world: flat ground at z = -1.5 m (the vehicle frame's origin
is the LiDAR, 1.5 m above the road) seen by a forward camera at the origin; 1-3 objects (cars
and pedestrians, sometimes a truck or cyclist) as dense point clusters of high reflectance on
sparse low-reflectance ground points; the image is sky above the horizon, road below, and each
object a flat rectangle of its class colour (the class map says the same). The manifest has the
keys the trainer reads from `training.data.convert`'s manifest (label sets, chunks with split,
split pixel histograms), so the trainer and `training.evaluation.evaluate` run on it unchanged.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mtl_perception_ros.core.atomic_file import atomic_write_json
from mtl_perception_ros.core.boxes import box_corners
from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP, project_points
from mtl_perception_ros.core.labels import LabelSet
from training.data.chunks import ChunkReader, write_chunk
from training.data.frame import Frame
from training.data.label_mapping import DEFAULT_BOX_CLASSES, DEFAULT_SEMANTIC_CLASSES
from training.data.manifest import MANIFEST_NAME

GROUND_Z_M = -1.5
# Detection class id -> (length, width, height) m and the semantic class name painted for it.
OBJECT_SIZES_M = {0: (4.2, 1.8, 1.5), 1: (7.0, 2.5, 3.0), 2: (0.8, 0.7, 1.8), 3: (1.8, 0.6, 1.7)}
OBJECT_SEMANTIC = {0: 'car', 1: 'truck', 2: 'pedestrian', 3: 'cyclist'}
CLASS_PROBABILITIES = (0.55, 0.1, 0.25, 0.1)


def toy_camera(image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(camera_matrix (3, 3), vehicle_to_camera (4, 4)): a ~90 degree forward camera at the origin."""
    height, width = image_hw
    focal = 0.5 * width
    camera_matrix = np.array([[focal, 0.0, width / 2 - 0.5], [0.0, focal, height / 2 - 0.5], [0, 0, 1]])
    return camera_matrix, OPTICAL_FROM_FORWARD_LEFT_UP.copy()


def toy_boxes(rng: np.random.Generator, extent_m: float, max_objects: int = 3):
    """(M, 7) boxes and (M,) classes, centres in x [3, extent - 2], |y| <= extent / 2 - 2, >= 4 m apart."""
    count = int(rng.integers(1, max_objects + 1))
    boxes, classes = [], []
    for _ in range(20 * count):
        if len(boxes) == count:
            break
        x = rng.uniform(3.0, extent_m - 2.0)
        y = rng.uniform(-extent_m / 2 + 2.0, extent_m / 2 - 2.0)
        if any(np.hypot(x - b[0], y - b[1]) < 4.0 for b in boxes):
            continue
        cls = int(rng.choice(4, p=CLASS_PROBABILITIES))
        length, width, height = OBJECT_SIZES_M[cls]
        boxes.append([x, y, GROUND_Z_M + height / 2, length, width, height, rng.uniform(-np.pi, np.pi)])
        classes.append(cls)
    return np.array(boxes, np.float32).reshape(-1, 7), np.array(classes, np.int64)


def toy_points(rng: np.random.Generator, boxes: np.ndarray, extent_m: float,
               ground_points: int = 1500, points_per_object: int = 150) -> np.ndarray:
    """(N, 4) float32: ground points (reflectance ~0.2) and points inside each box (~0.8)."""
    ground = np.stack([rng.uniform(0.0, extent_m, ground_points),
                       rng.uniform(-extent_m / 2, extent_m / 2, ground_points),
                       GROUND_Z_M + rng.normal(0.0, 0.03, ground_points),
                       rng.uniform(0.1, 0.3, ground_points)], axis=1)
    parts = [ground]
    for box in boxes:
        local = (rng.uniform(-0.5, 0.5, (points_per_object, 3)) * box[3:6])
        cos, sin = np.cos(box[6]), np.sin(box[6])
        xyz = np.stack([local[:, 0] * cos - local[:, 1] * sin + box[0],
                        local[:, 0] * sin + local[:, 1] * cos + box[1],
                        local[:, 2] + box[2]], axis=1)
        parts.append(np.concatenate([xyz, rng.uniform(0.7, 0.9, (points_per_object, 1))], axis=1))
    return np.concatenate(parts).astype(np.float32)


def toy_frame(rng: np.random.Generator, name: str, scene: str, semantic: LabelSet,
              image_hw: tuple[int, int] = (64, 128), extent_m: float = 16.0,
              ground_points: int = 1500) -> Frame:
    """One toy frame (see the module doc); grid extent x 0..extent_m, y +-extent_m / 2."""
    height, width = image_hw
    camera_matrix, vehicle_to_camera = toy_camera(image_hw)
    boxes, classes = toy_boxes(rng, extent_m)
    horizon = int(round(camera_matrix[1, 2]))
    class_map = np.full(image_hw, semantic.index('road'), np.uint8)
    class_map[:horizon] = semantic.index('sky')
    # Far objects first, so nearer ones are painted over them.
    for i in np.argsort(-boxes[:, 0]):
        uv, _, valid = project_points(box_corners(boxes[i:i + 1])[0], vehicle_to_camera, camera_matrix)
        if not valid.all():
            continue
        u0, v0 = np.floor(uv.min(axis=0)).astype(int)
        u1, v1 = np.ceil(uv.max(axis=0)).astype(int)
        class_map[max(v0, 0):max(min(v1, height), 0), max(u0, 0):max(min(u1, width), 0)] = \
            semantic.index(OBJECT_SEMANTIC[int(classes[i])])
    image = semantic.palette()[class_map].astype(np.int16)
    image += rng.integers(-12, 13, image.shape, dtype=np.int16)
    return Frame(name=name, scene=scene, points=toy_points(rng, boxes, extent_m, ground_points),
                 image=np.clip(image, 0, 255).astype(np.uint8), class_map=class_map, boxes=boxes,
                 box_classes=classes, track_ids=np.full(len(boxes), -1, np.int64),
                 camera_matrix=camera_matrix, vehicle_to_camera=vehicle_to_camera)


def write_toy_chunks(out_dir, scenes: int = 3, frames: int = 4, val_scenes: int = 1, seed: int = 0,
                     image_hw: tuple[int, int] = (64, 128), extent_m: float = 16.0) -> dict:
    """Write `scenes` x `frames` toy frames: the last `val_scenes` scenes to val_0000.npz, the
    rest to train_0000.npz, plus manifest.json. Returns the manifest."""
    if not 0 < val_scenes < scenes:
        raise ValueError(f'write_toy_chunks: need 0 < val_scenes < scenes, got {val_scenes} of {scenes}')
    out_dir = Path(out_dir)
    semantic = LabelSet.from_yaml(DEFAULT_SEMANTIC_CLASSES)
    detection = LabelSet.from_yaml(DEFAULT_BOX_CLASSES)
    rng = np.random.default_rng(seed)
    names = [f'toy{s:02d}' for s in range(scenes)]
    splits = {'train': names[:scenes - val_scenes], 'val': names[scenes - val_scenes:]}
    manifest = {'manifest_version': 1, 'root': 'toy', 'complete': True,
                'semantic_classes': semantic.to_dict(), 'box_classes': detection.to_dict(),
                'scenes': {name: {'split': split, 'frames': frames}
                           for split, members in splits.items() for name in members},
                'chunks': [], 'splits': {}}
    for split, members in splits.items():
        frame_list = [toy_frame(rng, f'{scene}/{i:09d}', scene, semantic, image_hw, extent_m)
                      for scene in members for i in range(frames)]
        file_name = f'{split}_0000.npz'
        write_chunk(out_dir / file_name, frame_list)
        reader = ChunkReader(out_dir / file_name)
        pixels = reader.class_pixel_counts.sum(axis=0)
        entry = {'file': file_name, 'split': split, 'index': 0, 'frames': len(reader), 'scenes': members,
                 'class_pixel_counts': pixels[:len(semantic)].tolist(),
                 'ignored_pixels': int(pixels[len(semantic):].sum()),
                 'box_class_counts': reader.box_class_counts(len(detection)).tolist()}
        manifest['chunks'].append(entry)
        manifest['splits'][split] = {'chunks': 1, 'frames': len(reader), 'scenes': members,
                                     'class_pixel_counts': entry['class_pixel_counts'],
                                     'ignored_pixels': entry['ignored_pixels'],
                                     'box_class_counts': entry['box_class_counts']}
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.data.toy_chunks', description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='chunk folder to write')
    parser.add_argument('--scenes', type=int, default=3)
    parser.add_argument('--frames', type=int, default=4, help='frames per scene')
    parser.add_argument('--val-scenes', type=int, default=1)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--image-hw', type=int, nargs=2, default=(64, 128), metavar=('H', 'W'))
    parser.add_argument('--extent-m', type=float, default=16.0, help='grid x extent (y is +- half)')
    args = parser.parse_args(argv)
    manifest = write_toy_chunks(args.out, args.scenes, args.frames, args.val_scenes, args.seed,
                                tuple(args.image_hw), args.extent_m)
    for split, summary in manifest['splits'].items():
        print(f'{split}: {summary["frames"]} frames from {len(summary["scenes"])} scenes')
    return 0


if __name__ == '__main__':
    sys.exit(main())
