"""Train-pipeline throughput: vitzoo's loader vs timm's own (create_dataset + create_loader), same folder.

Both run the DeiT training recipe (RandomResizedCrop bicubic, flip, RandAugment rand-m9-mstd0.5-inc1,
normalise, RandomErasing 0.25 pixel) at the same input size, batch size and worker count on a folder
written by ``make-dataset shapes`` (optionally re-encoded as JPEG, as ImageNet is). Runs alternate
(ours, timm, ours, timm, ...) after one warm-up epoch each, and the best epoch of each is reported, so
machine noise hits both alike. Prints images/s, images/s per worker, and the ratio ours / timm.

    python benchmarks/bench_data.py --num-images 1024 --size 160 --input-size 224 --workers 2

``--photos 4000x3000`` generates photo-like JPEGs (quality 90) of that size instead, as phone cameras
write them, where vitzoo's crop decodes at a reduced JPEG scale (``data/transforms.py DraftResizedCrop``).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from vitzoo.config import RunConfig, config_from_dict

MODES = {"cpu": ("vitzoo", "cpu", "cpu"), "device": ("vitzoo device-aug", "device", "cpu"),
         "decode": ("vitzoo device-decode", "device", "device")}  # --augment-on: (label, augment_on, decode_on)


def recipe_cfg(args, data_path: str, augment_on: str | None = None, decode_on: str = "cpu") -> RunConfig:
    """The DeiT recipe's data keys (RandAugment, random erasing, bicubic, ImageNet mean/std)."""
    return config_from_dict({"dataset": "folder", "data_path": data_path, "num_workers": args.workers,
                             "pin_mem": False, "batch_size": args.batch_size, "imagenet_default_mean_and_std": True,
                             "crop_pct": 0.875, "input_size": args.input_size, "seed": 0,
                             "augment_on": augment_on or MODES[args.augment_on][1], "decode_on": decode_on},
                            strict=True)


def to_jpeg(root: Path) -> None:
    from PIL import Image

    for p in sorted(root.rglob("*.png")):
        Image.open(p).convert("RGB").save(p.with_suffix(".jpg"), quality=90)
        p.unlink()


