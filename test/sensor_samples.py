"""Synthetic sensor data and a small checkpoint for node tests (plain pytest and launch_testing)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
IMAGE_HW = (151, 240)          # 1920x1208 scaled by 1/8: the shipped calibration's aspect ratio


def make_small_checkpoint(path: Path, bev_grid=None, **model_overrides) -> Path:
    """A tiny randomly initialised network with the A2D2 label sets; some peaks pass 0.3.
    Its BEV grid: 0..32 m x -16..16 m at 0.5 m, or `bev_grid` (a BevGrid); other ModelConfig
    fields in `model_overrides`."""
    import torch

    from mtl_perception_ros.core.bev_grid import BevGrid
    from mtl_perception_ros.core.checkpoint import save_checkpoint
    from mtl_perception_ros.core.labels import LabelSet
    from mtl_perception_ros.core.model import ModelConfig, MultiTaskNet

    torch.manual_seed(0)
    semantic = LabelSet.from_yaml(REPO / 'config/a2d2/semantic_classes.yaml')
    detection = LabelSet.from_yaml(REPO / 'config/a2d2/box_classes.yaml')
    cfg = ModelConfig(num_det_classes=len(detection), num_sem_classes=len(semantic),
                      bev_grid=bev_grid or BevGrid(x_min_m=0, x_max_m=32, y_min_m=-16, y_max_m=16, cell_m=0.5),
                      image_hw=(64, 96), camera_channels=(8, 8, 16, 16), camera_feature_channels=8,
                      pillar_channels=8, bev_channels=(8, 16, 16), bev_blocks=(1, 1, 1),
                      neck_channels=16, head_channels=8, **model_overrides)
    model = MultiTaskNet(cfg)
    with torch.no_grad():   # an untrained net that is sure of itself: some peaks pass the 0.3 threshold
        model.detection_head.heatmap[-1].bias.fill_(0.5)
    save_checkpoint(path, model.eval(), semantic, detection)
    return path


def header(stamp_s: float, frame_id: str):
    from std_msgs.msg import Header
    h = Header(frame_id=frame_id)
    h.stamp.sec = int(stamp_s)
    h.stamp.nanosec = int(round((stamp_s - int(stamp_s)) * 1e9))
    return h


def synthetic_cloud(rng, n=3000) -> np.ndarray:
    """Ground points ahead of the vehicle plus a car-sized cluster at (12, 2); intensity 0..255."""
    ground = np.column_stack([rng.uniform(2, 30, n), rng.uniform(-12, 12, n), np.full(n, -0.9), rng.uniform(0, 40, n)])
    car = np.column_stack([rng.uniform(10, 14, 400), rng.uniform(1, 3, 400), rng.uniform(-0.9, 0.6, 400),
                           rng.uniform(100, 200, 400)])
    return np.vstack([ground, car]).astype(np.float32)


def synthetic_image(rng, image_hw=IMAGE_HW) -> np.ndarray:
    image = np.zeros(tuple(image_hw) + (3,), np.uint8)
    image[:image_hw[0] // 2] = (70, 130, 180)
    image[image_hw[0] // 2:] = (128, 64, 128)
    return np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)


def sensor_pair(rng, stamp_s: float, cloud=None, image=None, camera_delay_s: float = 0.004):
    """(PointCloud2 in frame 'vehicle', rgb8 Image in 'camera_front' stamped camera_delay_s later)."""
    from mtl_perception_ros.messages.image import rgb_to_image
    from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2
    cloud = synthetic_cloud(rng) if cloud is None else cloud
    image = synthetic_image(rng) if image is None else image
    return (array_to_pointcloud2(cloud, ('x', 'y', 'z', 'intensity'), header(stamp_s, 'vehicle')),
            rgb_to_image(image, header(stamp_s + camera_delay_s, 'camera_front')))


def write_params_yaml(path, document: dict):
    """A ROS params YAML that rcl reads back as written: strings double-quoted (rcl reads a bare `y`,
    a point field, as a boolean) and no YAML aliases (rcl refuses them; repeated blocks are copied)."""
    import copy

    import yaml

    class QuotedStringDumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    QuotedStringDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
        'tag:yaml.org,2002:str', value, style='"'))
    path.write_text(yaml.dump(copy.deepcopy(document), Dumper=QuotedStringDumper))
    return path


def rig_params_yaml(path, cameras, **overrides):
    """The shipped node YAML with `cameras` (names), each with the shipped camera's block (its
    calibration fits synthetic_image), plus `overrides` of top-level parameters."""
    import yaml
    document = yaml.safe_load((REPO / 'config/mtl_perception.yaml').read_text())
    block = document['/**']['ros__parameters']
    camera = block.pop('camera')
    block['cameras'] = list(cameras)
    for name in cameras:
        block[name] = camera
    block.update(overrides)
    return write_params_yaml(path, document)
