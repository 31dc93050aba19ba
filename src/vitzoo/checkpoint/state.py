"""What a vitzoo checkpoint holds: one :class:`RunState`, written and read as plain data.

A file is one ``torch.save`` dict of tensors, numbers, strings, lists and dicts, so it loads with
``weights_only=True`` (a checkpoint can never run code)::

    {"model": state_dict, "ema": state_dict | None, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "rng": {...}, "meta": {"format": "vitzoo", "format_version": 2, "kind": "train" | "weights",
                            "arch": ..., "num_classes": ..., "model_kwargs": {...}, "class_names": [...],
                            "data_config": {...}, "config": {...}, "epoch": ..., "global_step": ..., ...}}

``kind`` says whether the file can resume a run ("train": optimizer, schedule and RNG included) or holds
weights only ("weights": converted release files, ``.safetensors``). Files of an older format version are
migrated when read (:data:`MIGRATIONS`), so every reader sees the current layout.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitzoo.checkpoint.files import read_file, write_safetensors, write_torch
from vitzoo.errors import UserError
from vitzoo.version import __version__

FORMAT = "vitzoo"
FORMAT_VERSION = 2
_TRAINING_PARTS = ("optimizer", "scheduler", "scaler", "rng")


@dataclass
class RunState:
    """A run at one instant: weights, optimiser/schedule/scaler/RNG state, and where it was.

    ``epoch`` counts completed epochs; ``step_in_epoch`` is the micro-batch position inside the next
    one (0 at an epoch boundary); ``meta`` holds the rest (arch, class names, data config, config, ...).
    """

    model: dict[str, torch.Tensor]
    meta: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    scaler: dict | None = None
    rng: dict | None = None
    epoch: int = 0
    global_step: int = 0
    step_in_epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def resumable(self) -> bool:
        return self.optimizer is not None and self.scheduler is not None

    def to_payload(self) -> dict[str, Any]:
        kind = "train" if self.resumable else "weights"
        meta = {**self.meta, "kind": kind, "epoch": self.epoch, "global_step": self.global_step,
                "step_in_epoch": self.step_in_epoch, "metrics": dict(self.metrics)}
        return {"model": self.model, "ema": self.ema, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler, "rng": self.rng, "meta": meta}

    @classmethod
    def from_payload(cls, obj: dict[str, Any]) -> RunState:
        meta = dict(obj["meta"])
        return cls(model=obj["model"], meta=meta, ema=obj.get("ema"),
                   **{k: obj.get(k) for k in _TRAINING_PARTS}, epoch=int(meta.get("epoch", 0) or 0),
                   global_step=int(meta.get("global_step", 0) or 0),
                   step_in_epoch=int(meta.get("step_in_epoch", 0) or 0), metrics=dict(meta.get("metrics") or {}))


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any] | RunState) -> Path:
    """Save a RunState (or its payload dict) atomically; ``.safetensors`` keeps the weights and meta only."""
    if isinstance(payload, RunState):
        payload = payload.to_payload()
    meta = dict(payload.get("meta") or {})
    meta.setdefault("kind", "train" if payload.get("optimizer") is not None else "weights")
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, vitzoo_version=__version__,
                torch_version=str(torch.__version__))
    # round-trip through JSON: tuples become lists and str subclasses (torch.__version__) plain str,
    # so the file holds only what weights_only loading accepts; anything else fails here, loudly
    meta = json.loads(json.dumps(meta))
    if str(path).endswith(".safetensors"):
        return write_safetensors(path, payload["model"], {**meta, "kind": "weights"})
    return write_torch(path, {**payload, "meta": meta})


def model_meta(model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
    """What a file needs to rebuild ``model`` and feed it: arch, model kwargs, classes, preprocessing."""
    data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(model.data_config).items()}
    return {"arch": model.arch, "model_kwargs": dict(model.model_kwargs), "num_classes": model.num_classes,
            "data_config": data_config, **extra}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The stored dict, never executing code; a vitzoo file comes back migrated to the current format.

    Foreign files (release checkpoints) come back as stored: their wrappers are the converter
    package's business.
    """
    obj = read_file(path, map_location)
    if is_vitzoo_checkpoint(obj):
        obj = migrate(obj, path)
    return obj


def load_run_state(path: str | os.PathLike) -> RunState:
    """A checkpoint that can resume a run, or a UserError saying why this file cannot."""
    obj = load_checkpoint(path)
    if not is_vitzoo_checkpoint(obj) or obj["meta"].get("kind") != "train":
        missing = [k for k in ("model", "optimizer", "scheduler") if obj.get(k) is None]
        raise UserError(f"resume: {path} is not a full vitzoo training checkpoint (lacks "
                        f"{', '.join(missing) or 'meta.global_step'}); use --pretrained for weights only")
    return RunState.from_payload(obj)


def is_vitzoo_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("meta"), dict) and obj["meta"].get("format") == FORMAT


# --------------------------------------------------------------------------- format migrations
def _v1_to_v2(obj: dict[str, Any]) -> dict[str, Any]:
    """v1 had no ``kind``: a file is a training checkpoint iff it has optimizer state and a step; and its
    config may carry keys that did nothing and were removed (``resplit``, ``dist_eval``)."""
    meta = dict(obj["meta"])
    trained = obj.get("optimizer") is not None and obj.get("scheduler") is not None and "global_step" in meta
    meta["kind"] = "train" if trained else "weights"
    if isinstance(meta.get("config"), dict):
        meta["config"] = {k: v for k, v in meta["config"].items() if k not in ("resplit", "dist_eval")}
    return {**obj, "meta": meta}


# version found in the file -> the step that lifts it by one
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def migrate(obj: dict[str, Any], path: str | os.PathLike = "checkpoint") -> dict[str, Any]:
    version = int(obj["meta"].get("format_version", 1) or 1)
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: written by a newer vitzoo (checkpoint format {version}, this one reads "
                        f"<= {FORMAT_VERSION}); upgrade vitzoo")
    while version < FORMAT_VERSION:
        obj = MIGRATIONS[version](obj)
        version += 1
        obj["meta"]["format_version"] = version
    return obj
