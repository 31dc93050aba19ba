"""``vitzoo demo --out DIR`` (``make demo``): the whole loop on a CPU, no download.

1. write the generated shapes dataset (``vitzoo make-dataset shapes``) under ``DIR/shapes``;
2. train the small DeiT of ``configs/demo_shapes.yaml`` on it (``vitzoo train``) into ``DIR/run``;
3. evaluate the best checkpoint again from the file, as ``vitzoo eval`` would;
4. print where the checkpoint, logs, metrics and TensorBoard files are, and the next commands to try.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from vitzoo.checkpoint import RunFolders
from vitzoo.config import load_config
from vitzoo.data import build_dataset, build_loader, make_shapes_dataset
from vitzoo.data.synthetic import shapes_dataset_exists
from vitzoo.engine.loop import evaluate, format_eval
from vitzoo.engine.trainer import train
from vitzoo.errors import UserError
from vitzoo.models import load_model


def _demo_config() -> Path:
    """configs/demo_shapes.yaml of the source tree (src layout), else of the current folder."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        path = root / "configs" / "demo_shapes.yaml"
        if path.is_file():
            return path
    raise UserError("configs/demo_shapes.yaml not found: run the demo from the vitzoo source folder")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="folder for the dataset and the run (default demo_out)")
    p.add_argument("--config", default=None, help="training config (default configs/demo_shapes.yaml)")
    p.add_argument("--num-train", type=int, default=2000, help="generated training images (default 2000)")
    p.add_argument("--num-val", type=int, default=500, help="generated validation images (default 500)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.epilog = "Other options go to vitzoo train, e.g. --batch_size 32 --device cpu."
    return p


def main(argv: list[str] | None = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)

    out = Path(args.out)
    config = Path(args.config) if args.config else _demo_config()
    probe = load_config(str(config), [])
    t0 = time.time()
    size = probe.input_size or 32
    settings = (out / "shapes", args.num_train, args.num_val, size, 0, probe.num_classes)
    reused = shapes_dataset_exists(*settings)
    data = make_shapes_dataset(*settings, progress=False)
    print(f"[1/3] dataset: {args.num_train} train + {args.num_val} val images of {probe.num_classes} shapes "
          f"in {data}{' (reused)' if reused else ''}", flush=True)
    extra = ["--data_path", str(data), "--output_dir", str(out / "run")]
    resumed = any(a.partition("=")[0] in ("--resume",) for a in overrides)
    if not resumed:  # the demo starts its run again each time (a run folder is otherwise refused)
        extra.append("--overwrite")
    if args.epochs is not None:
        extra += ["--epochs", str(args.epochs)]
    cfg = load_config(str(config), extra + list(overrides))
    replacing = f" (replacing the earlier run in {cfg.output_dir})" if cfg.overwrite and \
        RunFolders.of(cfg).run_record() else ""
    print(f"[2/3] training {cfg.model} ({config}) for {cfg.epochs} epochs{replacing}", flush=True)
    summary = train(cfg)
    best = summary["best_checkpoint"] or summary["last_checkpoint"]
    model, meta = load_model(best)
    val = build_dataset(cfg, "val", data_config=meta["data_config"], classes=meta["class_names"])
    metrics = evaluate(model, build_loader(cfg, val, "val"), "cpu")
    print(f"[3/3] {format_eval(metrics)}  ({best})")
    minutes = (time.time() - t0) / 60
    run = Path(summary["output_dir"])
    print(f"\ndone in {minutes:.1f} min: validation top-1 {metrics['Top1-Acc']:.1%} "
          f"(chance {1 / len(meta['class_names']):.0%})")
    print(f"  best checkpoint : {best}")
    print(f"  last checkpoint : {summary['last_checkpoint']}")
    print(f"  log file        : {summary['log_file']}")
    print(f"  metrics         : {run / 'metrics.jsonl'} (and metrics.csv)")
    print(f"  tensorboard     : tensorboard --logdir {RunFolders.of(cfg).tensorboard}")
    print("next:")
    print(f"  vitzoo eval --config {config} --data_path {data} --pretrained {best}")
    print(f"  vitzoo infer {data / 'val'} --checkpoint {best}")
    print(f"  vitzoo plot {run / 'metrics.jsonl'}")
    return 0

