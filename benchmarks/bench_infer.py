"""End to end: ``vitzoo infer`` of a folder of JPEGs vs a plain timm fp32 script doing the same work.

Both sides, in one process, alternating over ``--rounds`` rounds (median reported, and the median of the
per-round ratios): build the model and load the same weights from a checkpoint, decode + preprocess every
JPEG of the folder, run the model, take the arg-max class. The timm script is what a user writes by hand:
``timm.create_model`` + ``timm.data.create_transform`` + a ``DataLoader`` with ``--workers`` workers and
batch ``--batch-size``, fp32, ``torch.inference_mode``. Ours is the ``vitzoo infer`` command itself (its
defaults: precision policy, loader workers, batch size), called in-process with stdout discarded; its
precision decision is forgotten before each round, as a fresh process forgets it. The policy's timing of
the model is kept on disk between runs (``timing_cache.cache_file``, here in the temporary folder): round 1
pays it as a user's first run does, later rounds read it as a user's later runs do. The images are generated (``--num-images`` JPEGs, ``--size`` px, smooth random colour
fields); the weights are timm's random init, copied into the vitzoo checkpoint, so the two sides compute
the same function and the agreement of their predictions is printed.

    python benchmarks/bench_infer.py --model deit_small_patch16_224 --num-images 256 --rounds 3
    python benchmarks/bench_infer.py --photos 4000x3000 --num-images 64 --rounds 3
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_data import photo_size

from vitzoo.bench import measure as bench
from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import main as vitzoo_cli
from vitzoo.data.synthetic import photo_like
from vitzoo.models import create_model
from vitzoo.runtime import precision


def make_jpegs(folder: Path, n: int, size: int, photos: tuple[int, int] | None = None) -> list[Path]:
    """``n`` JPEGs: smooth random colour fields of ``size`` px, or photo-like ones of ``photos`` = (w, h)
    (``data.synthetic.photo_like``: the detail a camera picture has)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        if photos:
            img = photo_like(*photos, seed=i)
        else:
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # upsampled: JPEG-like smooth content
            img = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        path = folder / f"img{i:04d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


class Files(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def timm_script(name: str, weights: Path, paths: list[Path], batch_size: int, workers: int,
                device: str = "cpu") -> dict:
    """The plain timm fp32 script (model build and weight load included, as in ours)."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(name, pretrained=False).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model = model.to(device)
    transform = create_transform(**resolve_data_config({}, model=model))
    loader = torch.utils.data.DataLoader(Files(paths, transform), batch_size=batch_size, num_workers=workers,
                                         pin_memory=device != "cpu")
    preds = []
    with torch.inference_mode():
        for x in loader:
            preds += model(x.to(device)).argmax(1).tolist()
    return {str(p): c for p, c in zip(paths, preds)}


def vitzoo_infer(ckpt: Path, folder: Path, out: Path, extra: list[str]) -> dict:
    precision._decided.clear()  # every round decides (and measures) anew, as a fresh process does
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = vitzoo_cli(["infer", str(folder), "--checkpoint", str(ckpt), "--output", str(out), *extra])
    if rc:
        raise SystemExit(f"vitzoo infer failed: {err.getvalue()}")
    vitzoo_infer.last_stderr = err.getvalue()
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--num-images", type=int, default=256)
    ap.add_argument("--size", type=int, default=256, help="JPEG side in px (resized/cropped to 224 by both)")
    ap.add_argument("--photos", type=photo_size, default=None, metavar="WxH", help="photo-like JPEGs of this size instead "
                    "(e.g. 4000x3000, a phone camera's), where vitzoo infer decodes at a reduced JPEG scale")
    ap.add_argument("--batch-size", type=int, default=32, help="the timm script's batch")
    ap.add_argument("--workers", type=int, default=2, help="the timm script's DataLoader workers")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="where both sides run the model (cuda: give vitzoo infer "
                    "'--device cuda' in --infer-args too)")
    ap.add_argument("--infer-args", default="", help="extra options for vitzoo infer (e.g. '--precision fp32')")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    info = bench.machine_info()
    print(f"# {info['cpu']} (flags: {' '.join(info['cpu_flags'])}), torch {info['torch']}, timm "
          f"{info.get('timm')}, threads {info['threads']}, {args.device}"
          f"{', ' + info['gpu'] if args.device != 'cpu' and 'gpu' in info else ''}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["VITZOO_CACHE_DIR"] = str(tmp / "cache")  # round 1 measures, as a first run does
        paths = make_jpegs(tmp / "images", args.num_images, args.size, args.photos)
        import timm

        torch.manual_seed(0)
        ref = timm.create_model(args.model, pretrained=False).eval()
        torch.save(ref.state_dict(), tmp / "timm.pth")
        ours = create_model(args.model)
        ours.load_state_dict(ref.state_dict())
        dc = {k: list(v) if isinstance(v, tuple) else v for k, v in ours.data_config.items()}
        ckpt = tmp / "ours.pt"
        save_checkpoint(ckpt, {"model": ours.state_dict(), "meta": {
            "arch": ours.arch, "model_kwargs": ours.model_kwargs, "num_classes": ours.num_classes,
            "data_config": dc}})
        del ref, ours
        sides = {
            "timm": lambda: timm_script(args.model, tmp / "timm.pth", paths, args.batch_size, args.workers,
                                        args.device),
            "vitzoo": lambda: vitzoo_infer(ckpt, tmp / "images", tmp / "pred.json", args.infer_args.split()),
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        preds = {}
        for r in range(args.rounds):
            for key in (("timm", "vitzoo") if r % 2 == 0 else ("vitzoo", "timm")):
                t0 = time.perf_counter()
                preds[key] = sides[key]()
                times[key].append(time.perf_counter() - t0)
                print(f"# round {r + 1}: {key} {times[key][-1]:.1f} s", flush=True)
        chosen = [line for line in vitzoo_infer.last_stderr.splitlines() if line.startswith(("precision:", "decode:"))]
        agree = sum(preds["timm"][k] == preds["vitzoo"][k] for k in preds["timm"]) / len(preds["timm"])
    t_timm, t_ours = statistics.median(times["timm"]), statistics.median(times["vitzoo"])
    ratio = statistics.median(a / b for a, b in zip(times["timm"], times["vitzoo"]))
    n = args.num_images
    print(f"vitzoo infer {args.infer_args}: {t_ours:.1f} s ({n / t_ours:.1f} img/s; {'; '.join(chosen)})")
    print(f"timm fp32 script ({args.workers} workers, batch {args.batch_size}): {t_timm:.1f} s ({n / t_timm:.1f} img/s)")
    print(f"speed-up (median of per-round timm time / vitzoo time): {ratio:.2f}x; same top-1 class on "
          f"{100 * agree:.1f}% of the images")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "times": times, "ratio": ratio,
                                               "agreement": agree}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
