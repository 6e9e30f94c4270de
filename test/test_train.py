"""The trainer, its state files and the evaluation CLI, on tiny toy chunks (seconds per run)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_perception_ros.core.checkpoint import load_checkpoint
from mtl_perception_ros.core.labels import LabelSet
from training.evaluation import evaluate as evaluate_cli
from training.engine import train
from training.pictures.debug_pictures import debug_picture, difference_picture
from training.data.toy_chunks import write_toy_chunks
from training.engine.config import ConfigError, load_config
from training.engine.lr_schedule import lr_factor
from training.engine.training_state import capture_rng_state, restore_rng_state

REPO = Path(__file__).resolve().parents[1]
TINY = 'training/configs/tiny_ci.yaml'


@pytest.fixture(scope='module')
def chunks(tmp_path_factory):
    """3 scenes x 2 frames: 4 train frames (2 scenes), 2 val frames (1 scene)."""
    out = tmp_path_factory.mktemp('chunks')
    write_toy_chunks(out, scenes=3, frames=2, val_scenes=1, seed=0)
    return out


def run_training(chunks, out, *extra) -> int:
    return train.main(['--config', TINY, f'data.chunks={chunks}', '--out', str(out), *extra])


@pytest.fixture(scope='module')
def finished_run(chunks, tmp_path_factory):
    out = tmp_path_factory.mktemp('run') / 'tiny'
    assert run_training(chunks, out, 'train.epochs=2', 'train.picture_every_steps=2') == 0
    return out


def history(run_dir) -> list:
    return json.loads((run_dir / 'metrics_history.json').read_text())


# ----------------------------------------------------------------------------- a whole run

def test_a_run_writes_checkpoints_history_pictures_and_tensorboard(finished_run):
    for name in ('config.yaml', 'model_last.pt', 'model_best.pt', 'training_state.pt', 'train.log'):
        assert (finished_run / name).is_file(), name
    entries = history(finished_run)
    assert [e['epoch'] for e in entries] == [1, 2]
    assert [e['global_step'] for e in entries] == [2, 4]          # 4 train frames, batch 2
    val = entries[-1]['val']
    for key in ('map', 'miou', 'pixel_accuracy', 'ap/car', 'ap/car@0.5m', 'ap/car@4m', 'iou/road', 'loss/total'):
        assert key in val, key
    assert 0.0 <= val['pixel_accuracy'] <= 1.0
    assert {'heatmap', 'reg', 'sem', 'total'} <= set(entries[0]['train'])
    pictures = sorted(p.name for p in (finished_run / 'pictures').glob('*.png'))
    assert pictures == ['train_step_0000002.png', 'train_step_0000004.png', 'val_epoch_001.png',
                        'val_epoch_002.png']

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(finished_run / 'tensorboard'))
    events.Reload()
    scalars = set(events.Tags()['scalars'])
    assert {'train/heatmap', 'train/reg', 'train/sem', 'train/total', 'train/lr', 'val/map', 'val/miou',
            'val/pixel_accuracy', 'val/ap/car@1m', 'train_epoch/total'} <= scalars
    assert [e.step for e in events.Scalars('val/map')] == [2, 4]


def test_the_best_checkpoint_is_the_epoch_with_the_highest_combined_score(finished_run):
    entries = history(finished_run)
    scores = [np.nanmean([e['val']['map'], e['val']['miou']]) for e in entries]
    best = int(np.argmax(scores))
    assert entries[-1]['best_epoch'] == best + 1
    _, info = load_checkpoint(finished_run / 'model_best.pt')
    assert info.extra['epoch'] == best + 1
    assert info.extra['score'] == pytest.approx(scores[best])


def test_the_deployable_checkpoint_loads_alone_and_holds_the_trained_weights(finished_run, chunks):
    model, info = load_checkpoint(finished_run / 'model_last.pt')
    manifest = json.loads((chunks / 'manifest.json').read_text())
    assert info.semantic_labels.names == tuple(manifest['semantic_classes']['names'])
    assert info.detection_labels.names == tuple(manifest['box_classes']['names'])
    assert info.image_hw == (64, 128) and info.bev_grid.output_shape == (8, 8)
    assert info.extra['epoch'] == 2 and info.extra['global_step'] == 4
    state = torch.load(finished_run / 'training_state.pt', map_location='cpu', weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state['model'][key]), key
    outputs = model(torch.tensor([[5.0, 0.0, -1.0, 0.5]]), torch.zeros(1, dtype=torch.int64),
                    torch.zeros(1, 3, 64, 128), torch.eye(3)[None], torch.eye(4)[None])
    assert outputs['bbox_heatmap'].shape == (1, 4, 8, 8) and outputs['sem_logits'].shape == (1, 13, 16, 32)


def test_checkpoints_record_their_provenance_and_evaluation_prints_it(finished_run, chunks, capsys, tmp_path):
    import hashlib
    import subprocess

    from training.evaluation import evaluate as evaluate_cli
    _, info = load_checkpoint(finished_run / 'model_best.pt')
    found = info.extra['provenance']
    assert found['data_manifest_sha256'] == hashlib.sha256((chunks / 'manifest.json').read_bytes()).hexdigest()
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    assert found['code_revision'] == (head or None) and isinstance(found['code_dirty'], (bool, type(None)))
    assert info.extra['config']['data']['chunks'] == str(chunks) and 'map' in info.extra['metrics']
    report = tmp_path / 'evaluation.json'
    assert evaluate_cli.main(['--checkpoint', str(finished_run / 'model_best.pt'), '--chunks', str(chunks),
                              '--num-workers', '0', '--no-progress', '--json', str(report)]) == 0
    assert f"data manifest sha256 {found['data_manifest_sha256'][:16]}" in capsys.readouterr().out
    written = json.loads(report.read_text())
    assert written['checkpoint_provenance'] == found and written['checkpoint_val_metrics']['map'] == pytest.approx(
        info.extra['metrics']['map'], nan_ok=True)
    assert set(written['detection_by_range']) == {'0-20', '20-40', '40+'}


def test_the_training_state_is_plain_tensors_and_numbers(finished_run):
    state = torch.load(finished_run / 'training_state.pt', map_location='cpu', weights_only=True)
    assert state['format'] == 'mtl_perception_ros.training_state' and state['epoch'] == 2
    assert state['global_step'] == 4 and state['world_size'] == 1 and len(state['rng']) == 1
    assert {'model', 'criterion', 'optimizer', 'scheduler', 'scaler', 'best_score', 'config'} <= set(state)
    assert state['scheduler']['last_epoch'] == 4
    assert state['optimizer']['state'], 'AdamW moments are saved'
    assert isinstance(state['rng'][0]['torch'], torch.Tensor)


def test_a_finished_run_is_not_overwritten_without_resume(finished_run, chunks, capsys):
    assert run_training(chunks, finished_run) == 2
    assert '--resume' in capsys.readouterr().err


# ----------------------------------------------------------------------------- learning, resume

@pytest.mark.parametrize('name', ['short', 'long', 'surround', 'tiny_ci'])
def test_every_shipped_config_loads(name):
    config = load_config(REPO / f'training/configs/{name}.yaml')
    assert config['data']['reg_radius'] in (0, 1)
    if name == 'short':   # what make run trains with (docs/training.md#ablations)
        assert config['data']['reg_radius'] == 1
        assert config['loss']['class_weight_c'] == 1.01
        assert config['data']['augment_config'] == {'rotation_max_rad': 0.15, 'scale_range': [0.95, 1.05]}


def test_training_with_boxes_regressed_around_their_centres(chunks, tmp_path):
    out = tmp_path / 'dense'
    assert run_training(chunks, out, 'train.epochs=1', 'data.reg_radius=1', 'train.picture_every_steps=0') == 0
    assert (out / 'model_best.pt').exists()
    reg = [e['train']['reg'] for e in history(out)]
    assert all(np.isfinite(reg)) and reg[0] > 0


def test_the_loss_falls_when_overfitting_two_frames(tmp_path):
    write_toy_chunks(tmp_path / 'chunks', scenes=2, frames=2, val_scenes=1, seed=3)
    code = run_training(tmp_path / 'chunks', tmp_path / 'run', 'train.epochs=25', 'data.augment=false',
                        'train.eval_every_epochs=0', 'train.picture_every_steps=0', 'optim.lr=1e-2',
                        'schedule.name=constant')
    assert code == 0
    totals = [e['train']['total'] for e in history(tmp_path / 'run')]
    assert totals[-1] < 0.35 * totals[0], totals
    assert not (tmp_path / 'run' / 'model_best.pt').exists()     # never evaluated -> no best


def test_stopping_and_resuming_gives_the_same_weights_as_one_run(chunks, tmp_path):
    extra = ('train.epochs=3', 'train.picture_every_steps=0')
    assert run_training(chunks, tmp_path / 'straight', *extra) == 0
    assert run_training(chunks, tmp_path / 'resumed', *extra, '--stop-after-epoch', '1') == 0
    assert [e['epoch'] for e in history(tmp_path / 'resumed')] == [1]
    assert train.main(['--out', str(tmp_path / 'resumed'), '--resume']) == 0   # config from the run folder

    straight = torch.load(tmp_path / 'straight' / 'training_state.pt', weights_only=True)
    resumed = torch.load(tmp_path / 'resumed' / 'training_state.pt', weights_only=True)
    assert resumed['epoch'] == 3 and resumed['global_step'] == straight['global_step'] == 6
    for key, value in straight['model'].items():
        assert torch.equal(value, resumed['model'][key]), key
    for index, moments in straight['optimizer']['state'].items():
        assert torch.equal(moments['exp_avg'], resumed['optimizer']['state'][index]['exp_avg'])
    drop_times = [{k: v for k, v in e.items() if k != 'epoch_time_s'} for e in history(tmp_path / 'straight')]
    assert drop_times == [{k: v for k, v in e.items() if k != 'epoch_time_s'}
                          for e in history(tmp_path / 'resumed')]


def test_resume_without_a_state_file_says_so(tmp_path, capsys):
    assert train.main(['--out', str(tmp_path / 'nothing'), '--resume']) == 2
    assert 'training_state.pt does not exist' in capsys.readouterr().err


# ----------------------------------------------------------------------------- evaluation CLI

def test_the_evaluate_cli_prints_the_table_and_matches_the_trainers_numbers(finished_run, chunks, capsys,
                                                                          tmp_path):
    out_json = tmp_path / 'metrics.json'
    code = evaluate_cli.main(['--checkpoint', str(finished_run / 'model_last.pt'), '--chunks', str(chunks),
                              '--batch-size', '2', '--num-workers', '0', '--json', str(out_json),
                              '--no-progress'])
    assert code == 0
    printed = capsys.readouterr().out
    for text in ('AP@0.5 m', 'AP@1 m', 'AP@2 m', 'AP@4 m', 'mAP', 'pedestrian', 'IoU', 'mIoU',
                 'pixel accuracy', 'road', '2 frames'):
        assert text in printed, text
    metrics = json.loads(out_json.read_text())
    last = history(finished_run)[-1]['val']
    assert metrics['detection']['map'] == pytest.approx(last['map'], abs=1e-9)
    assert metrics['segmentation']['miou'] == pytest.approx(last['miou'], abs=1e-9)
    assert metrics['segmentation']['pixel_accuracy'] == pytest.approx(last['pixel_accuracy'], abs=1e-9)
    assert metrics['num_frames'] == 2


def test_the_evaluate_cli_refuses_a_training_state_file(finished_run, chunks, capsys):
    code = evaluate_cli.main(['--checkpoint', str(finished_run / 'training_state.pt'), '--chunks', str(chunks)])
    assert code == 2 and 'not an mtl_perception_ros checkpoint' in capsys.readouterr().err


# ----------------------------------------------------------------------------- pieces

def test_overrides_are_parsed_as_yaml_and_unknown_keys_are_named():
    config = load_config(TINY, ['optim.lr=1e-3', 'train.epochs=7', 'model.bev_grid.cell_m=0.25',
                                'data.chunks=/data/x'])
    assert config['optim']['lr'] == 0.001 and config['train']['epochs'] == 7
    assert config['model']['bev_grid']['cell_m'] == 0.25 and config['model']['bev_grid']['x_max_m'] == 32.0
    assert config['data']['chunks'] == '/data/x'
    with pytest.raises(ConfigError, match="unknown key 'optim.learning_rate'"):
        load_config(TINY, ['optim.learning_rate=1'])
    for bad, message in (('loss.class_weight_c=1.0', 'class_weight_c must be a number > 1'),
                         ('data.reg_radius=-1', 'reg_radius must be an integer >= 0'),
                         ('data.reg_radius=1.5', 'reg_radius must be an integer >= 0')):
        with pytest.raises(ConfigError, match=message):
            load_config(TINY, [bad])
    with pytest.raises(ConfigError, match='schedule.name'):
        load_config(TINY, ['schedule.name=linear'])


def test_the_distributed_backend_is_checked(chunks, tmp_path, capsys):
    assert load_config(TINY, ['distributed.backend=gloo'])['distributed']['backend'] == 'gloo'
    with pytest.raises(ConfigError, match=r"distributed.backend 'mpi': expected one of \('auto', 'nccl', 'gloo'\)"):
        load_config(TINY, ['distributed.backend=mpi'])
    assert run_training(chunks, tmp_path / 'run', 'distributed.backend=mpi') == 2
    assert "distributed.backend 'mpi'" in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()


def test_warmup_cosine_and_one_cycle_factors_worked_out_on_paper():
    warm = {'name': 'warmup_cosine', 'warmup_steps': 2, 'warmup_fraction': 0.0, 'min_lr_ratio': 0.1}
    # warm-up 1/2, 2/2; then cosine over the remaining 8 steps from 1 to 0.1 (halfway: 0.55)
    assert [lr_factor(s, 10, warm) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_factor(6, 10, warm) == pytest.approx(0.55)
    assert lr_factor(10, 10, warm) == pytest.approx(0.1)
    cycle = {'name': 'one_cycle', 'pct_start': 0.3, 'div_factor': 25.0, 'final_div_factor': 1e4}
    assert lr_factor(0, 10, cycle) == pytest.approx(1 / 25)
    assert lr_factor(3, 10, cycle) == pytest.approx(1.0)            # the peak after 30 % of the steps
    assert lr_factor(10, 10, cycle) == pytest.approx(1 / 25 / 1e4)
    assert lr_factor(5, 10, {'name': 'constant'}) == 1.0


def test_rng_states_survive_a_weights_only_file(tmp_path):
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    torch.save({'rng': state}, tmp_path / 'rng.pt')
    restore_rng_state(torch.load(tmp_path / 'rng.pt', weights_only=True)['rng'])
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_the_difference_picture_shows_false_alarms_red_and_misses_blue():
    target = np.zeros((2, 2, 3), np.float32)
    predicted = np.zeros((2, 2, 3), np.float32)
    predicted[0, 0, 0] = 1.0     # row 0, col 0: predicted, not there
    target[1, 1, 2] = 0.5        # row 1, col 2: there (0.5), missed
    picture = difference_picture(predicted, target, pixels_per_cell=1)
    # forward up / left left: array row r, col c is drawn at picture row H-1-r, col W-1-c
    assert picture[1, 2].tolist() == [255, 0, 0]
    assert picture[0, 0].tolist() == [0, 0, 128]
    assert picture[0, 1].tolist() == [0, 0, 0]


def test_the_debug_picture_has_both_rows(chunks):
    from mtl_perception_ros.core.model import MultiTaskNet
    from training.data.dataset import collate_samples
    from training.engine.data_loading import make_dataset, read_chunk_folder
    folder = read_chunk_folder(chunks)
    model_cfg = train.build_model_config(load_config(TINY)['model'], folder.semantic_labels,
                                         folder.detection_labels)
    dataset = make_dataset(folder.files['val'], model_cfg, folder.detection_labels)
    batch = collate_samples([dataset[0], dataset[1]])
    model = MultiTaskNet(model_cfg).eval()
    with torch.no_grad():
        outputs = model(batch['points'], batch['points_batch'], batch['image'], batch['camera_matrix'],
                        batch['vehicle_to_camera'])
    picture = debug_picture(batch, outputs, model_cfg.bev_grid, folder.detection_labels,
                            folder.semantic_labels, index=1)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    # BEV row: 3 pictures of 8 cells x 64 px + titles; camera row: images enlarged 4x (512 wide)
    assert picture.shape[1] == 3 * 512 + 2 * 4
    assert picture.shape[0] > 512 + 256
    # the GT semantics picture (bottom left) shows the class colours of the class map
    semantic = LabelSet.from_dict(json.loads((chunks / 'manifest.json').read_text())['semantic_classes'])
    sky = tuple(semantic.colors[semantic.index('sky')])
    bottom_left = picture[-200:, :512].reshape(-1, 3)
    assert (bottom_left == sky).all(axis=1).any()


@pytest.mark.slow
def test_loader_workers_do_not_hang_after_pictures_are_drawn(chunks, tmp_path):
    # Pictures use OpenCV's thread pool in the main process; a DataLoader worker forked after that
    # deadlocked on its first cv2 call until the trainer switched the pool off.
    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, '-m', 'training.engine.train', '--config', TINY, f'data.chunks={chunks}',
               '--out', str(tmp_path / 'run'), 'data.num_workers=1', 'train.epochs=2',
               'train.picture_every_steps=1']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(repo)}
    finished = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert [e['epoch'] for e in history(tmp_path / 'run')] == [1, 2]


class Oracle(torch.nn.Module):
    """Answers each call with perfect outputs made from the targets of the next batch of a loader:
    heatmap logits of the target heatmap, the target box parameters at the object cells, and
    one-hot semantic logits at the class map's resolution."""

    def __init__(self, loader, num_sem_classes: int):
        super().__init__()
        self.answers = [self.perfect(batch, num_sem_classes) for batch in loader]
        self.calls = 0

    @staticmethod
    def perfect(batch: dict, num_sem_classes: int) -> dict:
        heatmap = batch['heatmap'].clamp(1e-4, 1 - 1e-4)
        batch_size, _, height, width = heatmap.shape
        reg = torch.zeros(batch_size, 8, height * width)
        for b in range(batch_size):
            slots = batch['mask'][b]
            reg[b][:, batch['ind'][b][slots]] = batch['reg'][b][slots].T
        labels = batch['class_map'].clone()
        labels[labels == 255] = 0
        sem_logits = torch.nn.functional.one_hot(labels, num_sem_classes).permute(0, 3, 1, 2).float()
        return {'bbox_heatmap': torch.log(heatmap / (1 - heatmap)), 'bbox_reg': reg.view(batch_size, 8, height, width),
                'sem_logits': 10 * sem_logits}

    def forward(self, *inputs, **keywords):
        self.calls += 1
        return self.answers[self.calls - 1]


