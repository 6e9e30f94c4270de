"""Atomic file writes: a reader sees the old file or the complete new one, never half of it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


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
