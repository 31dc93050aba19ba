"""Can the input pipeline feed the model? The loader's img/s against the model's, and the two together.

Three rates, measured in one run on one machine:

1. **loader**: vitzoo's training loader (the DeiT recipe: RandomResizedCrop bicubic, flip, RandAugment
   rand-m9-mstd0.5-inc1, normalise, RandomErasing 0.25) with ``--workers`` processes over a folder of
   JPEGs, nothing else running; best of ``--rounds`` epochs after a warm-up epoch.
2. **model**: the training step alone (forward, loss, backward, AdamW) on a batch already on the device,
   under the precision policy (and ``torch.compile`` with ``--compile``), from ``vitzoo.bench.measure``; with the
   FLOPs counted on the model, its utilisation of the matmul peak measured in the same run.
3. **fed**: the loader feeding the step (pinned memory, non-blocking copies), one epoch after a warm-up.

With ``--augment-on device`` the workers stop after crop, flip and drawing the plan, and the fed rate
includes the device stage (RandAugment, normalise, erasing on the batch: ``augment_on: device``); with
``--augment-on decode`` they only read the files and draw, and the device decodes too (``decode_on``).

The verdict says which side bounds training: fed / min(loader, model) near 1 means the slower side sets
the pace; loader < model means more workers (or decoding on the GPU) would pay. The folder is generated
(``make-dataset shapes`` images re-encoded as JPEG quality 90 at ``--size`` px, about ImageNet's mean
side; ``--unique`` of them drawn, the rest copies), so the figures hold for JPEGs of that size.

    python benchmarks/bench_feed.py --model deit_small_patch16_224 --device cuda --batch-size 256 \
        --workers 16 --num-images 4096 --size 400 --compile
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_data import MODES, photo_size, recipe_cfg, to_jpeg, write_photos

from vitzoo.bench import measure as bench
from vitzoo.data import build_dataset, build_loader, device_stage, make_shapes_dataset
from vitzoo.engine.dist import resolve_device
from vitzoo.models import create_model
from vitzoo.runtime.precision import resolve_precision

WHAT_ON_DEVICE = {"cpu": "", "device": " (augment_on: device)", "decode": " (decode_on: device)"}


def replicate(folder: Path, total: int) -> None:
    """Copy the generated JPEGs under new names until ``folder`` holds ``total``: drawing 400 px shapes is
    slow on one core, and a copy costs the loader exactly what its original does."""
    originals = sorted(folder.rglob("*.jpg"))
    for i in range(total - len(originals)):
        src = originals[i % len(originals)]
        shutil.copyfile(src, src.with_name(f"copy{i:06d}_{src.name}"))


def loader_rate(loader) -> float:
    """img/s of one epoch of the loader alone."""
    n, t0 = 0, time.perf_counter()
    for _, y, *_ in loader:
        n += y.shape[0]
    return n / (time.perf_counter() - t0)


def fed_rate(loader, step, device: torch.device, batches: int | None = None, stage=None) -> float:
    """img/s of the loader feeding ``step(x, y)``: host-to-device copies overlap the previous step;
    ``stage``: the device half of ``augment_on: device`` runs on each batch first."""
    n, t0 = 0, time.perf_counter()
    for i, (x, y, *_) in enumerate(loader):
        if batches is not None and i >= batches:
            break
        if stage is not None:
            x, y = stage(x, y, device)
        step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        n += y.shape[0]
    bench.sync(device)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                    help="amp_dtype of the training step (auto: the trainer's policy)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--num-images", type=int, default=1024)
    ap.add_argument("--size", type=int, default=400, help="side of the generated JPEGs")
    ap.add_argument("--unique", type=int, default=512, help="distinct images drawn; copies make up --num-images")
    ap.add_argument("--photos", type=photo_size, default=None, metavar="WxH", help="generate --unique photo-like JPEGs of this "
                    "size (a phone camera's: 4000x3000) instead of shapes")
    ap.add_argument("--data", default="", help="an existing folder (DATA/train/<class>/...) instead of generating")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--augment-on", choices=tuple(MODES), default="cpu",
                    help="device = augment_on: device (RandAugment, normalise, erasing on the device); decode = "
                         "and decode_on: device (JPEG decode, crop and flip there too)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    info = bench.machine_info()
    print(f"# {info['cpu']} ({info['threads']} threads){', ' + info['gpu'] if 'gpu' in info else ''}; "
          f"torch {info['torch']}; {args.workers} loader workers", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp)
        unique = min(args.num_images, args.unique)
        if args.photos:
            write_photos(root, unique, *args.photos)
        elif not args.data:
            make_shapes_dataset(root, unique, 10, args.size, seed=0, num_classes=10, progress=False)
            to_jpeg(root)
        if not args.data:
            replicate(root / "train", args.num_images)
        _, augment_on, decode_on = MODES[args.augment_on]
        cfg = recipe_cfg(args, str(root), augment_on, decode_on)
        cfg.pin_mem = device.type == "cuda"
        dataset = build_dataset(cfg, "train")
        loader, stage = build_loader(cfg, dataset, "train"), device_stage(dataset.transform)
        loader_rate(loader)  # warm-up: worker start, file cache
        loader_rates = [loader_rate(loader) for _ in range(args.rounds)]
        print(f"# loader: {', '.join(f'{r:.0f}' for r in loader_rates)} img/s per epoch", flush=True)

        amp = resolve_precision("O0" if args.precision == "fp32" else "O1", args.precision, device)
        peak = bench.matmul_peak(amp.autocast or torch.float32, device)
        row = bench.bench_model(args.model, mode="train", batch=args.batch_size, img_size=args.input_size,
                                ours_precision=amp, against="none", device=device, rounds=3, iters=5,
                                warmup=3, compile=args.compile)
        bench.add_peak_fractions([row], {amp.autocast or torch.float32: peak})
        print(f"# model: {row['ours_img_s']:.0f} img/s ({row['ours_precision_why']}, "
              f"{100 * row['peak_fraction']:.0f}% of the measured matmul peak)", flush=True)

        model = create_model(args.model, num_classes=10, img_size=args.input_size).to(device).train()
        model = torch.compile(model) if args.compile else model
        step = bench.train_step(model, amp, device)
        fed_rate(loader, step, device, batches=3, stage=stage)  # warm-up (and compilation)
        fed = max(fed_rate(loader, step, device, stage=stage) for _ in range(args.rounds))
        del loader
        gc.collect()

    best_loader, model_rate = max(loader_rates), row["ours_img_s"]
    bound = "the loader" if best_loader < model_rate else "the model"
    print("| model | batch | precision | workers | loader img/s | model img/s | fed img/s | fed / min |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {args.batch_size} | {row['ours_precision']}"
          f"{' + compile' if args.compile else ''} | {args.workers}{WHAT_ON_DEVICE[args.augment_on]} | {best_loader:.0f} | {model_rate:.0f} | "
          f"{fed:.0f} | {fed / min(best_loader, model_rate):.2f} |")
    print(f"bound by {bound}: the loader gives {best_loader / model_rate:.2f}x what the model takes")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "loader_img_s": loader_rates,
                                               "model": row, "fed_img_s": fed}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
