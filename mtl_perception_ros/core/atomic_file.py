"""Atomic file writes: a reader sees the old file or the complete new one, never half of it.

Bytes, text and JSON (`atomic_write_json`, the one JSON writer of the project; `json_ready`
turns numpy / torch values into plain JSON types).

The temporary file is `.NAME.<host>.<pid>.XXXXXXXX.tmp` beside NAME. A process killed while
writing (SIGKILL, power loss) leaves it behind; the next write of NAME removes such leftovers:
at once when their process (same host) is gone, after STALE_AFTER_S when it cannot tell (another
host on a shared folder, a reused pid, or the `.NAME.XXXXXXXX.tmp` names of older versions).
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

STALE_AFTER_S = 24 * 3600.0   # a leftover whose writer may still live is removed after this age


def _host() -> str:
    return re.sub(r'[^A-Za-z0-9-]', '_', socket.gethostname()) or 'host'


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process
        return True
    except OSError:           # e.g. an out-of-range pid
        return False
    try:   # a killed process its parent has not reaped yet (Linux): as good as gone
        with open(f'/proc/{pid}/stat', 'rb') as stream:
            return stream.read().rsplit(b')', 1)[1].split()[0] != b'Z'
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(path) -> list[Path]:
    """Remove the temporary files that earlier, killed writers of `path` left beside it; returns them."""
    path = Path(path)
    ours = re.compile(rf'^\.{re.escape(path.name)}\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp$')
    older = re.compile(rf'^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp$')   # before the pid was in the name
    host, now, removed = _host(), time.time(), []
    try:
        candidates = [entry for entry in os.scandir(path.parent) if entry.name.startswith(f'.{path.name}.')]
    except OSError:
        return removed
    for entry in candidates:
        match = ours.match(entry.name)
        if match is None and not older.match(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            dead = (match is not None and match['host'] == host and int(match['pid']) != os.getpid()
                    and not _pid_alive(int(match['pid'])))
            if dead or now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:   # gone already (another writer cleaned it) or not ours to remove
            continue
    return removed


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(binary_stream)` on a temporary file beside `path`, fsync, then os.replace it.

    The folder is created if needed; the file gets the usual permissions (0666 & ~umask); on any
    error the temporary file is removed and `path` is left as it was. Leftover temporary files
    of killed earlier writers of `path` are removed first (module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(prefix=f'.{path.name}.{_host()}.{os.getpid()}.', suffix='.tmp',
                                         dir=path.parent)
    try:
        with os.fdopen(handle, 'wb') as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda stream: stream.write(text.encode('utf-8')))


def atomic_write_json(path, values) -> Path:
    """`values` as JSON (through json_ready: NaN and inf become null), written atomically.

    Indented, with innermost lists of numbers / strings kept on one line (per-class counts stay
    readable), and a final newline.
    """
    text = json.dumps(json_ready(values), indent=1, allow_nan=False)
    text = re.sub(r'\[\n([^\[\]{}]*?)\n\s*\]',
                  lambda m: '[' + ' '.join(line.strip() for line in m.group(1).split('\n')) + ']', text)
    return atomic_write_text(path, text + '\n')


def json_ready(value):
    """Plain JSON types: NaN/inf -> None, numpy scalars/arrays and torch tensors -> numbers/lists,
    paths -> strings, tuples -> lists, keys -> strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    torch = sys.modules.get('torch')   # no tensor can exist before torch is imported: do not import it here
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
