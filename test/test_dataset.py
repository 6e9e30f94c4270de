"""The chunk Dataset and its collate function, on tiny real chunk files."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP, scale_camera_matrix
from training.data.augment import AugmentConfig
from training.data.chunks import write_chunk
from training.data.dataset import ChunkDataset, DatasetConfig, collate_samples
from training.data.frame import Frame
from training.engine.data_loading import make_eval_loader, make_train_loader

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
    assert sample['image'].shape == (1, 3) + INPUT_HW and sample['image'].dtype == torch.uint8
    assert sample['camera_names'] == ['front_center']
    np.testing.assert_allclose(sample['camera_matrix'][0].numpy(),
                               scale_camera_matrix(CAMERA_MATRIX, IMAGE_HW, INPUT_HW), rtol=1e-6)
    assert sample['vehicle_to_camera'].shape == (1, 4, 4) and sample['camera_valid'].tolist() == [True]
    class_map = sample['class_map'][0]
    assert class_map.shape == INPUT_HW and class_map.dtype == torch.int64
    assert (class_map[:, :24] == 1).all() and (class_map[:, 24:] == 4).all()
    # Targets: 4 classes on the 64 x 64 output grid, two objects (the third is outside).
    assert sample['heatmap'].shape == (4, 64, 64)
    assert sample['heatmap'][0, 10, 34] == 1.0 and sample['heatmap'][2, 40, 21] == 1.0
    assert sample['mask'].tolist() == [True, True] + [False] * 6
    assert sample['ind'][:2].tolist() == [10 * 64 + 34, 40 * 64 + 21]
    assert sample['reg'].shape == (8, 8) and sample['cls'][:2].tolist() == [0, 2]
    assert sample['gt_boxes'].shape == (2, 7) and sample['gt_classes'].tolist() == [0, 2]


def test_reg_radius_gives_a_sample_the_slots_around_each_centre(chunk_dir):
    import dataclasses
    plain = ChunkDataset(chunk_dir, CONFIG)[0]
    dense = ChunkDataset(chunk_dir, dataclasses.replace(CONFIG, reg_radius=1))[0]
    assert plain['reg_weight'].tolist() == [1.0, 1.0] + [0.0] * 6
    assert dense['reg'].shape == (72, 8) and dense['reg_weight'].shape == (72,)
    assert dense['mask'].sum() == 18                      # two objects far apart: 3 x 3 cells each
    assert dense['ind'][:2].tolist() == plain['ind'][:2].tolist()
    torch.testing.assert_close(dense['heatmap'], plain['heatmap'])


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
    assert batch['view_sample'].tolist() == [0, 1, 2] and batch['first_view'].tolist() == [0, 1, 2]
    assert batch['heatmap'].shape == (3, 4, 64, 64) and batch['reg'].shape == (3, 8, 8)
    assert batch['ind'].shape == batch['mask'].shape == batch['cls'].shape == (3, 8)
    assert isinstance(batch['gt_boxes'], list) and [len(b) for b in batch['gt_boxes']] == [2, 2, 2]
    assert batch['name'] == ['s1/000000001', 's1/000000002', 's2/000000007']


@pytest.mark.parametrize('make_loader', [lambda d: make_train_loader(d, batch_size=2, num_workers=2, seed=0),
                                         lambda d: make_eval_loader(d, batch_size=2, num_workers=2)],
                         ids=['train', 'eval'])
def test_loader_with_two_workers_yields_every_frame_once(chunk_dir, make_loader):
    # the trainer's loaders (training.engine.data_loading), with forked worker processes
    loader = make_loader(ChunkDataset(chunk_dir, CONFIG))
    names = [name for batch in loader for name in batch['name']]
    assert sorted(names) == ['s1/000000001', 's1/000000002', 's2/000000007']


def test_the_frame_cache_gives_the_same_samples_and_is_filled_by_the_workers(chunk_dir, monkeypatch):
    """Frames are decoded once, by the loader's worker processes, into files every later epoch's
    workers read; samples are identical to decoding each time; the files go with the dataset."""
    import dataclasses
    from pathlib import Path

    from training.data.chunks import ChunkReader
    plain = ChunkDataset(chunk_dir, CONFIG)
    cached = ChunkDataset(chunk_dir, dataclasses.replace(CONFIG, frame_cache_mb=1.0))
    cache = cached.frame_cache
    assert cache.slots == 3 and all(cache.get(i) is None for i in range(3))
    loader = make_eval_loader(cached, batch_size=2, num_workers=2)
    first = [batch for batch in loader]                              # forked workers decode and fill
    assert all(cache.get(i) is not None for i in range(3))           # ... visible to this process
    decodes = []
    original = ChunkReader.image
    monkeypatch.setattr(ChunkReader, 'image', lambda self, i, view=0: decodes.append(i) or original(self, i, view))
    for index in range(3):
        a, b = plain[index], cached[index]                            # b from the cache: no decoding
        for key in a:
            if isinstance(a[key], torch.Tensor):
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert len(decodes) == 3                                          # only the plain dataset's
    second = [batch for batch in make_eval_loader(cached, batch_size=2, num_workers=2)]
    for x, y in zip(first, second):
        torch.testing.assert_close(x['image'], y['image'], rtol=0, atol=0)
    folder = Path(cache.folder)
    assert folder.is_dir()
    del cached, cache, loader
    import gc
    gc.collect()
    assert not folder.exists()
    # a budget for one frame caches the first frame only; the others are decoded each time
    small = ChunkDataset(chunk_dir, dataclasses.replace(CONFIG, frame_cache_mb=INPUT_HW[0] * INPUT_HW[1] * 4.5e-6))
    assert small.frame_cache.slots == 1
    small[0], small[2]
    assert small.frame_cache.get(0) is not None and small.frame_cache.get(2) is None


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
    assert (sample['class_map'][0, :, :24] == 4).all() and (sample['class_map'][0, :, 24:] == 1).all()
    np.testing.assert_allclose(sample['gt_boxes'][0, [1, 6]].numpy(), [-2.5, -0.2], rtol=1e-6)
    assert sample['camera_matrix'][0, 0, 2] == pytest.approx(INPUT_HW[1] - 1 - float(
        scale_camera_matrix(CAMERA_MATRIX, IMAGE_HW, INPUT_HW)[0, 2]))


def test_missing_chunk_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='no chunk files'):
        ChunkDataset(tmp_path)


def test_show_draws_a_sample_of_the_chunks(chunk_dir, tmp_path, capsys):
    import cv2
    from training.pictures.show import main
    out = tmp_path / 'pictures' / 'frame.png'
    assert main(['--chunks', str(chunk_dir), '--name', 's1/000000002', '--out', str(out),
                 '--input-hw', '30', '48']) == 0
    picture = cv2.imread(str(out))
    # BEV 64 x 8 = 512 px (+ 22 px title band), images stacked on its right.
    assert picture.shape[0] == 512 + 22 and picture.shape[1] > 512
    assert 's1/000000002' in capsys.readouterr().out


def test_draw_bev_puts_a_box_where_forward_is_up_and_left_is_left():
    from training.pictures.draw import draw_bev
    grid = BevGrid()
    heatmap = np.zeros((1, 64, 64), np.float32)
    # Box 2 m ahead of the grid's far edge centre-left: x 60 m, y 10 m, 4 m x 2 m, heading +x.
    picture = draw_bev(heatmap, np.array([[60.0, 10.0, 0, 4.0, 2.0, 1.5, 0.0]]), np.array([0]), grid,
                       [(0, 255, 0)], pixels_per_cell=8)
    assert picture.shape == (512, 512, 3)
    # 8 px per metre: centre at u = (32 - 10) * 8 = 176, v = (64 - 60) * 8 = 32; the front edge
    # (x 62 m) is the row v = 16, the left edge (y 11 m) the column u = 168.
    assert tuple(picture[16, 176]) == (0, 255, 0)
    assert tuple(picture[32, 168]) == (0, 255, 0)
    assert picture[32, 150].max() < 50


def test_draw_points_on_image_marks_the_projected_pixel():
    from training.pictures.draw import draw_points_on_image
    image = np.zeros((60, 96, 3), np.uint8)
    # 10 m straight ahead of a camera at the vehicle origin: the principal point (47.5, 29.5).
    drawn = draw_points_on_image(image, np.array([[10.0, 0.0, 0.0, 1.0]]), OPTICAL_FROM_FORWARD_LEFT_UP,
                                 CAMERA_MATRIX, radius_px=0)
    assert np.argwhere(drawn.any(axis=2)).tolist() == [[30, 48]]
    assert image.max() == 0


def test_config_from_a_yaml_like_dict():
    config = DatasetConfig.from_dict({'input_hw': [160, 256], 'augment': True, 'max_objects': 64,
                                      'grid': {'x_max_m': 32.0, 'output_stride': 2},
                                      'augment_config': {'flip_probability': 0.0, 'scale_range': [0.95, 1.05]}})
    assert config.input_hw == (160, 256) and config.grid.output_shape == (64, 128)
    assert config.augment_config.scale_range == (0.95, 1.05) and config.augment_config.brightness == 0.2
    with pytest.raises(ValueError, match='unknown keys'):
        DatasetConfig.from_dict({'input_size': [1, 2]})


def test_samples_keep_the_chosen_cameras_and_a_random_subset_in_training(tmp_path):
    from training.data.frame import CameraView
    base = make_frame('s1/000000001')
    views = [CameraView(name, base.image, base.class_map, base.camera_matrix, base.vehicle_to_camera, 10 * k)
             for k, name in enumerate(['front_center', 'front_left', 'side_left', 'rear_center'])]
    write_chunk(tmp_path / 'train_0000.npz', [base.with_views(views)])
    every = ChunkDataset(tmp_path, CONFIG)[0]
    assert every['camera_names'] == ['front_center', 'front_left', 'side_left', 'rear_center']
    assert every['image'].shape == (4, 3) + INPUT_HW and every['camera_valid'].tolist() == [True] * 4
    chosen = ChunkDataset(tmp_path, dataclasses.replace(CONFIG, cameras=('rear_center', 'front_left')))[0]
    assert chosen['camera_names'] == ['front_left', 'rear_center']        # rig order kept
    config = dataclasses.replace(CONFIG, augment=True, views_per_sample=2)
    torch.manual_seed(0)
    subsets = {tuple(ChunkDataset(tmp_path, config)[0]['camera_names']) for _ in range(12)}
    assert all(len(subset) == 2 for subset in subsets) and len(subsets) > 2   # random, two at a time
    # none of the named cameras: a LiDAR-only sample whose image is not used for semantics either
    none = ChunkDataset(tmp_path, dataclasses.replace(CONFIG, cameras=('side_right',)))[0]
    assert none['camera_valid'].tolist() == [False] and (none['class_map'] == 255).all()
    batch = collate_samples([every, chosen])
    assert batch['view_sample'].tolist() == [0, 0, 0, 0, 1, 1] and batch['first_view'].tolist() == [0, 4]
    assert batch['image'].shape == (6, 3) + INPUT_HW and batch['camera_names'][1] == ['front_left', 'rear_center']
