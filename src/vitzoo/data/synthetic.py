"""``make-dataset shapes``: a small generated ImageNet-style folder, so everything runs with no download.

Each image is one roughly centred shape (the class) in a random bright colour, with random size,
small offset and small rotation, on a noisy background of another random (dark) colour. Only the
shape carries the label and the shapes differ in outline (corners, holes, concavities), so a small ViT
learns the task in a couple of CPU minutes, while colour / size / position / noise still vary.

Determinism: image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split, i])`` alone, so
the bytes of every PNG depend only on (seed, split, index, size, num_classes).
Shapes are drawn as a 4x supersampled mask with PIL and box-filtered down (anti-aliased edges).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from vitzoo.checkpoint import atomic_write_text, make_folder
from vitzoo.errors import UserError

# Class order of the generated set (folder names; --num-classes C takes the first C).
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon", "crescent", "arrow")
_SS = 4  # supersampling factor for anti-aliased edges
_MANIFEST = "shapes.json"
_INCOMPLETE = ".shapes_incomplete"


def _regular(n: int, r: float, rot: float, inner: float | None = None) -> np.ndarray:
    """Vertices of a regular n-gon (or an n-pointed star when ``inner`` is given), unit-centred."""
    k = 2 * n if inner else n
    ang = rot + np.arange(k) * 2 * np.pi / k - np.pi / 2
    rad = np.full(k, r) if not inner else np.where(np.arange(k) % 2 == 0, r, r * inner)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)


def _rotate(pts: np.ndarray, rot: float) -> np.ndarray:
    c, s = math.cos(rot), math.sin(rot)
    return pts @ np.array([[c, s], [-s, c]])


def _outline(shape: str, r: float, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(polygons to fill, polygons to cut out) centred at 0; circles are 64-gons.

    Rotations stay small (about +-11 degrees) so each class keeps one recognisable template: a small
    ViT trained from scratch for a few hundred steps learns these; fully random rotations and positions
    need far more data and steps (measured: chance level after 10 epochs of 2000 images).
    """
    rot = rng.uniform(-0.2, 0.2)
    if shape == "circle":
        return [_regular(64, r, 0)], []
    if shape == "square":
        return [_rotate(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r * 0.8, rot)], []
    if shape == "triangle":
        return [_regular(3, r, rot)], []
    if shape == "star":
        return [_regular(5, r, rot, inner=0.42)], []
    if shape == "cross":
        a, b = r, r * 0.33
        pts = [
            [-b, -a],
            [b, -a],
            [b, -b],
            [a, -b],
            [a, b],
            [b, b],
            [b, a],
            [-b, a],
            [-b, b],
            [-a, b],
            [-a, -b],
            [-b, -b],
        ]
        return [_rotate(np.array(pts), rot)], []
    if shape == "ring":
        return [_regular(64, r, 0)], [_regular(64, r * 0.55, 0)]
    if shape == "diamond":  # a tall rhombus, distinct from the square by its aspect and corners
        return [_rotate(np.array([[0, -r], [r * 0.6, 0], [0, r], [-r * 0.6, 0]]), rot)], []
    if shape == "hexagon":
        return [_regular(6, r, rot + np.pi / 6)], []  # flat top and bottom
    if shape == "crescent":
        off = _rotate(np.array([[r * 0.45, 0.0]]), rot)[0]
        return [_regular(64, r, 0)], [_regular(64, r * 0.85, 0) + off]
    if shape == "arrow":  # pointing right
        s, h = r * 0.28, r * 0.1
        pts = [[-r, -s], [h, -s], [h, -r * 0.75], [r, 0], [h, r * 0.75], [h, s], [-r, s]]
        return [_rotate(np.array(pts), rot)], []
    raise ValueError(shape)


