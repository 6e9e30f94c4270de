"""A chunk folder's manifest.json: its name and how to read it.

training.data.convert (and training.data.toy_chunks) write it; the trainer, the evaluation and
export tools read it (training.engine.data_loading.read_chunk_folder). Its fields are listed in
training/data/convert.py.
"""
from __future__ import annotations

import json
from pathlib import Path

MANIFEST_NAME = 'manifest.json'
SPLITS = ('train', 'val', 'test')   # the chunk splits, by scene: CHUNK_DIR/<split>_0000.npz, ...


def load_manifest(chunk_dir) -> dict | None:
    """The manifest of a chunk folder, or None when there is none (or it is unreadable)."""
    path = Path(chunk_dir) / MANIFEST_NAME
    try:
        with open(path, encoding='utf-8') as stream:
            manifest = json.load(stream)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None
