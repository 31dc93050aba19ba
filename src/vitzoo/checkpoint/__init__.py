"""The run state on disk: one home for what a checkpoint holds, how it is named, rotated and read.

- ``files.py``: atomic writes and code-free reads (``weights_only=True``, safetensors);
- ``state.py``: :class:`RunState` (the payload), format version and migrations, save/load;
- ``store.py``: a run's folders, checkpoint names, keep-N / best-N rotation, ``--resume auto``.
"""
from __future__ import annotations

from vitzoo.checkpoint.files import atomic_write, atomic_write_text, make_folder, read_file
from vitzoo.checkpoint.state import (
    FORMAT,
    FORMAT_VERSION,
    RunState,
    is_vitzoo_checkpoint,
    load_checkpoint,
    load_run_state,
    model_meta,
    save_checkpoint,
)
from vitzoo.checkpoint.store import CheckpointStore, RunFolders

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointStore",
    "RunFolders",
    "RunState",
    "atomic_write",
    "atomic_write_text",
    "is_vitzoo_checkpoint",
    "load_checkpoint",
    "load_run_state",
    "make_folder",
    "model_meta",
    "read_file",
    "save_checkpoint",
]
