"""Where a checkpoint comes from: the data set's manifest hash and the code revision.

`provenance(chunk_dir)` is what the trainer writes into every checkpoint's `extra['provenance']`
(next to the config and the validation metrics that `extra` already holds), and what evaluation
reports print back:

- data_manifest_sha256: SHA-256 of the chunk folder's manifest.json (its chunk list with each
  chunk's CRC-32s: the same data gives the same hash); None without a manifest.
- code_revision: `git rev-parse HEAD` of the source tree, with `code_dirty` True when tracked
  files differ from it (`git status --porcelain --untracked-files=no`); None outside a git
  checkout or without git.
"""
from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from training.data.manifest import MANIFEST_NAME
from training.paths import REPO_ROOT


def manifest_sha256(chunk_dir) -> str | None:
    path = Path(chunk_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_revision(repo=REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit hash, dirty) of the checkout at `repo`; (None, None) when it cannot be told."""
    try:
        head = subprocess.run(['git', '-C', str(repo), 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(['git', '-C', str(repo), 'status', '--porcelain', '--untracked-files=no'],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


@functools.lru_cache(maxsize=8)
def _provenance(chunk_dir: str) -> tuple:
    revision, dirty = code_revision()
    return manifest_sha256(chunk_dir), revision, dirty


def provenance(chunk_dir) -> dict:
    """The provenance dict (module doc); looked up once per chunk folder and process."""
    manifest, revision, dirty = _provenance(str(chunk_dir))
    return {'data_manifest_sha256': manifest, 'chunks': str(chunk_dir),
            'code_revision': revision, 'code_dirty': dirty}


def describe(extra: dict) -> str:
    """One line naming a checkpoint's provenance (from its `extra`), for reports."""
    found = (extra or {}).get('provenance') or {}
    if not found:
        return 'provenance: not recorded (a checkpoint from before provenance was kept)'
    revision = found.get('code_revision') or 'unknown'
    dirty = ' (with uncommitted changes)' if found.get('code_dirty') else ''
    manifest = found.get('data_manifest_sha256')
    return (f"provenance: code {revision[:12]}{dirty}, data manifest sha256 "
            f"{manifest[:16] if manifest else 'unknown'} ({found.get('chunks', '?')}), epoch {extra.get('epoch', '?')}")
