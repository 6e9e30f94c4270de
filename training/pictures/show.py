"""Draw one training sample as the trainer sees it: BEV targets, semantic map, LiDAR on the image.

    python -m training.pictures.show --chunks CHUNK_DIR [--index I | --name NAME] --out picture.png
        [--config training/configs/surround.yaml]

Left: the BEV heatmap target (max over classes) with the GT boxes (class colours, heading tick)
and the LiDAR points, forward up. Right, top: the class map blended on the image; bottom: the
LiDAR points projected on the image, coloured by depth. All at the model input size, for the
frame's first camera; a frame with several cameras gets a row below with every camera (class
map and LiDAR points on its image). --config takes the BEV grid and input size of a training
config (e.g. the grid around the car of surround.yaml).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

import numpy as np
import torch

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.labels import LabelSet
from training.engine.config import load_config
from training.data.dataset import ChunkDataset, DatasetConfig
from training.pictures.draw import (add_title, draw_bev, draw_legend, draw_points_on_image, semantic_overlay,
                                    side_by_side, stacked, write_png)
from training.paths import A2D2_CONFIG_DIR



def sample_picture(sample: dict, config: DatasetConfig, box_labels: LabelSet,
                   semantic_labels: LabelSet) -> np.ndarray:
    """The debug picture (RGB uint8) of one `prepare_sample` sample (its first camera)."""
    image = sample['image'][0].permute(1, 2, 0).numpy()
    points = sample['points'].numpy()
    cameras = None
    if len(sample['image']) > 1:
        cameras = side_by_side([
            add_title(draw_points_on_image(semantic_overlay(view.permute(1, 2, 0).numpy(), class_map.numpy(),
                                                            semantic_labels),
                                           points, vehicle_to_camera.numpy(), camera_matrix.numpy()), name)
            for view, class_map, vehicle_to_camera, camera_matrix, name in zip(
                sample['image'], sample['class_map'], sample['vehicle_to_camera'], sample['camera_matrix'],
                sample['camera_names'])])
    bev = draw_bev(sample['heatmap'].numpy(), sample['gt_boxes'].numpy(), sample['gt_classes'].numpy(),
                   config.grid, box_labels.colors, points=points)
    draw_legend(bev, box_labels.names, box_labels.colors)
    bev = add_title(bev, f'{sample["name"]}  BEV targets and {len(sample["gt_boxes"])} GT boxes, forward up')
    overlay = add_title(semantic_overlay(image, sample['class_map'][0].numpy(), semantic_labels),
                        'semantic classes')
    lidar = add_title(draw_points_on_image(image, points, sample['vehicle_to_camera'][0].numpy(),
                                           sample['camera_matrix'][0].numpy()),
                      f'LiDAR by depth, {len(points)} points in the grid')
    picture = side_by_side([bev, stacked([overlay, lidar])])
    return picture if cameras is None else stacked([picture, cameras])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--chunks', required=True, help='chunk folder or .npz file')
    which = parser.add_mutually_exclusive_group()
    which.add_argument('--index', type=int, default=0, help='frame index over all chunks (default 0)')
    which.add_argument('--name', help="frame name, e.g. '20180807_145028/000003780'")
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument('--box-labels', default=A2D2_CONFIG_DIR / 'box_classes.yaml')
    parser.add_argument('--semantic-labels', default=A2D2_CONFIG_DIR / 'semantic_classes.yaml')
    parser.add_argument('--input-hw', type=int, nargs=2, default=None, metavar=('ROWS', 'COLS'),
                        help='model input size (default: the --config one, else 320 512)')
    parser.add_argument('--config', help="a training config whose model.bev_grid and image_hw to use")
    parser.add_argument('--augment', action='store_true', help='apply the training augmentations')
    parser.add_argument('--seed', type=int, default=0, help='seed of the augmentations')
    args = parser.parse_args(argv)

    box_labels = LabelSet.from_yaml(args.box_labels)
    semantic_labels = LabelSet.from_yaml(args.semantic_labels)
    grid, input_hw = BevGrid(), (320, 512)
    if args.config:
        model = load_config(args.config).get('model', {})
        grid = BevGrid.from_dict({**asdict(grid), **(model.get('bev_grid') or {})})
        input_hw = tuple(model.get('image_hw', input_hw))
    config = DatasetConfig(grid=grid, input_hw=tuple(args.input_hw or input_hw), num_box_classes=len(box_labels),
                           augment=args.augment)
    dataset = ChunkDataset(args.chunks, config)
    index = dataset.index_of(args.name) if args.name else args.index
    if not 0 <= index < len(dataset):
        parser.error(f'--index {index} out of range: the chunks hold {len(dataset)} frames')
    torch.manual_seed(args.seed)
    picture = sample_picture(dataset[index], config, box_labels, semantic_labels)
    print(f'wrote {write_png(args.out, picture)} ({picture.shape[1]}x{picture.shape[0]}) '
          f'for frame {dataset.frame_names[index]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
