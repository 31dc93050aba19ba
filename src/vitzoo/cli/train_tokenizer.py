"""``vitzoo train-tokenizer --data_path DIR [--config X.yaml] [--key value ...]``: a visual tokenizer
trained on your own images, so BEiT pre-training (``--mim_target tokenizer``) needs no download."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from vitzoo.config import RunConfig, dump_config, parse_args
from vitzoo.config import build_parser as config_parser
from vitzoo.tokenizers.train import PICTURES, TOKENIZER_DEFAULTS, train_tokenizer

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
  {', '.join(f'{k} {v}' for k, v in TOKENIZER_DEFAULTS.items())}; lr is used as given (no batch scaling).

Writes in output_dir, every epoch: tokenizer.safetensors (weights + architecture), {PICTURES}/epoch_NNN.png
(originals above their reconstructions through the tokens), metrics.jsonl (recon_mse, codebook_usage,
perplexity), train_tokenizer.log, tokenizer_state.pth (continue with --resume auto).

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
        print(dump_config(cfg), end="")
        return 0
    summary = train_tokenizer(cfg)
    if summary["finished"]:
        print(f"nothing to do: {cfg.output_dir} already completed {summary['epochs']} epoch(s); raise --epochs "
              "to train further")
    last = summary["last"]
    if last:
        print(f"tokenizer: {summary['file']}  (recon_mse {last['recon_mse']:.5f}, {last['codes_used']} of "
              f"{cfg.codebook_size} codes used, perplexity {last['perplexity']:.1f})")
        print(f"pictures:  {Path(cfg.output_dir) / PICTURES}/epoch_{last['epoch']:03d}.png")
    print("pre-train a BEiT with it:\n  vitzoo pretrain --config configs/beit_base_patch16_224_pt.yaml "
          f"--data_path {cfg.data_path or 'DATA'} --mim_target tokenizer --tokenizer_path {summary['file']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
