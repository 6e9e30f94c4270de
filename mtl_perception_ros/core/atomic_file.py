"""Atomic file writes: a reader sees the old file or the complete new one, never half of it.

Bytes, text and JSON (`atomic_write_json`, the one JSON writer of the project; `json_ready`
turns numpy / torch values into plain JSON types).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(binary_stream)` on a temporary file beside `path`, fsync, then os.replace it.

    The folder is created if needed; the file gets the usual permissions (0666 & ~umask); on any
    error the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
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
