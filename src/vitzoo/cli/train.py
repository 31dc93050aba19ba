"""``vitzoo train --config X.yaml [--key value ...] [--dry-run]``: train any registered model.

Every config key is also a flag (``--batch_size 64`` or ``--batch-size 64``); the command line wins over
the YAML. Launch several processes with ``torchrun --nproc_per_node N -m vitzoo train ...`` (only
rank 0 writes checkpoints and logs). ``--resume auto`` continues from the newest checkpoint.
"""
from __future__ import annotations

import sys

from vitzoo.config import dump_config, parse_args
from vitzoo.engine.trainer import train  # torch, the data pipeline: only once the config is good


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_args(argv, prog="vitzoo train")
    if ns.dry_run:
        for note in cfg.notes:
            print(f"note: {note}", file=sys.stderr)
        print(dump_config(cfg), end="")
        return 0

    summary = train(cfg)
    return 0 if summary.get("epochs") is not None else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
