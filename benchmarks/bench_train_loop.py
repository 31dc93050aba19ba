"""`vitzoo train` against a plain timm-style loop over the same image folder, rounds alternating in one process.

Both sides train the same architecture from the same folder with the same augmentation (random resized
crop + flip, nothing else), batch size, loader workers and precision (fp32). Ours is the whole engine as
``vitzoo train`` runs it (:class:`vitzoo.engine.trainer.Trainer`: seeded per-sample augmentation, logging,
TensorBoard, metrics files, validation and checkpoints at each epoch end); theirs is ``timm.create_model`` +
timm's ``create_transform`` + torchvision ``ImageFolder`` + ``DataLoader`` + AdamW, nothing else (as
timm's train.py between log lines). Rounds alternate (ours, theirs, theirs, ours, ...) in one process, so
a machine whose load drifts slows both sides alike; each round starts fresh (model, loader, workers).

    python benchmarks/bench_train_loop.py                       # deit_tiny, 224 px, batch 32, 2 workers
    python benchmarks/bench_train_loop.py --images 320 --epochs 3 --rounds 4

Printed per side: img/s of the steady epochs (epoch 2 on: workers started, as the issue's figures) and of
the first one, the whole run's wall time (start-up, validation and checkpoints included for ours), the
main process's page faults per epoch (a fresh or copy-on-write page touched: independent of the machine's
load, unlike the times), and for ours where each steady epoch's time went (waiting for the loader,
forward + backward, optimiser update, the trainer's per-update reporting and agreement); then the ratio
ours / theirs of the steady img/s (>= 1.0: ours at least as fast), with the range of the rounds' ratios.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F


def faults() -> int:
    """Minor page faults of this process so far (each a fresh page touched: what kept memory saves)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def ours(args, data: Path, out: Path) -> dict:
    """One ``vitzoo train`` run in-process; per-epoch wall times from the trainer's own epoch clock."""
    from vitzoo.config import load_config
    from vitzoo.engine import loop
    from vitzoo.engine import trainer as trainer_mod

    phases: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.perf_counter() - t0
        return wrapper

    cfg = load_config(None, [
        "--model", args.model, "--input_size", str(args.img_size), "--dataset", "folder", "--data_path", str(data),
        "--output_dir", str(out), "--overwrite", "--epochs", str(args.epochs), "--batch_size", str(args.batch_size),
        "--num_workers", str(args.workers), "--amp_level", "O0", "--device", "cpu", "--aa", "none",
        "--color_jitter", "0", "--reprob", "0", "--mixup", "0", "--cutmix", "0", "--smoothing", "0",
        "--min_crop", "0.08", "--hflip", "0.5", "--warmup_epochs", "0", "--opt", "adamw", "--lr", "5e-4",
        "--unscale_lr", "true", "--weight_decay", "0.05", "--drop_path", "0", "--clip_grad", "none",
        "--print_loss_every", "1000", "--ckpt_save_every_seconds", "0"])
    t_start = time.perf_counter()
    trainer = trainer_mod.Trainer(cfg)
    epochs: list[float] = []
    epoch_faults: list[int] = []
    steady = {"on": False}
    original = {"fb": loop._forward_backward, "update": loop._update}
    try:
        trainer._report_update = timed("report", trainer._report_update)
        trainer._agree = timed("agree", trainer._agree)
        train_epoch = trainer._train_epoch

        def epoch(*a, **k):
            steady["on"] = bool(epochs)
            before = dict(phases)
            t0, f0 = time.perf_counter(), faults()
            stats = train_epoch(*a, **k)
            epochs.append(time.perf_counter() - t0)
            epoch_faults.append(faults() - f0)
            if not steady["on"]:  # the first epoch's phases (worker start-up) are left out
                phases.clear()
                phases.update(before)
            else:
                phases["loader wait"] += stats.data_seconds
            return stats

        trainer._train_epoch = epoch
        loop._forward_backward = timed("forward + backward", loop._forward_backward)
        loop._update = timed("optimiser update", loop._update)
        trainer.fit()
    finally:
        loop._forward_backward, loop._update = original["fb"], original["update"]
        trainer.close()
    images = trainer.data.updates_per_epoch * args.batch_size
    return {"epochs": epochs, "images": images, "wall": time.perf_counter() - t_start, "phases": dict(phases),
            "faults": epoch_faults}