def draw_shape(shape: str, size: int, rng: np.random.Generator):
    """One RGB PIL image of ``shape`` on a noisy background."""
    from PIL import Image, ImageDraw

    # Random hues, but the shape is always the brighter one in every channel: the outline then shows
    # in any linear projection of the pixels (what a patch embedding starts as), which is what lets a
    # small ViT from scratch learn the set in a few hundred steps (random contrast polarity: ~35%
    # accuracy after 10 epochs of 2000 images, measured).
    bg = rng.integers(0, 100, 3)
    fg = rng.integers(156, 256, 3)
    r = rng.uniform(0.34, 0.44) * size
    jitter = 0.08 * size  # roughly centred (see _outline): position varies a little, never off the edge
    lo, hi = max(r, size / 2 - jitter), min(size - r, size / 2 + jitter)
    cx, cy = rng.uniform(lo, hi, 2)
    fill, cut = _outline(shape, r, rng)
    big = size * _SS
    mask = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(mask)
    for poly, value in [(p, 255) for p in fill] + [(p, 0) for p in cut]:
        xy = (poly + np.array([cx, cy])) * _SS
        d.polygon([tuple(map(float, v)) for v in xy], fill=value)
    alpha = np.asarray(mask.resize((size, size), Image.BOX), dtype=np.float32)[..., None] / 255.0
    noise = rng.normal(0, 12, (size, size, 3))
    img = bg + noise * 1.0
    img = img * (1 - alpha) + (fg + rng.normal(0, 8, (size, size, 3))) * alpha
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def photo_like(width: int, height: int, seed: int = 0):
    """A photo-like RGB PIL image: smooth shading, sensor noise (sigma 12) and one hard-edged patch.

    Decoding and resizing cost depend on the pixel count and on how much detail the JPEG holds; the flat
    shapes above compress to little, a camera picture does not. Used to measure the loader on
    phone-photo-sized JPEGs (``benchmarks/bench_data.py --photos``) and in the tests.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([127 + 100 * np.sin(x / 37) * np.cos(y / 53), 127 + 90 * np.sin((x + y) / 71),
                    127 + 80 * np.cos(x / 19 + y / 97)], -1) + rng.normal(0, 12, (height, width, 3))
    img[height // 3: height // 2, width // 4: width // 2] = (250, 30, 30)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def _manifest(num_train: int, num_val: int, size: int, seed: int, classes: list[str]) -> dict:
    return {
        "kind": "shapes",
        "version": 4,
        "num_train": num_train,
        "num_val": num_val,
        "size": size,
        "seed": seed,
        "classes": classes,
        "train_dir": "train",
        "val_dir": "val",
    }


def shapes_dataset_exists(out: str | os.PathLike, num_train: int, num_val: int, size: int = 32, seed: int = 0,
                          num_classes: int = 5) -> bool:
    """Does ``out`` already hold the finished dataset these settings make (so writing it is skipped)?"""
    out = Path(out)
    try:
        have = json.loads((out / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    want = _manifest(num_train, num_val, size, seed, list(SHAPES[:num_classes]))
    return have == want and not (out / _INCOMPLETE).exists()


def make_shapes_dataset(
    out: str | os.PathLike,
    num_train: int,
    num_val: int,
    size: int = 32,
    seed: int = 0,
    num_classes: int = 5,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write ``out/train/<shape>/*.png`` and ``out/val/<shape>/*.png``; return ``out``.

    Classes are balanced (image ``i`` has class ``i % num_classes``). Re-running with the same settings
    on a finished folder does nothing; different settings need ``overwrite=True`` (which always
    rewrites, replacing ``out/train`` and ``out/val`` only). ``progress``: a tqdm bar (default: when
    more than 2000 images).
    """
    if not 1 <= num_classes <= len(SHAPES):
        raise UserError(
            f"num_classes must be in 1..{len(SHAPES)} (shapes: {', '.join(SHAPES)}), got {num_classes}"
        )
    if num_train < num_classes or num_val < num_classes:
        raise UserError(
            f"num_train and num_val must be at least num_classes ({num_classes}) so that every "
            f"class folder holds an image; got {num_train} / {num_val}"
        )
    if not 8 <= size <= 2048:
        raise UserError(f"size must be in 8..2048 pixels, got {size}")
    out = Path(out)
    classes = list(SHAPES[:num_classes])
    want = _manifest(num_train, num_val, size, seed, classes)
    existing = [out / d for d in ("train", "val") if (out / d).exists()]
    if existing:
        try:
            have = json.loads((out / _MANIFEST).read_text())
        except (OSError, ValueError):
            have = None
        ours_partial = (out / _INCOMPLETE).exists()
        if have == want and not ours_partial and not overwrite:
            return out
        if not (overwrite or ours_partial):
            raise UserError(
                f"{out} already holds {' and '.join(p.name + '/' for p in existing)} "
                f"({'made with other settings' if have else 'not made by make-dataset'}); "
                "pass --overwrite to replace them, or choose another folder"
            )
        for p in existing:
            shutil.rmtree(p)
    make_folder(out, f"cannot write the dataset into {out}")
    (out / _INCOMPLETE).write_text("make-dataset did not finish writing this folder\n")
    (out / _MANIFEST).unlink(missing_ok=True)
    jobs = [("train", 0, i) for i in range(num_train)] + [("val", 1, i) for i in range(num_val)]
    for split in ("train", "val"):
        for c in classes:
            (out / split / c).mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    show = len(jobs) > 2000 if progress is None else progress
    for split, code, i in tqdm(jobs, desc=f"shapes -> {out}", unit="img", disable=not show):
        cls = classes[i % num_classes]
        img = draw_shape(cls, size, np.random.default_rng([seed, code, i]))
        img.save(out / split / cls / f"{i:06d}.png", optimize=False)

    atomic_write_text(out / _MANIFEST, json.dumps(want, indent=1) + "\n")
    (out / _INCOMPLETE).unlink()
    return out
