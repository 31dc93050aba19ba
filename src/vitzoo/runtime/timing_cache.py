"""Measured speed-ups kept between runs: one JSON file of ``key -> ratio``, keyed by this CPU (its model
name and bf16 units) and what the caller measured (torch version, model, infer / train; OpenVINO's version
and file). Used by the precision policy (bf16 vs fp32 of a model, :mod:`vitzoo.runtime.precision`) and by
OpenVINO's precision choice (:mod:`vitzoo.deploy.openvino_runtime`).

Why a cache: the measurement costs a few forwards (~0.7 s for deit_small on one core), a training step
longer (3 s for deit_small, 13 s for BEiT-base pre-training on a 2-core Xeon), paid by every short
``vitzoo infer``; its answer depends only on the CPU, the software and the model's shape.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vitzoo.checkpoint.files import atomic_write_text
from vitzoo.errors import UserError
from vitzoo.runtime.cpu import cpu_bf16_units, cpu_model


def cache_file() -> Path:
    """Where measured speed-ups are kept: $VITZOO_CACHE_DIR or ~/.cache/vitzoo."""
    return Path(os.environ.get("VITZOO_CACHE_DIR") or Path.home() / ".cache" / "vitzoo") / "precision.json"


def remembered(key: list[str], measure: Callable[[], float]) -> tuple[float, bool]:
    """(``measure()``'s speed-up, whether it came from the cache) for ``key`` on this CPU (its model and
    bf16 units join the key). An unreadable cache only means measuring again; an unwritable one is said
    (once per measurement), and the measurement is still used."""
    key = " | ".join([cpu_model(), " ".join(cpu_bf16_units()), *key])
    path = cache_file()
    try:
        known = json.loads(path.read_text())
        return float(known[key]), True
    except (OSError, ValueError, KeyError, TypeError):
        known = None
    speedup = float(measure())
    known = known if isinstance(known, dict) else {}
    try:  # atomic: a concurrent reader sees the old file or the new one
        atomic_write_text(path, json.dumps({**known, key: round(speedup, 4)}, indent=1) + "\n")
    except UserError as e:  # measured again next run: say so, and how to keep it
        print(f"note: the timing is not remembered ({e}); VITZOO_CACHE_DIR can name a writable folder",
              file=sys.stderr, flush=True)
    return speedup, False