def theirs(args, data: Path) -> dict:
    """The plain loop: what a user writes with timm and torchvision, over the same folder."""
    import timm
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    t_start = time.perf_counter()
    torch.manual_seed(0)
    model = timm.create_model(args.timm_model or args.model, num_classes=5, img_size=args.img_size)
    cfg = model.pretrained_cfg
    transform = create_transform(args.img_size, is_training=True, scale=(0.08, 1.0), hflip=0.5, color_jitter=None,
                                 auto_augment=None, re_prob=0.0, interpolation=cfg.get("interpolation", "bicubic"),
                                 mean=cfg["mean"], std=cfg["std"])
    ds = ImageFolder(str(data / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         drop_last=True, persistent_workers=args.workers > 0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    model.train()
    epochs: list[float] = []
    epoch_faults: list[int] = []
    phases: dict[str, float] = defaultdict(float)
    for epoch in range(args.epochs):
        t0, f0 = time.perf_counter(), faults()
        seen = {"loader wait": 0.0, "forward + backward": 0.0, "optimiser update": 0.0}
        batches = iter(loader)
        while True:
            t = time.perf_counter()
            try:
                x, y = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            for name, sec in zip(seen, (t1 - t, t2 - t1, time.perf_counter() - t2)):
                seen[name] += sec
        epochs.append(time.perf_counter() - t0)
        epoch_faults.append(faults() - f0)
        if epoch:  # the first epoch's phases (worker start-up) are left out, as for ours
            for name, sec in seen.items():
                phases[name] += sec
    del loader  # (its workers end here)
    return {"epochs": epochs, "images": len(ds) // args.batch_size * args.batch_size,
            "wall": time.perf_counter() - t_start, "phases": dict(phases), "faults": epoch_faults}


def rates(run: dict) -> tuple[float, float]:
    """(steady img/s: epochs 2 on, first epoch img/s)."""
    steady = run["epochs"][1:] or run["epochs"]
    return run["images"] * len(steady) / sum(steady), run["images"] / run["epochs"][0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="deit_tiny_patch16_224")
    p.add_argument("--timm-model", default=None, help="timm's name, when it differs from vitzoo's")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="loader workers, both sides")
    p.add_argument("--images", type=int, default=256, help="generated training images (one epoch)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per round (>= 2: the first is start-up)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating")
    p.add_argument("--data", default=None, help="an ImageNet-style folder (train/<class>/...) instead of "
                                                 "generated shapes; its classes must be 5")
    args = p.parse_args()

    from vitzoo.data import make_shapes_dataset
    from vitzoo.runtime.host_allocator import keep_freed_memory

    print(f"# host memory (both sides, one process): {keep_freed_memory()}", flush=True)  # as vitzoo's CLI
    results: dict[str, list[dict]] = {"vitzoo train": [], "plain timm loop": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else make_shapes_dataset(
            Path(tmp) / "data", args.images, 16, size=args.img_size, seed=0, num_classes=5, progress=False)
        for r in range(args.rounds):
            order = ["vitzoo train", "plain timm loop"][:: 1 if r % 2 == 0 else -1]
            for side in order:
                run = ours(args, data, Path(tmp) / f"run{r}") if side == "vitzoo train" else theirs(args, data)
                results[side].append(run)
                steady, first = rates(run)
                print(f"round {r + 1} {side:16s}: {steady:6.2f} img/s steady, {first:6.2f} first epoch, "
                      f"{run['wall']:6.1f} s in all; page faults per epoch {run['faults']}", flush=True)
    print(f"\n{args.model}, {args.img_size} px, batch {args.batch_size}, {args.workers} loader workers, fp32, "
          f"{results['vitzoo train'][0]['images']} images x {args.epochs} epochs, {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads")
    print("| side | img/s, steady epochs (median) | first epoch | whole run, s |\n|---|---|---|---|")
    med = {}
    for side, runs in results.items():
        med[side] = statistics.median(rates(r)[0] for r in runs)
        print(f"| {side} | {med[side]:.2f} | {statistics.median(rates(r)[1] for r in runs):.2f} | "
              f"{statistics.median(r['wall'] for r in runs):.1f} |")
    pairs = [rates(a)[0] / rates(b)[0] for a, b in zip(results["vitzoo train"], results["plain timm loop"])]
    print(f"\nratio vitzoo / plain (steady img/s): {med['vitzoo train'] / med['plain timm loop']:.2f}x "
          f"(rounds {min(pairs):.2f}-{max(pairs):.2f})")
    print("\nwhere a steady epoch's time goes, ms per image (median of the rounds):")
    for side, runs in results.items():
        shares = defaultdict(list)
        for run in runs:
            steady_images = run["images"] * (len(run["epochs"]) - 1)
            for name, sec in run["phases"].items():
                shares[name].append(1e3 * sec / steady_images)
            shares["epoch in all"].append(1e3 * sum(run["epochs"][1:]) / steady_images)
        print(f"  {side}: " + ", ".join(f"{name} {statistics.median(v):.1f}" for name, v in shares.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
