"""``vitzoo pretrain --config configs/beit_base_patch16_224_pt.yaml [--KEY VALUE ...]``: BEiT pre-training.

Masked image modeling on unlabeled images (any folder tree, or WebDataset shards): about 40% of the
patches are masked in blocks and the model learns to predict, for each masked patch, a visual token of a
frozen tokenizer (``mim_target: dall-e`` with the converted DALL-E encoder, or ``tokenizer`` with one from
``vitzoo train-tokenizer``) or its normalised pixels (``mim_target: pixels``, no tokenizer needed).

The run is the training engine's: the same keys, checkpoints, ``--resume auto`` (bit-exact), pre-emption
(SIGTERM/SIGINT/SIGUSR1 save and exit 75), torchrun, precision, logs and TensorBoard. Validation prints
``eval results: {'Loss': .., 'MIM-Acc': ..}`` (masked-token accuracy). Then fine-tune the encoder:
``vitzoo train --model beit_base_patch16_224 --pretrained OUT/best/... --layer_decay 0.65``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vitzoo.cli.training import check_files, print_resolved, run_training
from vitzoo.config import RunConfig, parse_args
from vitzoo.config import build_parser as config_parser
from vitzoo.errors import UserError
from vitzoo.mim.pretrainer import Pretrainer


def build_parser() -> argparse.ArgumentParser:
    parser = config_parser("vitzoo pretrain", description="BEiT pre-training. " + "\n\n".join(__doc__.split("\n\n")[1:3])
                           + "\n\nmodel names the encoder: a BEiT (beit_base_patch16_224, ...; model_overrides for "
                           "other sizes).")
    parser.add_argument("--check", action="store_true",
                        help="check the config and what it names (data, tokenizer and weight files, the output "
                             "folder) and exit without training")
    return parser


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_args(argv, parser=build_parser())
    if ns.dry_run:
        return print_resolved(cfg)
    check_inputs(cfg)
    if ns.check:
        print(f"ok: {cfg.model} ({cfg.mim_target} target) on {cfg.data_path} -> {cfg.output_dir}")
        return 0
    return run_training(cfg, argv, "vitzoo pretrain", Pretrainer)


def check_inputs(cfg: RunConfig) -> None:
    """Fail at once, before any model is built, on a missing data folder or tokenizer file."""
    if not cfg.data_path:
        raise UserError("data_path is not set (a folder of images, any layout; labels are not needed)")
    if cfg.dataset == "folder" and not Path(cfg.data_path).is_dir():
        raise UserError(f"data_path: no such folder: {cfg.data_path}")
    if cfg.dataset in ("cifar10", "cifar100"):
        raise UserError("pretrain reads image folders or WebDataset shards (dataset: folder | webdataset)")
    if cfg.augment_on == "device":
        raise UserError("augment_on: device is for classification training; BEiT pre-training makes its two "
                        "views in the loader workers (drop augment_on)")
    check_files(cfg, {"pretrained": cfg.pretrained,
                      "tokenizer_path": cfg.tokenizer_path if cfg.mim_target != "pixels" else ""})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
