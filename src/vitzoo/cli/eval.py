"""`vitzoo eval`: evaluate a checkpoint on the validation split of a config's dataset.

Takes the training command's arguments (``--config YAML`` plus any ``--key value``), as the seeds' eval.py
does, with ``--pretrained CKPT`` naming the weights. Prints the seeds' line
``eval results: {'Loss': x, 'Top1-Acc': y, 'Top5-Acc': z}``; ``--json FILE`` also writes per-class accuracy,
the confusion matrix (rows = true class) and the class names. Under ``torchrun`` every process evaluates
its share and the sums are all-reduced, giving exactly the single-process numbers.

Preprocessing: the checkpoint's recorded ``data_config`` with the config's explicit overrides
(input_size, crop_pct, interpolation, imagenet_default_mean_and_std) on top.
"""
from __future__ import annotations

import json
import sys

import torch

from vitzoo.checkpoint import atomic_write_text
from vitzoo.config import RunConfig, dump_config, parse_args
from vitzoo.config import build_parser as config_parser
from vitzoo.config.schema import default_of
from vitzoo.data import build_dataset, build_loader, resolve_data_config
from vitzoo.engine import dist
from vitzoo.engine.loop import evaluate, format_eval
from vitzoo.errors import UserError
from vitzoo.models import load_model
from vitzoo.precision import resolve_precision


def build_parser():
    p = config_parser(prog="vitzoo eval", description=__doc__.split("\n\n")[0] + " " +
                      "Give the weights with --pretrained CKPT; any config key can be given as --key value.")
    g = p.add_argument_group("evaluation")
    g.add_argument("--json", dest="json_out", default=None, metavar="FILE",
                   help="also write metrics, per-class accuracy, confusion matrix and class names to FILE")
    g.add_argument("--use-ema", "--use_ema", dest="use_ema_weights", action="store_true",
                   help="evaluate the checkpoint's EMA weights (same as --use_ema_for_eval true)")
    return p


def _load(cfg: RunConfig, use_ema: bool, device: torch.device):
    """(model, meta): the architecture a vitzoo checkpoint records, else the config's ``model``."""
    path = cfg.pretrained
    if str(path).endswith(".npz"):
        return load_model(path, arch=cfg.model, use_ema=use_ema, device=str(device))
    try:
        model, meta = load_model(path, arch=None, use_ema=use_ema, device=str(device))
    except UserError as e:
        if "architecture" not in str(e) or not cfg.model:
            raise
        # an official release file: the config's model names the architecture
        model, meta = load_model(path, arch=cfg.model, use_ema=use_ema, device=str(device))
    if meta.get("arch") and cfg.model and cfg.model != default_of("model") and meta["arch"] != cfg.model:
        print(f"note: {path} holds a {meta['arch']} (config model {cfg.model} ignored)", file=sys.stderr)
    return model, meta


def per_class_report(confusion: torch.Tensor, class_names: list[str]) -> list[dict]:
    rows = []
    for i, row in enumerate(confusion.tolist()):
        support = int(sum(row))
        name = class_names[i] if i < len(class_names) else str(i)
        rows.append({"index": i, "name": name, "support": support,
                     "accuracy": round(row[i] / support, 6) if support else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_args(argv, parser=build_parser())
    if ns.dry_run:
        print(dump_config(cfg), end="")
        return 0
    if not cfg.pretrained:
        raise UserError("vitzoo eval needs the weights: --pretrained CKPT (or 'pretrained:' in the config)")
    _rank, world, _local, device = dist.init_distributed(cfg.device)
    try:
        use_ema = bool(ns.use_ema_weights or cfg.use_ema_for_eval)
        model, meta = _load(cfg, use_ema, device)
        data_config = resolve_data_config(cfg, meta.get("data_config") or model)
        classes = [str(c) for c in meta.get("class_names") or []] or None
        dataset = build_dataset(cfg, "val", data_config=data_config, classes=classes)
        loader = build_loader(cfg, dataset, "val", data_config=data_config, distributed=world > 1)

        precision = resolve_precision(cfg.amp_level, cfg.amp_dtype, device)
        model = precision.cast_model(model)
        results = evaluate(model, loader, device, precision=precision, num_classes=model.num_classes,
                           confusion=bool(ns.json_out), channels_last=cfg.channels_last and device.type == "cuda")
        if dist.is_main():
            print(format_eval(results), flush=True)
            bad = getattr(dataset, "bad_files", {})
            if bad:
                print(f"note: {len(bad)} unreadable image(s) were replaced by the next sample", file=sys.stderr)
            if ns.json_out:
                _write_json(ns.json_out, results, dataset, meta, cfg, model)
    finally:
        dist.cleanup()
    return 0


def _write_json(path: str, results: dict, dataset, meta: dict, cfg: RunConfig, model) -> None:
    names = [str(c) for c in (getattr(dataset, "classes", None) or meta.get("class_names") or [])]
    conf = results["confusion"]
    out = {"Loss": results["Loss"], "Top1-Acc": results["Top1-Acc"], "Top5-Acc": results["Top5-Acc"],
           "num_samples": int(conf.sum()), "checkpoint": str(cfg.pretrained), "arch": meta.get("arch") or model.arch,
           "class_names": names, "per_class": per_class_report(conf, names),
           "confusion_matrix": conf.tolist()}
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
