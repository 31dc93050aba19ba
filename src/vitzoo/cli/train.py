"""``vitzoo train --config X.yaml [--key value ...] [--dry-run]``: train any registered model.

Every config key is also a flag (``--batch_size 64`` or ``--batch-size 64``); the command line wins over
the YAML. Launch several processes with ``torchrun --nproc_per_node N -m vitzoo train ...`` (only
rank 0 writes checkpoints and logs). ``--resume auto`` continues from the newest checkpoint.
"""
from __future__ import annotations

import os
import shlex
import sys

from vitzoo.config import dump_config, parse_args
from vitzoo.engine.preempt import Preempted
from vitzoo.engine.trainer import train


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_args(argv, prog="vitzoo train")
    if ns.dry_run:
        for note in cfg.notes:
            print(f"note: {note}", file=sys.stderr)
        print(dump_config(cfg), end="")
        return 0
    try:
        summary = train(cfg)
    except Preempted as e:
        raise _with_resume_command(e, argv) from None
    return 0 if summary.get("epochs") is not None else 1


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
