"""``vitzoo make-dataset shapes OUT`` / ``vitzoo make-dataset shards OUT --from-folder DIR``: write a generated
ImageNet-style image folder (no download needed), or WebDataset shards of a folder."""

from __future__ import annotations

import argparse
import tempfile

from vitzoo.data.shards.write import folder_to_shards
from vitzoo.data.synthetic import SHAPES, make_shapes_dataset, shapes_dataset_exists
from vitzoo.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vitzoo make-dataset",
        description="shapes: write a small procedurally drawn dataset as OUT/train/<class>/*.png and "
        "OUT/val/<class>/*.png (use data_path: OUT, train_dir: train, val_dir: val); deterministic for "
        "a seed. With --shards N it is written as WebDataset shards instead. "
        "shards: convert an ImageNet-style folder (--from-folder DIR holding train/<class>/ and "
        "optionally val/<class>/) into OUT/train/shard-000000.tar ..., OUT/val/... and OUT/classes.txt "
        "(use dataset: webdataset, data_path: OUT). Each sample is <key>.<ext> (the image file's bytes, "
        "unchanged) + <key>.cls (class index); train samples are shuffled (--seed) before sharding.",
    )
    p.add_argument(
        "kind",
        choices=["shapes", "shards"],
        help="'shapes' = one coloured shape per image (circle, square, triangle, star, ...) on a noisy "
        "background, the shape is the class; 'shards' = WebDataset tar shards of --from-folder",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--from-folder", metavar="DIR", help="shards: the ImageNet-style folder to convert")
    p.add_argument("--shards", type=int, metavar="N",
                   help="number of shards per split (shapes: write shards instead of a folder; "
                   "default for shards: one per --per-shard images)")
    p.add_argument("--per-shard", type=int, default=1000, metavar="M",
                   help="shards: images per shard when --shards is not given (default 1000)")
    p.add_argument("--num-train", type=int, default=1000, help="shapes: training images in all (default 1000)")
    p.add_argument("--num-val", type=int, default=200, help="shapes: validation images in all (default 200)")
    p.add_argument("--size", type=int, default=32, help="shapes: image side in pixels (default 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same files (default 0)")
    p.add_argument("--num-classes", type=int, default=5, help="shapes: number of shape classes, 1..10 (default 5)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT/train and OUT/val (or their shards) if they exist with other content",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    return p


def _shards(args: argparse.Namespace, src: str) -> str:
    written = folder_to_shards(src, args.out, num_shards=args.shards, per_shard=args.per_shard,
                               seed=args.seed, overwrite=args.overwrite)
    return " + ".join(f"{n} {split}" for split, n in written.items())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kind == "shards":
        if not args.from_folder:
            raise UserError("make-dataset shards needs --from-folder DIR (an ImageNet-style folder)")
        what = _shards(args, args.from_folder)
        if not args.quiet:
            print(f"wrote {what} images as WebDataset shards to {args.out} (dataset: webdataset)")
        return 0

    settings = (args.out, args.num_train, args.num_val, args.size, args.seed, args.num_classes)
    reused = not args.overwrite and args.shards is None and shapes_dataset_exists(*settings)
    with tempfile.TemporaryDirectory(prefix="vitzoo-shapes-") as tmp:
        out = make_shapes_dataset(
            args.out if args.shards is None else tmp,
            args.num_train,
            args.num_val,
            args.size,
            args.seed,
            num_classes=args.num_classes,
            overwrite=args.overwrite,
            progress=False if args.quiet else None,
        )
        if args.shards is not None:
            _shards(args, str(out))
    if not args.quiet:
        what = (f"{args.num_train} train + {args.num_val} val images of {args.num_classes} classes "
                f"({', '.join(SHAPES[: args.num_classes])})")
        if args.shards is not None:
            print(f"wrote {what} as WebDataset shards to {args.out} (dataset: webdataset)")
        elif reused:
            print(f"reused {out}: it already holds the {what} these settings make (--overwrite writes them again)")
        else:
            print(f"wrote {what} to {out}")
    return 0
