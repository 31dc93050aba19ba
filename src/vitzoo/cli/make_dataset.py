"""``vitzoo make-dataset shapes OUT``: write a generated ImageNet-style image folder (no download needed)."""

from __future__ import annotations

import argparse

from vitzoo.data.synthetic import SHAPES, make_shapes_dataset, shapes_dataset_exists


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vitzoo make-dataset",
        description="Write a small procedurally drawn dataset as OUT/train/<class>/*.png and "
        "OUT/val/<class>/*.png (use data_path: OUT, train_dir: train, val_dir: val). "
        "Deterministic for a seed.",
    )
    p.add_argument(
        "kind",
        choices=["shapes"],
        help="what to draw: 'shapes' = one coloured shape per image "
        "(circle, square, triangle, star, ...) on a noisy background; the shape is the class",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--num-train", type=int, default=1000, help="training images in all (default 1000)")
    p.add_argument("--num-val", type=int, default=200, help="validation images in all (default 200)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same files (default 0)")
    p.add_argument("--num-classes", type=int, default=5, help="number of shape classes, 1..10 (default 5)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT/train and OUT/val if they exist with other content",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    settings = (args.out, args.num_train, args.num_val, args.size, args.seed, args.num_classes)
    reused = not args.overwrite and shapes_dataset_exists(*settings)
    out = make_shapes_dataset(
        args.out,
        args.num_train,
        args.num_val,
        args.size,
        args.seed,
        num_classes=args.num_classes,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
    )
    if not args.quiet:
        what = (f"{args.num_train} train + {args.num_val} val images of {args.num_classes} classes "
                f"({', '.join(SHAPES[: args.num_classes])})")
        if reused:
            print(f"reused {out}: it already holds the {what} these settings make (--overwrite writes them again)")
        else:
            print(f"wrote {what} to {out}")
    return 0
