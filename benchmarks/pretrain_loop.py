"""The whole BEiT loop at CPU scale: pre-train on unlabeled images, fine-tune on 10% of the labels, compare.

What docs/pretraining.md's CPU-scale table reports, measured in one run on generated data:

1. ``vitzoo make-dataset shapes``: 3,000 train images (their labels unused until step 4) and 500 val images;
2. ``vitzoo train-tokenizer`` (for the tokenizer target);
3. ``vitzoo pretrain`` with each target (configs/beit_shapes_pt.yaml): the trained tokenizer's tokens,
   pixels, pixels normalised per patch (MAE's norm_pix_loss);
4. ``vitzoo train`` on 300 labeled images (configs/beit_shapes_ft.yaml) from each pre-trained encoder and
   from scratch: the same recipe, epochs, lr and augmentation for all;
5. ``vitzoo linprobe`` and ``vitzoo knn`` of each pre-trained encoder and of a randomly initialised one.

Writes OUT/summary.json and OUT/finetune_curves.png; a step whose output exists is not run again.

    python benchmarks/pretrain_loop.py --out runs/loop [--targets pixels,tokenizer]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vitzoo.checkpoint.store import list_checkpoints
from vitzoo.cli import main as vitzoo
from vitzoo.data import make_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
PT, FT = str(ROOT / "configs" / "beit_shapes_pt.yaml"), str(ROOT / "configs" / "beit_shapes_ft.yaml")


def step(name: str, argv: list[str], done: Path) -> float:
    """Run one vitzoo command unless it finished before (``done``.done exists); return its seconds."""
    marker = done.with_name(done.name + ".done")
    if marker.exists():
        print(f"[{name}] done before: {done}", flush=True)
        return float(marker.read_text() or 0)
    print(f"[{name}] vitzoo {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    if vitzoo(argv) != 0:
        sys.exit(f"[{name}] failed")
    seconds = time.monotonic() - t0
    marker.write_text(f"{seconds:.1f}")
    return seconds


def last_checkpoint(run: Path) -> str:
    return str(list_checkpoints(run / "checkpoints")[-1])


def final_top1(run: Path) -> tuple[float, float, list]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["epoch"], r["val_top1"]) for r in rows if r.get("val_top1") is not None]  # eval_every epochs
    top1 = [t for _, t in curve]
    return top1[-1], max(top1), curve


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/loop")
    p.add_argument("--targets", default="tokenizer,pixels,pixels-norm",
                   help="comma-separated: tokenizer, pixels, pixels-norm (pixels normalised per patch)")
    p.add_argument("--labels", type=int, default=300, help="labeled training images for fine-tuning")
    args = p.parse_args()
    out = Path(args.out)
    data = out / "shapes"
    if not (data / "val").is_dir():
        make_shapes_dataset(data, 3000, 500, size=32, seed=0, num_classes=10, progress=False)
    seconds: dict[str, float] = {}
    encoders: dict[str, str] = {}
    for target in args.targets.split(","):
        extra = ["--mim_target", "pixels", "--norm_pix_loss", str(target == "pixels-norm").lower()]
        if target == "tokenizer":
            tok = out / "tokenizer"
            seconds["train-tokenizer"] = step("tokenizer", [
                "train-tokenizer", "--data_path", str(data), "--input_size", "64", "--codebook_size", "256",
                "--tokenizer_width", "16", "--epochs", "5", "--output_dir", str(tok)], tok)
            extra = ["--mim_target", "tokenizer", "--tokenizer_path", str(tok / "tokenizer.safetensors")]
        run = out / f"pt_{target}"
        seconds[f"pretrain {target}"] = step(f"pretrain {target}", [
            "pretrain", "--config", PT, "--data_path", str(data), "--output_dir", str(run), *extra], run)
        encoders[target] = last_checkpoint(run)

    fine_tuned: dict[str, dict] = {}
    for name, ckpt in [*encoders.items(), ("scratch", "")]:
        run = out / f"ft_{name}"
        init = ["--pretrained", ckpt] if ckpt else []
        seconds[f"fine-tune {name}"] = step(f"fine-tune {name}", [
            "train", "--config", FT, "--data_path", str(data), "--train_num_samples", str(args.labels),
            "--output_dir", str(run), *init], run)
        last, best, curve = final_top1(run)
        fine_tuned[name] = {"top1_last": last, "top1_best": best, "curve": curve}

    probes: dict[str, dict] = {}
    for name, ckpt in [*encoders.items(), ("random init", "")]:
        probes[name] = {}
        for command in ("linprobe", "knn"):
            report = out / f"{command}_{name.replace(' ', '_')}.json"
            step(f"{command} {name}", [command, "--config", FT, "--data_path", str(data), "--train_num_samples",
                                       str(args.labels), "--pretrained", ckpt, "--json", str(report)], report)
            probes[name][command] = json.loads(report.read_text())["Top1-Acc"]

    vitzoo(["plot", *(str(out / f"ft_{n}") for n in fine_tuned), "--output", str(out / "finetune_curves.png")])
    summary = {"fine_tune_top1": fine_tuned, "probes_top1": probes, "seconds": seconds, "labels": args.labels}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nfine-tuning on {args.labels} labels (val top-1, last / best epoch), then probes of the frozen encoder:")
    for name, r in fine_tuned.items():
        print(f"  {name:10s} fine-tune {100 * r['top1_last']:5.1f}% / {100 * r['top1_best']:5.1f}%")
    for name, r in probes.items():
        print(f"  {name:12s} linear probe {100 * r['linprobe']:5.1f}%   k-NN {100 * r['knn']:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
