"""`vitzoo convert`: turn an official release file into a vitzoo checkpoint (weights + arch + config).

SRC may be in any layout :mod:`vitzoo.models.convert` detects -- DeiT / timm ``.pth``, official T2T-ViT
``.pth.tar``, unilm BEiT ``.pth``, Google ViT ``.npz`` -- or a vitzoo checkpoint itself (e.g. to re-save as
``.safetensors``). DST ending in ``.safetensors`` writes safetensors (meta in the header); anything else a
``torch.save`` file loadable with ``weights_only=True``. The converted model is checked: it must load
strictly, and the written file must reproduce its logits.
"""
from __future__ import annotations

import argparse

import yaml

from vitzoo.errors import UserError
from vitzoo.models.convert import convert_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo convert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("src", metavar="SRC", help="official file: .pth / .pth.tar / .npz (or a vitzoo checkpoint)")
    p.add_argument("dst", metavar="DST", help="output checkpoint (.pt, .pth or .safetensors)")
    p.add_argument("--arch", "--model", default=None,
                   help="model name (see `vitzoo models`); required unless SRC is a vitzoo checkpoint")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier width (default: the file's; another width re-initialises the head)")
    p.add_argument("--img-size", type=int, default=None,
                   help="input resolution (default: the arch's; position tables are resized)")
    p.add_argument("--use-ema", action="store_true", help="take the EMA weights when the file has both")
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
    info = convert_checkpoint(args.src, args.dst, arch=args.arch, num_classes=args.num_classes,
                              img_size=args.img_size, use_ema=args.use_ema,
                              overrides=parse_overrides(args.overrides))
    print(f"converted {args.src} ({info['layout']}) -> {info['path']}: {info['arch']}, "
          f"{info['num_classes']} classes, {info['num_params']:,} parameters")
    for line in info["notes"]:
        print(f"  {line}")
    return 0
