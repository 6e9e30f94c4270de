"""DDP training on CPU: two real processes started by torchrun, gloo backend, on 127.0.0.1."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.evaluation import evaluate as evaluate_cli
from training.data.toy_chunks import write_toy_chunks

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_keep_identical_weights_and_evaluate_like_one(tmp_path, capsys):
    chunks = tmp_path / 'chunks'
    write_toy_chunks(chunks, scenes=3, frames=3, val_scenes=1, seed=1)   # 6 train, 3 val frames
    run_dir = tmp_path / 'run'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    command = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--nproc_per_node=2',
               '--master_addr=127.0.0.1', f'--master_port={free_port()}',
               '-m', 'training.engine.train', '--config', 'training/configs/tiny_ci.yaml', f'data.chunks={chunks}',
               '--out', str(run_dir), 'train.epochs=2', 'train.picture_every_steps=1',
               'distributed.backend=gloo']
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    state = torch.load(run_dir / 'training_state.pt', map_location='cpu', weights_only=True)
    assert state['world_size'] == 2 and len(state['rng']) == 2
    # 6 frames over 2 ranks, batch 2 per rank: 2 optimizer steps per epoch
    assert state['global_step'] == 4
    # each rank hashed its own parameters after the last epoch: DDP kept them bitwise equal
    digests = state['replica_digests']
    assert len(digests) == 2 and digests[0] == digests[1]
    # the two ranks drew different augmentations / camera dropouts
    assert not torch.equal(state['rng'][0]['torch'], state['rng'][1]['torch'])
    assert '2 processes (gloo)' in (run_dir / 'train.log').read_text()
    # rank 0 alone wrote the outputs
    assert (run_dir / 'model_best.pt').is_file()
    assert len(list((run_dir / 'pictures').glob('train_step_*.png'))) == 4
    assert len(list((run_dir / 'tensorboard').glob('events.out.tfevents.*'))) == 1

    # validation was split over the ranks and merged: one process evaluating the saved model agrees
    history = json.loads((run_dir / 'metrics_history.json').read_text())
    assert [e['epoch'] for e in history] == [1, 2]
    out_json = tmp_path / 'eval.json'
    assert evaluate_cli.main(['--checkpoint', str(run_dir / 'model_last.pt'), '--chunks', str(chunks),
                              '--batch-size', '2', '--num-workers', '0', '--json', str(out_json),
                              '--no-progress']) == 0
    capsys.readouterr()
    metrics = json.loads(out_json.read_text())
    assert metrics['num_frames'] == 3
    assert metrics['detection']['map'] == pytest.approx(history[-1]['val']['map'], abs=1e-9)
    assert metrics['segmentation']['miou'] == pytest.approx(history[-1]['val']['miou'], abs=1e-9)


@pytest.mark.slow
def test_the_configured_backend_is_the_one_started(tmp_path):
    # distributed.backend used to be ignored (always auto: gloo on CPU); NCCL cannot drive CPU tensors,
    # so asking for it on CPU must stop both ranks with a message naming the key, not train with gloo
    chunks = tmp_path / 'chunks'
    write_toy_chunks(chunks, scenes=3, frames=2, val_scenes=1, seed=1)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    command = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--nproc_per_node=2',
               '--master_addr=127.0.0.1', f'--master_port={free_port()}',
               '-m', 'training.engine.train', '--config', 'training/configs/tiny_ci.yaml', f'data.chunks={chunks}',
               '--out', str(tmp_path / 'run'), '--device', 'cpu', 'distributed.backend=nccl']
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode != 0, finished.stdout[-3000:]
    assert "distributed.backend 'nccl' needs CUDA devices" in finished.stderr, finished.stderr[-3000:]
    assert not (tmp_path / 'run' / 'training_state.pt').exists()
