"""Training throughput with 1 process and with N processes (torchrun, gloo on CPU) on the same machine.

Both runs are ``vitzoo train`` on the same generated images with the same *global* batch, so they compute
the same updates: one process with all the CPU threads, or N processes (``torchrun --nproc_per_node N``)
with threads / N each and the per-process batch / N, gradients all-reduced by DDP. Loader workers are on in
both (``--workers`` per process). Each run trains 2 epochs; the second epoch's img/s (all processes
together, from ``metrics.jsonl``) is reported, so start-up and the first epoch's warm-up are left out.

    python benchmarks/bench_train_processes.py --model deit_tiny_patch16_224 --img-size 224 --global-batch 32

On a CPU this answers "does one process use the cores as well as several?"; on a GPU machine run it
with --device cuda and N = the number of GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vitzoo.data import make_shapes_dataset
from vitzoo.data.loader import usable_cpus

SRC = Path(__file__).resolve().parents[1] / "src"


def run(processes: int, args: argparse.Namespace, data: Path, out: Path) -> float:
    threads = max(1, args.threads // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(SRC)}
    launcher = [sys.executable, "-m", "vitzoo"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
        "-m", "vitzoo"]
    train = ["train", "--model", args.model, "--input_size", str(args.img_size), "--num_classes", "5",
             "--data_path", str(data), "--output_dir", str(out), "--epochs", "2", "--warmup_epochs", "0",
             "--batch_size", str(args.global_batch // processes), "--num_workers", str(args.workers),
             "--amp_level", args.amp_level, "--device", args.device, "--aa", "none", "--mixup", "0",
             "--cutmix", "0", "--reprob", "0", "--eval_every", "10", "--print_loss_every", "1000",
             "--ckpt_save_every_seconds", "0", "--overwrite"]
    res = subprocess.run([*launcher, *train], env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"{processes} process(es) failed:\n{res.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(rows[-1]["img_per_sec"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="deit_tiny_patch16_224")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--global-batch", type=int, default=32, help="images per update, over all processes")
    p.add_argument("--images", type=int, default=640, help="generated training images (one epoch)")
    p.add_argument("--processes", type=int, default=2, help="N for the torchrun run")
    p.add_argument("--threads", type=int, default=usable_cpus(), help="CPU threads in all (split over N)")
    p.add_argument("--workers", type=int, default=1, help="loader workers per process")
    p.add_argument("--amp-level", default="O1", help="O0 fp32 | O1 autocast (bf16 where the CPU has it)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_shapes_dataset(Path(tmp) / "data", args.images, 20, size=args.img_size, seed=0, num_classes=5,
                                   progress=False)
        one = run(1, args, data, Path(tmp) / "one")
        many = run(args.processes, args, data, Path(tmp) / "many")
    print(f"{args.model}, {args.img_size} px, global batch {args.global_batch}, {args.threads} threads in all, "
          f"amp {args.amp_level}, {args.workers} loader worker(s) per process")
    print(f"| processes | img/s (epoch 2) |\n|---|---|\n| 1 | {one:.1f} |\n| {args.processes} | {many:.1f} "
          f"({many / one:.2f}x) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
