"""Damaged files a user hands the tools: one line naming the file and the fault, exit code != 0,
no traceback. The command-line tools run as users run them, in subprocesses.

Chunks (`python -m training.evaluation.evaluate`): truncated, a member with garbage bytes (caught
by its CRC-32), a missing member, a pickled object array. Bags (`python -m
training.evaluation.evaluate_bag` and `mtl_bag_play`): a cut sqlite3 db (early: it does not open;
late: it opens and fails while reading), a cut MCAP file, metadata.yaml that is not YAML or lacks
keys. `python -m training.engine.train --resume` with a truncated training_state.pt or one from
another network. Checkpoints whose config has wrong types or that hold pickled objects (the
message must not pass on torch's advice to load with weights_only=False). Also: the converter
removes a chunk that does not read back, `ChunkReader(verify=True)`, and atomic writes clean up
after writers killed midway.
"""
from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtl_perception_ros.core.atomic_file import STALE_AFTER_S, atomic_write_text, remove_stale_temporaries
from mtl_perception_ros.core.checkpoint import CheckpointError, load_checkpoint, load_failure_reason
from ros_test_utils import REPO_ROOT, console_script, subprocess_env
from training.data.chunks import ChunkError, ChunkReader, verify_chunk
from training.data.toy_chunks import write_toy_chunks
from training.engine import train
from training.export.to_bag import export_bag

TINY = 'training/configs/tiny_ci.yaml'
TIMEOUT_S = 120


# ----------------------------------------------------------------------------- helpers

