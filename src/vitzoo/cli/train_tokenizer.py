"""``vitzoo train-tokenizer --data_path DIR [--config X.yaml] [--key value ...]``: a visual tokenizer
trained on your own images, so BEiT pre-training (``--mim_target tokenizer``) needs no download.

The run is the training engine's, as ``vitzoo pretrain``'s: the same keys, run folder, checkpoints,
``--resume auto``, pre-emption, logs, metrics and TensorBoard (:mod:`vitzoo.tokenizers.train`)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path

from vitzoo.checkpoint import RunFolders, load_checkpoint
from vitzoo.checkpoint.store import find_resume
from vitzoo.cli.training import check_files, print_resolved, run_training
from vitzoo.config import RunConfig, parse_args
from vitzoo.config import build_parser as config_parser
from vitzoo.errors import UserError
from vitzoo.tokenizers.train import (
    PICTURES,
    TOKENIZER_DEFAULTS,
    TOKENIZER_FILE,
    TokenizerTrainer,
    tokenizer_spec,
)

DESCRIPTION = f"""\
Train a visual tokenizer (conv encoder -> discrete codes -> conv decoder) on the images under data_path
(any folder tree; sub-folders / labels are ignored; data_path/train_dir is used when it exists).

  tokenizer_type     vqvae (vector quantiser, EMA codebook, k-means init, dead-code restarts) or dvae
                     (Gumbel-softmax discrete VAE, as DALL-E)
  codebook_size      the visual vocabulary (BEiT's prediction classes)
  tokenizer_width    channels of the first of the three stride-2 stages (downsampling 8: a 112 px view
                     gives the 14 x 14 grid of a 224 px ViT with 16 px patches)
  input_size         training crop size (random-resized crop with min_crop, flip with hflip)

Defaults differ from `vitzoo train` where a tokenizer needs it (used unless YAML / command line set them):
{textwrap.fill(', '.join(f'{k} {v}' for k, v in TOKENIZER_DEFAULTS.items()) + '.', 108, initial_indent='  ',
                subsequent_indent='  ')}

Writes in output_dir, every epoch (eval_every): {TOKENIZER_FILE} (weights + architecture),
{PICTURES}/epoch_NNN.png (originals above their reconstructions through the tokens), and the training
engine's files: metrics.jsonl / metrics.csv (recon_mse, codebook_usage, perplexity), train.log,
tensorboard/, checkpoints/ckpt_*.pth (the newest ckpt_keep_num; continue with --resume auto). A folder
holding a run is refused unless --resume auto or --overwrite; SIGTERM saves a checkpoint and exits 75.

example:
  vitzoo make-dataset shapes data/shapes --size 64
  vitzoo train-tokenizer --data_path data/shapes --input_size 64 --codebook_size 512 --epochs 10 \\
      --output_dir runs/tok
  vitzoo pretrain --config configs/beit_base_patch16_224_pt.yaml --data_path data/shapes \\
      --mim_target tokenizer --tokenizer_path runs/tok/tokenizer.safetensors
"""


def build_parser() -> argparse.ArgumentParser:
    return config_parser("vitzoo train-tokenizer", description=DESCRIPTION)


def with_tokenizer_defaults(cfg: RunConfig) -> RunConfig:
    """RunConfig with :data:`TOKENIZER_DEFAULTS` for every key neither the YAML nor the CLI set."""
    return dataclasses.replace(cfg, **{k: v for k, v in TOKENIZER_DEFAULTS.items() if k not in cfg.explicit})


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_args(argv, parser=build_parser())
    cfg = with_tokenizer_defaults(cfg)
    if ns.dry_run:
        return print_resolved(cfg)
    check_inputs(cfg)
    code = run_training(cfg, argv, "vitzoo train-tokenizer", TokenizerTrainer)
    if code == 0 and int(os.environ.get("RANK", "0")) == 0:
        print_summary(cfg)
    return code


def check_inputs(cfg: RunConfig) -> None:
    """Fail at once, before the run starts, on a missing data folder, a size the tokenizer cannot take, or
    a checkpoint to resume that holds another tokenizer."""
    if not cfg.data_path:
        raise UserError("data_path is not set (a folder of images, any tree; labels are ignored)")
    if cfg.dataset == "folder" and not Path(cfg.data_path).is_dir():
        raise UserError(f"data_path: folder not found: {cfg.data_path}")
    spec = tokenizer_spec(cfg)
    check_files(cfg, {})
    path = find_resume(cfg.resume, RunFolders.of(cfg).checkpoints)
    if path is None:
        return
    try:
        meta = load_checkpoint(path).get("meta") or {}
    except UserError:  # unreadable: the engine's resume says so (or falls back past it)
        return
    saved = (meta.get("tokenizer") or {}).get("spec")
    if saved is None:
        raise UserError(f"resume: {path} is not a train-tokenizer checkpoint (task {meta.get('task', 'unknown')})")
    if saved != dataclasses.asdict(spec):
        raise UserError(f"resume: {path} was trained with {saved}, this config gives {dataclasses.asdict(spec)}; "
                        "resume with the same tokenizer_type / codebook_size / tokenizer_width / input_size")


def print_summary(cfg: RunConfig) -> None:
    """The tokenizer file, its last epoch's numbers and picture, and the command that uses it."""
    file = Path(cfg.output_dir) / TOKENIZER_FILE
    metrics = RunFolders.of(cfg).logs / "metrics.jsonl"  # the engine's MetricsFile: whole lines only
    lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
    last = next((row for row in map(json.loads, reversed(lines)) if "recon_mse" in row), None)
    if last is not None:
        print(f"tokenizer: {file}  (recon_mse {last['recon_mse']:.5f}, {last['codes_used']} of "
              f"{cfg.codebook_size} codes used, perplexity {last['perplexity']:.1f})")
        print(f"pictures:  {Path(cfg.output_dir) / PICTURES}/epoch_{last['epoch']:03d}.png")
    print("pre-train a BEiT with it:\n  vitzoo pretrain --config configs/beit_base_patch16_224_pt.yaml "
          f"--data_path {cfg.data_path or 'DATA'} --mim_target tokenizer --tokenizer_path {file}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
