"""What `vitzoo train`, `pretrain` and `train-tokenizer` share around a run: the one-run-per-folder rule,
a finished run, and turning a pre-emption into the command that continues it.

One run per output folder: a folder that already holds a run (checkpoints or metrics) is refused unless
the command continues it (``--resume auto``) or replaces it (``--overwrite``); continuing a finished run
says so and exits 0.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any

from vitzoo.checkpoint import RunFolders
from vitzoo.checkpoint.files import file_in_the_way
from vitzoo.config import RunConfig, dump_config
from vitzoo.engine.preempt import Preempted
from vitzoo.engine.trainer import Trainer, train
from vitzoo.errors import UserError
from vitzoo.models.convert.hub import hub_folder
from vitzoo.models.hub import resolve
from vitzoo.runtime.precision import refuse_int8


def run_training(cfg: RunConfig, argv: list[str] | None, command: str, trainer_cls: type[Trainer] = Trainer) -> int:
    """Train ``cfg`` with ``trainer_cls`` in its output folder; ``command`` (``vitzoo train``) for messages."""
    folders, main_rank = RunFolders.of(cfg), int(os.environ.get("RANK", "0")) == 0
    finished = folders.finished(cfg.resume, cfg.epochs)
    if finished is not None:
        if main_rank:
            print(f"nothing to do: {finished} already completed {cfg.epochs} epoch(s); raise --epochs to "
                  "train further")
        return 0
    _start_fresh(cfg, folders, main_rank)
    try:
        summary: dict[str, Any] = train(cfg, trainer_cls)
    except Preempted as e:
        raise _with_resume_command(e, argv, command) from None
    return 0 if summary.get("epochs") is not None else 1


def print_resolved(cfg: RunConfig) -> int:
    """``--dry-run``: the notes on keys that do nothing (stderr), then the resolved config (stdout)."""
    for note in cfg.notes:
        print(f"note: {note}", file=sys.stderr)
    print(dump_config(cfg), end="")
    return 0


def check_files(cfg: RunConfig, files: dict[str, str]) -> None:
    """Named weight files exist, the output folder may be written (``--check``), and the precision is one
    training can run in."""
    refuse_int8(cfg.amp_dtype, training=True)
    files = {"resume": "" if cfg.resume.lower() == "auto" else cfg.resume, **files}
    for key, path in files.items():
        if key != "resume" and path:
            path = resolve(path)  # a weights tag / hf-hub: / URL: fetched here, once, before torchrun starts ranks
        if path and not os.path.isfile(path) and not hub_folder(path):
            raise UserError(f"{key}: file not found: {path}")
    blocking = file_in_the_way(cfg.output_dir)
    if blocking is not None:
        raise UserError(f"output_dir: {blocking} is a file, not a folder")
    if not cfg.overwrite:
        RunFolders.of(cfg).check_fresh(cfg.resume, overwrite=False)


def _start_fresh(cfg: RunConfig, folders: RunFolders, main_rank: bool) -> None:
    """Refuse a folder that holds another run, or clear it with --overwrite (every rank checks the same
    files; only rank 0 reports, so a torchrun launch says it once)."""
    try:
        removed = folders.check_fresh(cfg.resume, cfg.overwrite,
                                      keep=(cfg.pretrained, cfg.teacher_path, cfg.tokenizer_path))
    except UserError as e:
        if not main_rank:  # every rank sees the same files; let rank 0 print before torchrun stops the rest
            time.sleep(1.0)
        raise UserError(str(e) if main_rank else "") from None
    if removed and main_rank:
        print(f"overwrite: deleted the earlier run's {len(removed)} file(s) in {folders.output}", file=sys.stderr)


def _with_resume_command(e: Preempted, argv: list[str] | None, command: str) -> Preempted:
    """The stop message plus the command that continues the run (rank 0 only: one report per run)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return Preempted("", e.checkpoint)
    args = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for a in args:  # drop an earlier --resume VALUE / --resume=VALUE
        if skip:
            skip = False
        elif a in ("--resume",):
            skip = True
        elif not a.startswith("--resume="):
            kept.append(a)
    launcher = f"torchrun ... -m {command}" if "LOCAL_RANK" in os.environ else command
    return Preempted(f"{e}\nresume with: {launcher} {shlex.join(kept)} --resume auto", e.checkpoint)