def run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """A command-line tool in a subprocess from the repository root (this checkout first on the path)."""
    return subprocess.run(args, cwd=REPO_ROOT, env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def python_cli(module: str, *args) -> subprocess.CompletedProcess:
    return run_cli([sys.executable, '-m', module, *[str(a) for a in args]])


def assert_one_line_error(result: subprocess.CompletedProcess, path: Path, *words: str) -> str:
    """The run failed with exactly one stderr line, naming `path` and containing `words`; no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr + result.stdout, result.stderr
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def copy_chunks(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target / 'val_0000.npz'


def member_data_offset(path: Path, key: str) -> int:
    """File offset of the array bytes (after the .npy header) of an uncompressed npz member."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f'{key}.npy')
        with archive.open(info) as stream:
            np.lib.format.read_magic(stream)
            np.lib.format.read_array_header_1_0(stream)
            header = stream.tell()
    with open(path, 'rb') as stream:
        stream.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(stream.read(4), dtype='<u2')
    return info.header_offset + 30 + int(name_length) + int(extra_length) + header


def rewrite_npz(path: Path, change) -> None:
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    change(arrays)
    np.savez(path, **arrays)


def cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def chunks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('chunks')
    write_toy_chunks(out, scenes=3, frames=2, val_scenes=1, seed=0)
    return out


@pytest.fixture(scope='module')
def run_dir(chunks, tmp_path_factory) -> Path:
    """A finished one-epoch tiny run: model_best.pt and training_state.pt."""
    out = tmp_path_factory.mktemp('run') / 'tiny'
    assert train.main(['--config', TINY, f'data.chunks={chunks}', '--out', str(out), 'train.epochs=1']) == 0
    return out


@pytest.fixture(scope='module')
def bags(chunks, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('bags')
    export_bag(chunks, root / 'sqlite3', split='val', storage='sqlite3', log=lambda *a: None)
    export_bag(chunks, root / 'mcap', split='val', storage='mcap', log=lambda *a: None)
    return {'sqlite3': root / 'sqlite3', 'mcap': root / 'mcap'}


def storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap'))


def damage_bag(kind: str, bags: dict, tmp_path: Path) -> tuple[Path, Path, str]:
    """A copy of a good bag with fault `kind`: (bag folder, the file to be named, a word of the message)."""
    source = bags['mcap'] if kind == 'cut_mcap' else bags['sqlite3']
    bag = tmp_path / kind
    shutil.copytree(source, bag)
    metadata = bag / 'metadata.yaml'
    if kind == 'cut_db_early':
        cut(storage_file(bag), 0.5)
        return bag, storage_file(bag), 'malformed'
    if kind == 'cut_db_late':     # opens, then fails while reading the messages
        cut(storage_file(bag), 0.99)
        return bag, storage_file(bag), 'cannot read the messages'
    if kind == 'cut_mcap':
        cut(storage_file(bag), 0.6)
        return bag, storage_file(bag), 'cannot open the bag'
    if kind == 'bad_yaml':
        metadata.write_text('rosbag2_bagfile_information: [version: 8\n  : storage_identifier\n')
        return bag, metadata, 'not valid YAML (line 2'
    if kind == 'missing_keys':
        document = yaml.safe_load(metadata.read_text())
        del document['rosbag2_bagfile_information']['topics_with_message_count']
        metadata.write_text(yaml.safe_dump(document))
        return bag, metadata, 'topics_with_message_count'
    raise ValueError(kind)


BAG_FAULTS = ('cut_db_early', 'cut_db_late', 'cut_mcap', 'bad_yaml', 'missing_keys')


# ----------------------------------------------------------------------------- chunks: the evaluate CLI

def evaluate_cli(checkpoint: Path, chunk_dir: Path, *extra) -> subprocess.CompletedProcess:
    return python_cli('training.evaluation.evaluate', '--checkpoint', checkpoint, '--chunks', chunk_dir,
                      '--num-workers', '0', '--no-progress', *extra)


def test_evaluate_with_a_truncated_chunk(run_dir, chunks, tmp_path):
    path = copy_chunks(chunks, tmp_path / 'chunks')
    cut(path, 0.5)
    assert_one_line_error(evaluate_cli(run_dir / 'model_best.pt', path.parent), path, 'truncated')


def test_evaluate_with_garbage_bytes_in_a_member(run_dir, chunks, tmp_path):
    path = copy_chunks(chunks, tmp_path / 'chunks')
    data = bytearray(path.read_bytes())
    start = member_data_offset(path, 'points') + 64     # inside the points: any reader would take them
    data[start:start + 256] = np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    assert_one_line_error(evaluate_cli(run_dir / 'model_best.pt', path.parent), path, 'points', 'checksum')


def test_evaluate_with_a_missing_member(run_dir, chunks, tmp_path):
    path = copy_chunks(chunks, tmp_path / 'chunks')
    rewrite_npz(path, lambda arrays: arrays.pop('boxes'))
    assert_one_line_error(evaluate_cli(run_dir / 'model_best.pt', path.parent), path, 'missing', 'boxes')


def test_evaluate_with_a_pickled_object_array(run_dir, chunks, tmp_path):
    path = copy_chunks(chunks, tmp_path / 'chunks')

    def to_objects(arrays):
        arrays['frame_names'] = np.array([str(name) for name in arrays['frame_names']], dtype=object)
    rewrite_npz(path, to_objects)
    assert_one_line_error(evaluate_cli(run_dir / 'model_best.pt', path.parent), path, 'frame_names', 'pickled')


# ----------------------------------------------------------------------------- chunks: checksums

def test_the_reader_verifies_checksums_on_request_and_reads_old_chunks(chunks, tmp_path):
    path = copy_chunks(chunks, tmp_path / 'chunks')
    verify_chunk(path)                                       # a good chunk passes
    assert len(ChunkReader(path, verify=True)) == 2
    data = bytearray(path.read_bytes())
    data[member_data_offset(path, 'image_png') + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert len(ChunkReader(path)) == 2                       # the mapped PNG blob is not read on opening
    with pytest.raises(ChunkError, match=r'val_0000\.npz: damaged chunk, member image_png\.npy'):
        ChunkReader(path, verify=True)
    # a chunk written by numpy with compression (as older tools did) verifies and reads too
    with np.load(chunks / 'val_0000.npz') as npz:
        np.savez_compressed(tmp_path / 'z.npz', **{key: npz[key] for key in npz.files})
    assert len(ChunkReader(tmp_path / 'z.npz', verify=True)) == 2


def test_convert_removes_a_chunk_that_does_not_read_back(tmp_path, monkeypatch):
    from test_a2d2_reader import make_root, write_frame
    from training.data import convert as convert_module
    root = make_root(tmp_path / 'a2d2', shrink=8)
    for scene in ('20180807_145028', '20180810_142822'):
        write_frame(root, scene, 1, size_hw=(1208 // 8, 1920 // 8))
    real_write_chunk = convert_module.write_chunk

    def write_then_damage(path, frames):   # a disk that corrupts what was written
        written = real_write_chunk(path, frames)
        data = bytearray(written.read_bytes())
        data[member_data_offset(written, 'points') + 4] ^= 0x01
        written.write_bytes(bytes(data))
        return written
    monkeypatch.setattr(convert_module, 'write_chunk', write_then_damage)
    with pytest.raises(ChunkError, match=r'does not read back.*_0000\.npz.*points\.npy'):
        convert_module.convert(root, tmp_path / 'out', frames_per_chunk=1, val_fraction=0.5, progress=False)
    assert not list((tmp_path / 'out').glob('*.npz'))


# ----------------------------------------------------------------------------- bags: evaluate_bag and mtl_bag_play

@pytest.mark.parametrize('kind', BAG_FAULTS)
def test_evaluate_bag_with_a_damaged_bag(kind, bags, run_dir, tmp_path):
    bag, culprit, word = damage_bag(kind, bags, tmp_path)
    result = python_cli('training.evaluation.evaluate_bag', '--bag', bag, '--checkpoint', run_dir / 'model_best.pt',
                        '--out', tmp_path / 'report')
    assert_one_line_error(result, culprit, word)


@pytest.mark.ros
@pytest.mark.parametrize('kind', BAG_FAULTS)
def test_bag_play_with_a_damaged_bag(kind, bags, tmp_path):
    bag, culprit, word = damage_bag(kind, bags, tmp_path)
    result = run_cli(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [str(bag)])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'Traceback' not in output, output
    fatal = [line for line in output.splitlines() if 'FATAL' in line]
    assert len(fatal) == 1 and str(culprit) in fatal[0] and word in fatal[0], output


# ----------------------------------------------------------------------------- train --resume

def resume_cli(run: Path) -> subprocess.CompletedProcess:
    return python_cli('training.engine.train', '--out', run, '--resume')


def test_resume_with_a_truncated_training_state(run_dir, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    cut(run / 'training_state.pt', 0.5)
    assert_one_line_error(resume_cli(run), run / 'training_state.pt', 'truncated')


def test_resume_with_the_training_state_of_another_network(run_dir, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    state = torch.load(run / 'training_state.pt', weights_only=True)
    state['model'] = {key: value[..., :1] if value.ndim else value for key, value in state['model'].items()}
    torch.save(state, run / 'training_state.pt')
    assert_one_line_error(resume_cli(run), run / 'training_state.pt', 'does not fit', 'size mismatch')


# ----------------------------------------------------------------------------- checkpoints

def resave(source: Path, target: Path, change) -> Path:
    payload = torch.load(source, weights_only=True)
    change(payload)
    torch.save(payload, target)
    return target


def test_evaluate_with_a_checkpoint_whose_config_has_wrong_types(run_dir, chunks, tmp_path):
    bad = resave(run_dir / 'model_best.pt', tmp_path / 'abc.pt',
                 lambda p: p['model_config'].update(image_hw='abc'))
    assert_one_line_error(evaluate_cli(bad, chunks), bad, 'model_config.image_hw', 'list of 2 integers', "'abc'")
    for change, words in ((lambda p: p['model_config'].update(num_det_classes='4'), ('num_det_classes', 'integer')),
                          (lambda p: p['model_config'].update(image_mean=None), ('image_mean', '3 numbers')),
                          (lambda p: p['bev_grid'].update(cell_m=[0.5]), ('bev_grid.cell_m', 'number'))):
        resave(run_dir / 'model_best.pt', bad, change)
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(bad)
        assert all(word in str(error.value) for word in words), error.value


def test_evaluate_bag_with_a_checkpoint_whose_config_has_wrong_types(run_dir, bags, tmp_path):
    bad = resave(run_dir / 'model_best.pt', tmp_path / 'abc.pt',
                 lambda p: p['model_config'].update(image_hw='abc'))
    result = python_cli('training.evaluation.evaluate_bag', '--bag', bags['sqlite3'], '--checkpoint', bad,
                        '--out', tmp_path / 'report')
    assert_one_line_error(result, bad, 'model_config.image_hw')


class Custom:
    """A class torch's weights-only loader refuses."""


def test_a_checkpoint_with_a_pickled_object_gets_our_message_not_torchs_advice(run_dir, chunks, tmp_path):
    bad = resave(run_dir / 'model_best.pt', tmp_path / 'pickled.pt',
                 lambda p: p['extra'].update(note=collections.Counter(a=1), custom=Custom()))
    line = assert_one_line_error(evaluate_cli(bad, chunks), bad, 'pickled Python object', 'Custom')
    assert 'weights_only' not in line and 'trust' not in line
    try:   # the reason straight from what torch raises today
        torch.load(bad, weights_only=True)
    except Exception as error:   # noqa: BLE001 - whatever torch raises
        assert 'weights_only' in str(error)          # torch's own text gives the advice ...
        reason = load_failure_reason(error)
        assert 'weights_only' not in reason and 'pickled Python object' in reason   # ... ours does not
    else:
        pytest.fail('torch loaded a pickled custom class with weights_only=True')


# ----------------------------------------------------------------------------- atomic writes

WRITER = '''
import sys, time
from mtl_perception_ros.core.atomic_file import atomic_write

def write(stream):
    stream.write(b'half of it')
    stream.flush()
    print('writing', flush=True)
    time.sleep(120)

atomic_write(sys.argv[1], write)
'''


def start_writer(target: Path) -> subprocess.Popen:
    """A process writing `target` atomically, stopped in the middle of the write."""
    writer = subprocess.Popen([sys.executable, '-c', WRITER, str(target)], cwd=REPO_ROOT, env=subprocess_env(),
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == 'writing'
    return writer


def temporaries(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f'.{target.name}.*.tmp'))


def test_a_later_write_removes_the_temporary_file_of_a_killed_writer(tmp_path):
    target = tmp_path / 'metrics.json'
    target.write_text('old')
    writer = start_writer(target)
    [left] = temporaries(target)
    assert f'.{writer.pid}.' in left.name
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert temporaries(target) == [left] and target.read_text() == 'old'   # killed midway: the leftover
    atomic_write_text(target, 'new')
    assert target.read_text() == 'new'
    assert temporaries(target) == []


def test_the_temporary_file_of_a_live_writer_is_kept(tmp_path):
    target = tmp_path / 'state.pt'
    writer = start_writer(target)
    try:
        [live] = temporaries(target)
        atomic_write_text(target, 'another writer')
        assert temporaries(target) == [live]
    finally:
        writer.kill()
        writer.wait(timeout=30)


def test_leftovers_that_cannot_be_judged_by_pid_go_after_a_day(tmp_path):
    target = tmp_path / 'model_best.pt'
    foreign_old = tmp_path / f'.{target.name}.otherhost.1234.abcdefgh.tmp'
    foreign_new = tmp_path / f'.{target.name}.otherhost.1235.abcdefgh.tmp'
    old_style = tmp_path / f'.{target.name}.k2j4h5g6.tmp'       # the names before the pid was in them
    unrelated = tmp_path / f'.{target.name}.notes.tmp'
    for path in (foreign_old, foreign_new, old_style, unrelated):
        path.write_bytes(b'x')
    stale = time.time() - STALE_AFTER_S - 60
    for path in (foreign_old, old_style, unrelated):
        os.utime(path, (stale, stale))
    assert sorted(remove_stale_temporaries(target)) == sorted([foreign_old, old_style])
    assert foreign_new.exists() and unrelated.exists()
