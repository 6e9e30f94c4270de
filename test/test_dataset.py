"""The chunk Dataset and its collate function, on tiny real chunk files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_perception_ros.bev_grid import BevGrid
from mtl_perception_ros.camera import OPTICAL_FROM_FORWARD_LEFT_UP, scale_camera_matrix
from training.augment import AugmentConfig
from training.chunks import write_chunk
from training.dataset import ChunkDataset, DatasetConfig, collate_samples, make_loader
from training.frame import Frame

IMAGE_HW = (60, 96)
INPUT_HW = (30, 48)
CAMERA_MATRIX = np.array([[50.0, 0, 47.5], [0, 50.0, 29.5], [0, 0, 1]])


def make_frame(name: str, with_class_map: bool = True) -> Frame:
    """Points: 3 in the grid, 2 outside (behind, too high); boxes: 2 in the grid, 1 outside.

    Class map: columns 0..47 class 1, 48..95 class 4 (so a half-size map is 24 + 24 columns).
    """
    points = np.array([[10.0, 0.0, -1.0, 0.5], [30.0, -5.0, 0.0, 0.1], [63.0, 31.0, 2.0, 1.0],
                       [-2.0, 0.0, 0.0, 0.3], [10.0, 0.0, 3.5, 0.2]], np.float32)
    boxes = np.array([[10.5, 2.5, -0.8, 4.2, 1.8, 1.5, 0.2], [40.2, -10.7, -0.6, 0.8, 0.7, 1.8, -1.0],
                      [70.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]], np.float32)
    class_map = np.ones(IMAGE_HW, np.uint8)
    class_map[:, 48:] = 4
    image = np.zeros(IMAGE_HW + (3,), np.uint8)
    image[..., 0] = np.arange(IMAGE_HW[1], dtype=np.uint8)[None] * 2
    return Frame(name=name, scene=name.split('/')[0], points=points, image=image,
                 class_map=class_map if with_class_map else None, boxes=boxes,
                 box_classes=np.array([0, 2, 1]), track_ids=np.array([-1, -1, -1]),
                 camera_matrix=CAMERA_MATRIX, vehicle_to_camera=OPTICAL_FROM_FORWARD_LEFT_UP.copy())


@pytest.fixture
def chunk_dir(tmp_path):
    write_chunk(tmp_path / 'chunk_000.npz', [make_frame('s1/000000001'), make_frame('s1/000000002')])
    write_chunk(tmp_path / 'chunk_001.npz', [make_frame('s2/000000007', with_class_map=False)])
    return tmp_path


CONFIG = DatasetConfig(input_hw=INPUT_HW, max_objects=8)


def test_a_sample_is_resized_cropped_and_has_targets(chunk_dir):
    dataset = ChunkDataset(chunk_dir, CONFIG)
    assert len(dataset) == 3 and dataset.frame_names[2] == 's2/000000007'
    sample = dataset[0]
    assert sample['name'] == 's1/000000001'
    assert sample['points'].dtype == torch.float32
    np.testing.assert_array_equal(sample['points'].numpy(), make_frame('x').points[:3])
    assert sample['image'].shape == (3,) + INPUT_HW and sample['image'].dtype == torch.uint8
    np.testing.assert_allclose(sample['camera_matrix'].numpy(),
                               scale_camera_matrix(CAMERA_MATRIX, IMAGE_HW, INPUT_HW), rtol=1e-6)
    assert sample['vehicle_to_camera'].shape == (4, 4) and bool(sample['camera_valid'])
    class_map = sample['class_map']
    assert class_map.shape == INPUT_HW and class_map.dtype == torch.int64
    assert (class_map[:, :24] == 1).all() and (class_map[:, 24:] == 4).all()
    # Targets: 4 classes on the 64 x 64 output grid, two objects (the third is outside).
    assert sample['heatmap'].shape == (4, 64, 64)
    assert sample['heatmap'][0, 10, 34] == 1.0 and sample['heatmap'][2, 40, 21] == 1.0
    assert sample['mask'].tolist() == [True, True] + [False] * 6
    assert sample['ind'][:2].tolist() == [10 * 64 + 34, 40 * 64 + 21]
    assert sample['reg'].shape == (8, 8) and sample['cls'][:2].tolist() == [0, 2]
    assert sample['gt_boxes'].shape == (2, 7) and sample['gt_classes'].tolist() == [0, 2]


def test_a_frame_without_class_map_is_all_ignore(chunk_dir):
    sample = ChunkDataset(chunk_dir, CONFIG)[2]
    assert (sample['class_map'] == 255).all()


def test_collate_concatenates_points_and_stacks_the_rest(chunk_dir):
    dataset = ChunkDataset(chunk_dir, CONFIG)
    batch = collate_samples([dataset[i] for i in range(3)])
    assert batch['points'].shape == (9, 4)
    assert batch['points_batch'].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert batch['image'].shape == (3, 3) + INPUT_HW
    assert batch['camera_matrix'].shape == (3, 3, 3) and batch['vehicle_to_camera'].shape == (3, 4, 4)
    assert batch['class_map'].shape == (3,) + INPUT_HW and batch['camera_valid'].tolist() == [True] * 3
    assert batch['heatmap'].shape == (3, 4, 64, 64) and batch['reg'].shape == (3, 8, 8)
    assert batch['ind'].shape == batch['mask'].shape == batch['cls'].shape == (3, 8)
    assert isinstance(batch['gt_boxes'], list) and [len(b) for b in batch['gt_boxes']] == [2, 2, 2]
    assert batch['name'] == ['s1/000000001', 's1/000000002', 's2/000000007']


def test_loader_with_two_workers_yields_every_frame_once(chunk_dir):
    loader = make_loader(ChunkDataset(chunk_dir, CONFIG), batch_size=2, num_workers=2)
    names = [name for batch in loader for name in batch['name']]
    assert sorted(names) == ['s1/000000001', 's1/000000002', 's2/000000007']


def test_chunks_open_lazily_in_a_small_lru_cache(chunk_dir):
    dataset = ChunkDataset(chunk_dir, DatasetConfig(input_hw=INPUT_HW, chunk_cache_size=1))
    assert len(dataset._readers) == 0
    dataset[0]
    dataset[2]
    assert list(dataset._readers) == [1]
    assert dataset.locate(1) == (0, 1) and dataset.locate(2) == (1, 0)
    assert dataset.index_of('s1/000000002') == 1
    with pytest.raises(KeyError, match='no frame named'):
        dataset.index_of('nope')
    with pytest.raises(IndexError):
        dataset[3]


def test_augmented_flip_mirrors_targets_and_class_map(chunk_dir):
    config = DatasetConfig(input_hw=INPUT_HW, augment=True, grid=BevGrid(),
                           augment_config=AugmentConfig(flip_probability=1.0, point_dropout_max=0.0))
    torch.manual_seed(0)
    sample = ChunkDataset(chunk_dir, config)[0]
    # y 2.5 -> -2.5: col 34 -> 29; classes swap sides in the image.
    assert sample['heatmap'][0, 10, 29] == 1.0
    assert (sample['class_map'][:, :24] == 4).all() and (sample['class_map'][:, 24:] == 1).all()
    np.testing.assert_allclose(sample['gt_boxes'][0, [1, 6]].numpy(), [-2.5, -0.2], rtol=1e-6)
    assert sample['camera_matrix'][0, 2] == pytest.approx(INPUT_HW[1] - 1 - float(
        scale_camera_matrix(CAMERA_MATRIX, IMAGE_HW, INPUT_HW)[0, 2]))


def test_missing_chunk_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='no chunk files'):
        ChunkDataset(tmp_path)
