"""``vitzoo train --config X.yaml [--key value ...] [--dry-run]``: train any registered model.

Every config key is also a flag (``--batch_size 64`` or ``--batch-size 64``); the command line wins over
the YAML. Launch several processes with ``torchrun --nproc_per_node N -m vitzoo train ...`` (only
rank 0 writes checkpoints and logs). ``--resume auto`` continues from the newest checkpoint.

One run per output folder (see :mod:`vitzoo.cli.training`). ``--check`` checks the config and its inputs
in one process and exits (the torchrun wrappers in ``scripts/`` run it first, so a mistake is reported
once, before any process starts).
"""
from __future__ import annotations

import argparse
import logging
import sys

from vitzoo.cli.training import check_files, print_resolved, run_training
from vitzoo.config import RunConfig, parse_args
from vitzoo.config import build_parser as config_parser
from vitzoo.data import check_split_data
from vitzoo.engine.build import take_model_from_weights, take_num_classes_from_data


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
        take_model_from_weights(cfg, logging.getLogger("vitzoo"))  # as the run will
        take_num_classes_from_data(cfg, logging.getLogger("vitzoo"))
        return print_resolved(cfg)
    if ns.check:
        check_inputs(cfg)
        print(f"ok: {cfg.model} on {cfg.data_path or cfg.dataset} -> {cfg.output_dir}")
        return 0
    return run_training(cfg, argv, "vitzoo train")


def check_inputs(cfg: RunConfig) -> None:
    """What can be checked before any model is built: data folders, weight files, the output folder."""
    for split in ("train", "val"):
        check_split_data(cfg, split)
    check_files(cfg, {"pretrained": cfg.pretrained,
                      "teacher_path": cfg.teacher_path if cfg.distillation_type != "none" else ""})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
