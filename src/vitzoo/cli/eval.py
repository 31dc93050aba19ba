"""`vitzoo eval`: evaluate a checkpoint on the validation split of a config's dataset.

Takes the training command's arguments (``--config YAML`` plus any ``--key value``), as the seeds' eval.py
does, with ``--pretrained CKPT`` naming the weights. Prints the seeds' line
``eval results: {'Loss': x, 'Top1-Acc': y, 'Top5-Acc': z}``; ``--json FILE`` also writes per-class accuracy,
the confusion matrix (rows = true class) and the class names. Under ``torchrun`` every process evaluates
its share and the sums are all-reduced, giving exactly the single-process numbers.

Preprocessing: the checkpoint's recorded ``data_config`` (what the model was trained and validated with);
a preprocessing key (input_size, crop_pct, interpolation, imagenet_default_mean_and_std) overrides it only
when the user set it, in the YAML or on the command line, never by default. One line on stderr says which
was used; an input size the model cannot take is a one-line error.
"""
from __future__ import annotations

import copy
import json
import sys

import torch

from vitzoo.checkpoint import atomic_write_text
from vitzoo.config import RunConfig, dump_config, parse_args
from vitzoo.config import build_parser as config_parser
from vitzoo.data import build_dataset, build_loader, check_split_data
from vitzoo.data.datasets import ImageFiles
from vitzoo.data.device.jpeg import DECODE_CHOICES, DECODE_HELP, choose_preprocess, eval_batches
from vitzoo.data.loader import OrderedSplitSampler, usable_cpus
from vitzoo.engine import dist
from vitzoo.engine.loop import evaluate, format_eval
from vitzoo.errors import UserError
from vitzoo.inference.evaluate import (
    add_calibration_args,
    calibrate,
    check_calibration,
    describe_change,
    describe_preprocessing,
    eval_data_config,
    eval_precision,
    load_for_eval,
)
from vitzoo.runtime.precision import config_precision_choice


def build_parser():
    p = config_parser(prog="vitzoo eval", description=__doc__.split("\n\n")[0] + " " +
                      "Give the weights with --pretrained CKPT; any config key can be given as --KEY VALUE.")
    g = p.add_argument_group("evaluation")
    g.add_argument("--json", dest="json_out", default=None, metavar="FILE",
                   help="also write metrics, per-class accuracy, confusion matrix and class names to FILE")
    g.add_argument("--use-ema", "--use_ema", dest="use_ema_weights", action="store_true",
                   help="evaluate the checkpoint's EMA weights (same as --use_ema_for_eval true)")
    add_calibration_args(g, "--amp_dtype int8")
    g.add_argument("--decode", default="auto", choices=DECODE_CHOICES,
                   help=DECODE_HELP + "; folder datasets only; an unreadable file is then left out of the metrics "
                        "(cpu: replaced by the next sample) (default: %(default)s)")
    return p


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
    check_split_data(cfg, "val")  # before the weights load: a wrong path fails at once
    check_calibration(ns, config_precision_choice(cfg.amp_level, cfg.amp_dtype), "--amp_dtype int8")
    rank, world, _local, device = dist.init_distributed(cfg.device)
    try:
        use_ema = bool(ns.use_ema_weights or cfg.use_ema_for_eval)
        model, meta = load_for_eval(cfg, use_ema, device)
        data_config, origin = eval_data_config(cfg, meta, model)
        if dist.is_main():
            print(f"preprocessing: {describe_preprocessing(data_config)} ({origin})", file=sys.stderr)
        classes = [str(c) for c in meta.get("class_names") or []] or None
        dataset = build_dataset(cfg, "val", data_config=data_config, classes=classes)
        on_device = choose_preprocess(ns.decode, data_config, device, reads_files=isinstance(dataset, ImageFiles),
                                      announce=dist.is_main())
        dropped: list[tuple[str, str]] = []

        def batches(dropped: list):  # the reference pass drops the same files: counted once
            if on_device is None:
                return build_loader(cfg, dataset, "val", data_config=data_config, distributed=world > 1)
            return eval_batches(dataset.files(), on_device, cfg.eval_batch, min(cfg.num_workers, usable_cpus()),
                                OrderedSplitSampler(dataset, world, rank), dropped)

        precision = eval_precision(cfg, model, device, world)
        fp32_model = copy.deepcopy(model) if precision.int8_weight_bits else None
        model = precision.cast_model(model)
        calibrate(model, precision, ns, data_config, announce=dist.is_main())
        results = evaluate(model, batches(dropped), device, precision=precision, num_classes=model.num_classes,
                           confusion=bool(ns.json_out), channels_last=cfg.channels_last and device.type == "cuda")
        # what int8 did to the metrics, as eval-onnx says for an int8 file: the fp32 model on the same images
        fp32 = evaluate(fp32_model, batches([]), device, num_classes=model.num_classes) if fp32_model else None
        if dist.is_main():
            print(format_eval(results), flush=True)
            if fp32 is not None:
                print(describe_change("fp32 on the same images", fp32, results), flush=True)
            bad = getattr(dataset, "bad_files", {})
            if bad:
                print(f"note: {len(bad)} unreadable image(s) were replaced by the next sample", file=sys.stderr)
            if dropped:
                print(f"note: {len(dropped)} unreadable image(s) left out of the metrics, e.g. {dropped[0][0]}: "
                      f"{dropped[0][1]}", file=sys.stderr)
            if ns.json_out:
                _write_json(ns.json_out, results, dataset, meta, cfg, model)
                print(f"wrote {ns.json_out} (metrics, per-class accuracy, confusion matrix)", file=sys.stderr)
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
