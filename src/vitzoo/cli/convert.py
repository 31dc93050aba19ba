"""`vitzoo convert`: turn a checkpoint of another framework into a vitzoo checkpoint, and back.

SRC may be in any layout :mod:`vitzoo.models.convert` detects -- DeiT / timm ``.pth``, official T2T-ViT
``.pth.tar``, unilm BEiT ``.pth``, Google ViT ``.npz``, MindSpore ``.ckpt``, PaddleViT ``.pdparams``, a
Hugging Face ``transformers`` or timm hub folder -- or a vitzoo checkpoint itself (e.g. to re-save as
``.safetensors``). The DALL-E dVAE encoder (the released ``encoder.pkl``, read without running it, or a
state dict of it) becomes a BEiT tokenizer file instead (:mod:`vitzoo.tokenizers.dall_e_convert`).
DST ending in ``.safetensors`` writes safetensors (meta in the header); ``--to mindspore|paddle`` (or DST
ending in ``.ckpt`` / ``.pdparams``) writes the seed's layout; ``--to hf`` a ``transformers`` folder (ViT /
DeiT / BEiT) and ``--to timm`` timm's hub folder, each with a model card (``README.md``) generated from what
the checkpoint records, ready for ``hf upload``; anything else a ``torch.save`` file loadable with
``weights_only=True``. The converted model is checked: it must load strictly, and the written file, read
back, must reproduce its logits (the max |diff| is printed).
"""
from __future__ import annotations

import argparse

import yaml

from vitzoo.cli.helpfmt import HelpFormatter
from vitzoo.errors import UserError
from vitzoo.models.convert import WRITERS, convert_checkpoint
from vitzoo.tokenizers.dall_e_convert import convert_dall_e, detect_dall_e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo convert", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("src", metavar="SRC",
                   help="checkpoint: .pth / .pth.tar / .npz / .ckpt / .pdparams / hub folder (or a vitzoo checkpoint), "
                        "a weights tag / hf-hub:org/repo / URL (fetched and cached), or DALL-E's encoder.pkl")
    p.add_argument("dst", metavar="DST", help="output: .pt / .pth / .safetensors (vitzoo), .ckpt or .pdparams; "
                                              "a folder with --to hf / --to timm")
    p.add_argument("--arch", "--model", default=None,
                   help="model name (see `vitzoo models`); default: the one SRC records, else the one its weights' names and "
                        "shapes fit (said in the report); one SRC records otherwise is an error")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier width (default: the file's; another width re-initialises the head)")
    p.add_argument("--img-size", type=int, default=None,
                   help="input resolution (default: the arch's; position tables are resized)")
    p.add_argument("--use-ema", action="store_true", help="take the EMA weights when the file has both")
    p.add_argument("--to", default=None, choices=["vitzoo", *WRITERS],
                   help="layout to write (default: by DST's suffix, .ckpt / .pdparams; else a vitzoo checkpoint); "
                        "hf / timm: a hub folder with a model card, ready for `hf upload USER/REPO DST`")
    p.add_argument("--overwrite", action="store_true",
                   help="--to hf / timm: replace the files of a DST folder that is not empty")
    p.add_argument("--license", default=None, metavar="ID",
                   help="--to hf / timm: the model card's license (a hub license id, e.g. apache-2.0; "
                        "default: the checkpoint's, else 'other')")
    p.add_argument("--reference-numerics", action="store_true",
                   help="use the PyTorch references' numerics (exact GELU, their LayerNorm epsilon) instead of the "
                        "source framework's; the logit change is printed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override for non-standard sizes, repeatable (e.g. --set embed_dim=192)")
    return p


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)  # typed: 192 -> int, 0.5 -> float, true -> bool
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if detect_dall_e(args.src):
        return convert_tokenizer(args.src, args.dst)
    info = convert_checkpoint(args.src, args.dst, arch=args.arch, num_classes=args.num_classes,
                              img_size=args.img_size, use_ema=args.use_ema,
                              overrides=parse_overrides(args.overrides), to=args.to,
                              reference_numerics=args.reference_numerics, overwrite=args.overwrite,
                              license=args.license)
    print(f"converted {args.src} ({info['layout']}) -> {info['path']} ({info['to']}): {info['arch']}, "
          f"{info['num_classes']} classes, {info['num_params']:,} parameters")
    for line in info["notes"]:
        print(f"  {line}")
    print(f"  checked: the written file reproduces the logits, max |diff| {info['max_diff']:.3g}")
    if args.to in ("hf", "timm"):
        print(f"  model card: {info['path']}/README.md; to publish: hf upload USER/REPO {info['path']}")
    return 0


def convert_tokenizer(src: str, dst: str) -> int:
    """The DALL-E encoder -> our tokenizer safetensors (model options such as --arch do not apply)."""
    info = convert_dall_e(src, dst)
    spec = info["spec"]
    print(f"converted {src} ({info['layout']}) -> {info['path']}: DALL-E dVAE encoder tokenizer, vocab "
          f"{spec.vocab_size}, n_hid {spec.n_hid}, {info['num_params']:,} parameters; checked: the written file "
          f"reproduces the logits, max |diff| {info['max_diff']:.3g}")
    return 0