def photo_size(text: str) -> tuple[int, int]:
    """``--photos WxH`` (argparse type): 4000x3000 -> (4000, 3000)."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 4000x3000, got {text!r}")
    return int(width), int(height)


def write_photos(root: Path, n: int, width: int, height: int) -> None:
    from vitzoo.data.synthetic import photo_like

    for i in range(n):
        folder = root / "train" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        photo_like(width, height, seed=i).save(folder / f"{i:05d}.jpg", quality=90)


def epoch_rate(loader) -> float:
    n, t0 = 0, time.perf_counter()
    for x, y in loader:
        n += y.shape[0]
    return n / (time.perf_counter() - t0)


def stage_rate(stage, loader, device: str, batches: int = 4) -> tuple[float, float]:
    """(img/s of the device stage of ``augment_on: device`` alone, host ms per batch to queue it) on
    ``batches`` of the loader's batches. On a GPU the second is what the training step waits for when the
    stage reads nothing back (it then overlaps the step still running); on a CPU the two are one."""
    import torch

    held = [batch for _, batch in zip(range(batches), loader)]
    stage(*held[0], device)  # warm-up (kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    n, host, t0 = 0, 0.0, time.perf_counter()
    for x, y in held:
        queued = time.perf_counter()
        out, _ = stage(x, y, device)
        host += time.perf_counter() - queued
        n += out.shape[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), host / len(held) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="", help="existing make-dataset folder (default: generate one)")
    ap.add_argument("--num-images", type=int, default=1024)
    ap.add_argument("--size", type=int, default=160, help="side of the generated images")
    ap.add_argument("--jpeg", action="store_true", help="re-encode the generated images as JPEG")
    ap.add_argument("--photos", type=photo_size, default=None, metavar="WxH",
                    help="generate photo-like JPEGs of this size (--num-images of them, 2 classes) instead")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="timed epochs per loader (alternating)")
    ap.add_argument("--augment-on", default="cpu", help="vitzoo's loader(s), comma-separated: cpu (the whole "
                    "recipe in the workers), device (augment_on: device: the workers stop after crop, flip and "
                    "the plan), decode (and decode_on: device: the workers read the files and draw); each "
                    "alternates with timm's")
    ap.add_argument("--device", default="cpu", help="where --augment-on device's stage is timed (cpu, cuda)")
    args = ap.parse_args()

    import torch
    from timm.data import create_dataset, create_loader

    from vitzoo.data import build_dataset, build_loader, device_stage, make_shapes_dataset
    from vitzoo.data.transforms import patch_posterize

    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory()
    root = Path(args.data or tmp.name)
    if args.photos:
        write_photos(root, args.num_images, *args.photos)
    elif not args.data:
        make_shapes_dataset(root, args.num_images, 10, args.size, seed=0, num_classes=10)
        if args.jpeg:
            to_jpeg(root)
    modes = args.augment_on.split(",")
    if not set(modes) <= set(MODES):
        ap.error(f"--augment-on takes {', '.join(MODES)} (comma-separated), got {args.augment_on!r}")
    cfg = recipe_cfg(args, str(root), "cpu")
    ours = {}  # name -> (dataset, loader)
    for mode in modes:
        label, augment_on, decode_on = MODES[mode]
        mode_cfg = recipe_cfg(args, str(root), augment_on, decode_on)
        ds = build_dataset(mode_cfg, "train")
        ours[label] = ds, build_loader(mode_cfg, ds, "train")
    timm_ds = create_dataset("", root=str(root / "train"), is_training=True)
    theirs = create_loader(
        timm_ds,
        input_size=(3, args.input_size, args.input_size),
        batch_size=args.batch_size,
        is_training=True,
        scale=(cfg.min_crop, 1.0),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter,
        auto_augment=cfg.aa,
        interpolation=cfg.interpolation,
        re_prob=cfg.reprob,
        re_mode=cfg.remode,
        re_count=cfg.recount,
        num_workers=args.workers,
        use_prefetcher=False,
        pin_memory=False,
        persistent_workers=True,
        device=torch.device("cpu"),
    )
    # timm's RandAugment posterize crashes at 0 bits on Pillow >= 13; give timm the same fix as ours
    patch_posterize(timm_ds.transform)
    loaders = {**{name: loader for name, (_, loader) in ours.items()}, "timm": theirs}
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for loader in loaders.values():
        epoch_rate(loader)  # warm-up: worker start, file cache
    for _ in range(args.rounds):
        for name, loader in loaders.items():
            rates[name].append(epoch_rate(loader))
    w = max(args.workers, 1)
    source = (f"photo-like jpeg {'x'.join(map(str, args.photos))}" if args.photos else args.data
              or f"generated, {'jpeg' if args.jpeg else 'png'} {args.size}px")
    print(
        f"train pipeline, {len(timm_ds)} images ({source}) -> "
        f"{args.input_size}px, batch {args.batch_size}, {args.workers} workers, best of {args.rounds} epochs"
    )
    for name, r in rates.items():
        print(
            f"  {name:20s} {max(r):8.1f} img/s   {max(r) / w:7.1f} img/s/worker   "
            f"(epochs: {', '.join(f'{v:.0f}' for v in r)})"
        )
    for name in ours:
        print(f"  ratio {name} / timm: {max(rates[name]) / max(rates['timm']):.3f}")
    for name, (ds, loader) in ours.items():
        stage = device_stage(ds.transform)
        if stage is not None:
            rate, host_ms = max(stage_rate(stage, loader, args.device) for _ in range(args.rounds))
            print(f"  {name}: its device stage alone on {args.device} (1 thread if cpu): {rate:8.1f} img/s, "
                  f"{host_ms:.1f} ms of host time per batch of {args.batch_size} to queue it")
    del ours, loaders, theirs  # stop the persistent workers before the temporary folder goes
    gc.collect()
    tmp.cleanup()


if __name__ == "__main__":
    main()
