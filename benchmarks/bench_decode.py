"""The input side of ``vitzoo infer`` alone: PIL in loader workers vs JPEG decoding on the device (issue 12).

Two pipelines over the same folder of JPEGs, both feeding no model:

- **cpu** (``--decode cpu``): ``--workers`` loader processes decode with PIL and apply timm's eval
  transform (``build_eval_transform``: resize the short side, centre crop, normalise); the float batch is
  copied to ``--device``, as ``vitzoo infer`` copies it before the forward.
- **device** (``--decode device``): the workers only read the bytes; each batch is decoded in one
  ``torchvision.io.decode_jpeg`` call on ``--device`` (nvJPEG on CUDA, libjpeg-turbo on a CPU) and
  resized, cropped and normalised there (:mod:`vitzoo.data.device.jpeg`).

Both go through ``vitzoo.inference.predict.iter_batches``, the loop the command runs, so a round is what one
``vitzoo infer`` run spends on its input, loader start-up included (use enough images that it is small).
Rounds alternate (cpu, device, cpu, ...) after one warm-up of each (page cache, nvJPEG start-up); the best
round of each is reported. The photos are generated: smooth noise at three scales plus grain, 500x375
JPEG quality 90 by default, about ImageNet's mean size in pixels and bytes (~100 KB), so decoding costs
what it costs on real photos. A parity line compares the two paths' preprocessed pixels on the first
images (on CUDA: nvJPEG + Pillow's resize arithmetic vs libjpeg + PIL's; on a CPU they are equal).

    python benchmarks/bench_decode.py --num-images 4096 --device cuda --workers 8 --batch-size 256
    python benchmarks/bench_decode.py --num-images 64 --device cpu --workers 2 --batch-size 32   # smoke
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from vitzoo.data import build_eval_transform, load_image
from vitzoo.data.device.jpeg import DevicePreprocess, EncodedFiles
from vitzoo.engine.dist import resolve_device
from vitzoo.inference.predict import iter_batches
from vitzoo.models.registry import get_entry


def photo(args: tuple[int, int, int]) -> Image.Image:
    """Smooth colour fields at three scales plus luma grain: a q90 JPEG of it is ~100 KB at 500x375."""
    w, h, seed = args
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 1.0), (24, 0.5), (160, 0.35)):
        grid = (rng.random((cells * 3 // 4 + 1, cells + 1, 3)) * 255).astype(np.uint8)
        out += amp * (np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32) - 128)
    out += rng.normal(0, 20, (h, w, 1))
    return Image.fromarray(np.clip(out / 1.5 + 128, 0, 255).astype(np.uint8))


def write_photo(job: tuple[Path, int, int, int]) -> int:
    path, w, h, seed = job
    photo((w, h, seed)).save(path, quality=90)
    return path.stat().st_size


def write_folder(root: Path, n: int, width: int, height: int) -> float:
    """``n`` JPEGs in ``root`` (written in parallel); returns their mean size in KB."""
    jobs = [(root / f"{i:06d}.jpg", width, height, i) for i in range(n)]
    with Pool(min(len(os.sched_getaffinity(0)), 16)) as pool:
        sizes = pool.map(write_photo, jobs, chunksize=8)
    return sum(sizes) / len(sizes) / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # host-device sync: the timed work must be finished, not queued


def one_round(paths: list[Path], data_config: dict, device: torch.device, args, on_device) -> float:
    """Images per second through ``iter_batches`` (the ``vitzoo infer`` loop) with the batch left on ``device``."""
    transform = build_eval_transform(data_config)
    bad: list[tuple[str, str]] = []
    sync(device)
    n, t0 = 0, time.perf_counter()
    for names, x in iter_batches(paths, transform, args.batch_size, bad, args.workers, on_device):
        x = x.to(device)  # the cpu path's copy, as infer's ``run`` makes it; a no-op on the device path
        n += len(names)
    sync(device)
    if bad or n != len(paths):
        raise SystemExit(f"{len(bad)} images failed: {bad[:3]}")
    return n / (time.perf_counter() - t0)


def parity(paths: list[Path], data_config: dict, device: torch.device) -> str:
    """Max / mean |device - PIL| of the preprocessed pixels, in 8-bit grey levels."""
    pil = torch.stack([build_eval_transform(data_config)(load_image(p)) for p in paths])
    items = DevicePreprocess(data_config, device)([EncodedFiles(paths)[i] for i in range(len(paths))])
    ours = torch.stack([x for _, x, _ in items]).cpu()
    levels = ((ours - pil) * torch.tensor(data_config["std"]).view(1, 3, 1, 1) * 255).abs()
    return f"max {levels.max():.2f}, mean {levels.mean():.3f} grey levels over {len(paths)} images"


def machine(device: torch.device, workers: int) -> str:
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{cpu} ({len(os.sched_getaffinity(0))} cores){gpu}; {workers} loader workers; "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=1024)
    ap.add_argument("--size", type=int, default=500, help="width of the generated photos; height is 3/4 of it")
    ap.add_argument("--model", default="deit_small_patch16_224", help="whose eval preprocessing to run")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--workers", type=int, default=4, help="loader processes, both paths")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per path (alternating); best reported")
    args = ap.parse_args()

    device = resolve_device(args.device)
    data_config = get_entry(args.model).data_config
    on_device = DevicePreprocess(data_config, device)
    with tempfile.TemporaryDirectory() as tmp:
        kb = write_folder(Path(tmp), args.num_images, args.size, args.size * 3 // 4)
        paths = sorted(Path(tmp).iterdir())
        pipelines = {"cpu": None, "device": on_device}
        rates: dict[str, list[float]] = {name: [] for name in pipelines}
        for name, preprocess in pipelines.items():
            one_round(paths, data_config, device, args, preprocess)  # warm-up
        for _ in range(args.rounds):
            for name, preprocess in pipelines.items():
                rates[name].append(one_round(paths, data_config, device, args, preprocess))
        close = parity(paths[:min(64, len(paths))], data_config, device)

    size = data_config["input_size"][-1]
    print(f"machine: {machine(device, args.workers)}")
    print(f"{args.num_images} JPEGs {args.size}x{args.size * 3 // 4} q90 (mean {kb:.0f} KB) -> {args.model} eval "
          f"preprocessing ({size} px, crop_pct {data_config['crop_pct']}, {data_config['interpolation']}), "
          f"batch {args.batch_size}, best of {args.rounds} alternating rounds\n")
    print("| pipeline | img/s | rounds |\n|---|---:|---|")
    what = {"cpu": f"cpu: PIL + eval transform in {args.workers} workers, batch copied to {device}",
            "device": f"device: {args.workers} workers read bytes; decode_jpeg + resize on {device}"}
    for name, r in rates.items():
        print(f"| {what[name]} | {max(r):.0f} | {', '.join(f'{v:.0f}' for v in r)} |")
    print(f"\nratio device / cpu: {max(rates['device']) / max(rates['cpu']):.2f}x")
    print(f"parity (device vs PIL preprocessing): {close}")


if __name__ == "__main__":
    main()