def test_evaluating_perfect_outputs_gives_full_scores(chunks):
    # targets (training.data.targets) -> decode (mtl_perception_ros.core.decode) -> matching must agree
    from training.evaluation.evaluate import evaluate
    from training.engine.data_loading import make_dataset, make_eval_loader, read_chunk_folder
    folder = read_chunk_folder(chunks)
    model_cfg = train.build_model_config(load_config(TINY)['model'], folder.semantic_labels,
                                         folder.detection_labels)
    dataset = make_dataset(folder.files['train'] + folder.files['val'], model_cfg, folder.detection_labels)
    loader = make_eval_loader(dataset, batch_size=2, num_workers=0)
    oracle = Oracle(loader, len(folder.semantic_labels))
    result = evaluate(oracle, loader, grid=model_cfg.bev_grid, detection_labels=folder.detection_labels,
                      semantic_labels=folder.semantic_labels, device=torch.device('cpu'), progress=False)
    assert oracle.calls == 3 and result.num_frames == 6
    has_gt = result.detection.num_gt > 0
    assert has_gt.sum() >= 2
    np.testing.assert_allclose(result.detection.ap[has_gt], 1.0)
    assert result.map == pytest.approx(1.0)
    assert result.miou == 1.0 and result.segmentation['pixel_accuracy'] == 1.0
    assert result.score('combined') == pytest.approx(1.0)


def test_class_weight_c_sets_the_enet_weights_of_the_criterion():
    from types import SimpleNamespace
    from training.engine.losses import semantic_class_weights
    folder = SimpleNamespace(train_pixel_counts=np.array([900, 90, 10]))
    for c in (1.01, 1.02, 1.1):
        loss_cfg = dict(load_config(TINY)['loss'], class_weight_c=c)
        criterion = train.build_criterion(loss_cfg, folder, 3)
        torch.testing.assert_close(criterion.class_weights, semantic_class_weights([900, 90, 10], c))
    # a smaller c makes the rare class weigh more against the common one
    steep, flat = (semantic_class_weights([900, 90, 10], c) for c in (1.01, 1.1))
    assert steep[2] / steep[0] > flat[2] / flat[0]
