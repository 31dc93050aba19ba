"""The detector registry: which layout a checkpoint is in, and reading it into :class:`Weights`.

Each layout is one module with ``NAME``, ``detect(obj, path) -> bool`` and
``read(obj, path, use_ema) -> Weights``. ``obj`` is what :func:`vitzoo.checkpoint.load_checkpoint` returned
(``weights_only=True``: reading never runs code), or None for a file not opened yet: a layout whose files
torch cannot open (Google ``.npz``) claims them by their path before anything is loaded, and opens them
itself, as safely.

Adding a format is one module plus its test, and one entry in ``LAYOUTS``.
"""
from __future__ import annotations

import os
from types import ModuleType

from vitzoo.checkpoint import load_checkpoint
from vitzoo.errors import UserError
from vitzoo.models.convert import (
    beit,
    hf,
    mindspore_ckpt,
    native,
    npz,
    pdparams,
    t2t,
    timm,
    timm_hub,
    to_hf,
    to_timm,
)
from vitzoo.models.convert.weights import Weights
from vitzoo.models.hub import resolve

# First match wins: the specific layouts before timm, which takes any dict holding tensors.
LAYOUTS: tuple[ModuleType, ...] = (native, npz, mindspore_ckpt, pdparams, hf, timm_hub, t2t, beit, timm)


def detect(obj: dict | None, path: str | os.PathLike | None = None) -> ModuleType:
    """The layout module that recognises ``obj`` (or, with ``obj`` None, the file at ``path``)."""
    path = None if path is None else str(path)
    for layout in LAYOUTS:
        if layout.detect(obj, path):
            return layout
    if isinstance(obj, dict):
        found = f"top-level keys: {', '.join(str(k) for k in list(obj)[:8]) or 'none'}"
    else:
        found = "not opened" if obj is None else f"a {type(obj).__name__}"
    known = "; ".join(layout.NAME for layout in LAYOUTS)
    raise UserError(f"{path or 'the checkpoint'}: not a known checkpoint layout ({found}); known: {known}")


def read_weights(source: str | os.PathLike | dict | Weights, use_ema: bool = False) -> Weights:
    """Read a checkpoint in any known layout: a path, an already loaded dict, or :class:`Weights` as is.

    A string may also name weights to fetch (a tag, ``hf-hub:org/repo``, a URL: :func:`vitzoo.models.hub.resolve`).
    """
    if isinstance(source, Weights):
        return source
    if isinstance(source, dict):
        obj, path = source, None
    else:
        path = resolve(source)
        opens_itself = any(layout.detect(None, path) for layout in LAYOUTS)
        obj = None if opens_itself else load_checkpoint(path)
    return detect(obj, path).read(obj, path, use_ema)


# Layouts vitzoo also writes (``vitzoo convert SRC DST --to NAME``): each module has
# ``write(model, path, meta, overwrite)`` returning the path written (``meta``: what the source checkpoint
# records, for the hub folders' model card; ``overwrite``: a folder writer may replace a non-empty folder),
# ``target_numerics(model)`` (the config fields the target network computes with) and ``SUFFIX`` (a DST
# ending in it picks the module without --to; "" for folders).
WRITERS: dict[str, ModuleType] = {"mindspore": mindspore_ckpt, "paddle": pdparams, "hf": to_hf, "timm": to_timm}


def writer_for(dst: str | os.PathLike, to: str | None) -> ModuleType | None:
    """The layout module writing ``dst`` (``to`` names it; else DST's suffix); None for a vitzoo file."""
    if to:
        if to == "vitzoo":
            return None
        if to not in WRITERS:
            raise UserError(f"--to {to}: not a layout vitzoo writes (known: vitzoo, {', '.join(WRITERS)})")
        return WRITERS[to]
    suffix = os.path.splitext(str(dst))[1]
    return next((w for w in WRITERS.values() if w.SUFFIX and suffix == w.SUFFIX), None)
