"""``vitzoo train --config X.yaml [--key value ...] [--dry-run]``: train any registered model.

Every config key is also a flag (``--batch_size 64`` or ``--batch-size 64``); the command line wins over
the YAML. Launch several processes with ``torchrun --nproc_per_node N -m vitzoo train ...`` (only
rank 0 writes checkpoints and logs). ``--resume auto`` continues from the newest checkpoint.

One run per output folder: a folder that already holds a run (checkpoints or metrics) is refused unless
the command continues it (``--resume auto``) or replaces it (``--overwrite``); continuing a finished run
says so and exits 0. ``--check`` checks the config and its inputs in one process and exits (the torchrun
wrappers in ``scripts/`` run it first, so a mistake is reported once, before any process starts).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from vitzoo.checkpoint import RunFolders
from vitzoo.config import RunConfig, dump_config, parse_args
from vitzoo.config import build_parser as config_parser
from vitzoo.data import check_split_data
from vitzoo.engine.preempt import Preempted
from vitzoo.engine.trainer import train
from vitzoo.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The config's flags (every option, --config, --dry-run) and --check."""
    parser = config_parser("vitzoo train")
    parser.add_argument("--check", action="store_true",
                        help="check the config and what it names (data folders, weight files, the output "
                             "folder) and exit without training")
    return parser


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_args(argv, parser=build_parser())
    if ns.dry_run:
        for note in cfg.notes:
            print(f"note: {note}", file=sys.stderr)
        print(dump_config(cfg), end="")
        return 0
    if ns.check:
        check_inputs(cfg)
        print(f"ok: {cfg.model} on {cfg.data_path or cfg.dataset} -> {cfg.output_dir}")
        return 0
    folders, main_rank = RunFolders.of(cfg), int(os.environ.get("RANK", "0")) == 0
    finished = folders.finished(cfg.resume, cfg.epochs)
    if finished is not None:
        if main_rank:
            print(f"nothing to do: {finished} already completed {cfg.epochs} epoch(s); raise --epochs to "
                  "train further")
        return 0
    _start_fresh(cfg, folders, main_rank)
    try:
        summary = train(cfg)
    except Preempted as e:
        raise _with_resume_command(e, argv) from None
    return 0 if summary.get("epochs") is not None else 1


def check_inputs(cfg: RunConfig) -> None:
    """What can be checked before any model is built: data folders, weight files, the output folder."""
    for split in ("train", "val"):
        check_split_data(cfg, split)
    files = {"pretrained": cfg.pretrained, "resume": "" if cfg.resume.lower() == "auto" else cfg.resume,
             "teacher_path": cfg.teacher_path if cfg.distillation_type != "none" else ""}
    for key, path in files.items():
        if path and not os.path.isfile(path):
            raise UserError(f"{key}: file not found: {path}")
    if not cfg.overwrite:
        RunFolders.of(cfg).check_fresh(cfg.resume, overwrite=False)


def _start_fresh(cfg: RunConfig, folders: RunFolders, main_rank: bool) -> None:
    """Refuse a folder that holds another run, or clear it with --overwrite (every rank checks the same
    files; only rank 0 reports, so a torchrun launch says it once)."""
    try:
        removed = folders.check_fresh(cfg.resume, cfg.overwrite, keep=(cfg.pretrained, cfg.teacher_path))
    except UserError as e:
        if not main_rank:  # every rank sees the same files; let rank 0 print before torchrun stops the rest
            time.sleep(1.0)
        raise UserError(str(e) if main_rank else "") from None
    if removed and main_rank:
        print(f"overwrite: deleted the earlier run's {len(removed)} file(s) in {folders.output}", file=sys.stderr)


def _with_resume_command(e: Preempted, argv: list[str] | None) -> Preempted:
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
    launcher = "torchrun ... -m vitzoo train" if "LOCAL_RANK" in os.environ else "vitzoo train"
    return Preempted(f"{e}\nresume with: {launcher} {shlex.join(kept)} --resume auto", e.checkpoint)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
