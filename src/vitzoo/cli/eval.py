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

import json
import sys

import torch

from vitzoo.checkpoint import atomic_write_text
from vitzoo.config import RunConfig, dump_config, parse_args
from vitzoo.config import build_parser as config_parser
from vitzoo.config.schema import default_of
from vitzoo.constants import HALF_MEAN, IMAGENET_MEAN
from vitzoo.data import build_dataset, build_loader, check_split_data, resolve_data_config
from vitzoo.data.transforms import PREPROCESSING_KEYS
from vitzoo.engine import dist
from vitzoo.engine.loop import evaluate, format_eval
from vitzoo.errors import UserError
from vitzoo.models import load_model
from vitzoo.precision import FP32, config_precision_choice, inference_precision


def build_parser():
    p = config_parser(prog="vitzoo eval", description=__doc__.split("\n\n")[0] + " " +
                      "Give the weights with --pretrained CKPT; any config key can be given as --KEY VALUE.")
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
    if names_other_model(cfg, meta):
        print(f"note: {path} holds a {meta['arch']} (config model {cfg.model} ignored, and the config "
              "file's preprocessing with it)", file=sys.stderr)
    return model, meta


def names_other_model(cfg: RunConfig, meta: dict) -> bool:
    """Does the config name another model than the checkpoint holds (whose architecture wins)?"""
    return bool(meta.get("arch") and cfg.model and cfg.model != default_of("model") and meta["arch"] != cfg.model)


def eval_data_config(cfg: RunConfig, meta: dict, model) -> tuple[dict, str]:
    """The preprocessing to evaluate with, and where it came from (for the one line the user sees).

    Why the checkpoint's: a config written for another model, or a default, silently changed the
    numbers (the demo checkpoint scored 0.982 instead of its 0.958 under another config's preprocessing).
    So a key overrides it only when the user set it: on the command line, or in a config file written
    for this model (one that names another model is ignored with its model).
    """
    recorded = meta.get("data_config")
    base = resolve_data_config(cfg, recorded or model, keys=())
    chosen = _keys_set_by_user(cfg, meta)
    data_config = resolve_data_config(cfg, base, keys=chosen)
    _check_input_size(cfg, data_config, model)
    changed = [k for k in chosen if resolve_data_config(cfg, base, keys=(k,)) != base]  # worth naming
    origin = "the checkpoint's" if recorded else "the model's defaults: the file records none"
    origin += "".join(f"; {k} from {_source(cfg.explicit[k])}" for k in changed)
    return data_config, origin


def _keys_set_by_user(cfg: RunConfig, meta: dict) -> list[str]:
    """The preprocessing keys given a value on the command line, or in a config file for this model."""
    other_model = names_other_model(cfg, meta)
    return [k for k in PREPROCESSING_KEYS if getattr(cfg, k) is not None and k in cfg.explicit
            and (cfg.explicit[k] == "command line" or not other_model)]


def _check_input_size(cfg: RunConfig, data_config: dict, model) -> None:
    """A size the model was not built for is the user's conflict: one line, not a forward-pass traceback."""
    built_for = tuple(model.data_config["input_size"][-2:])
    size = tuple(data_config["input_size"][-2:])
    if size != built_for:
        where = _source(cfg.explicit.get("input_size", "the checkpoint"))
        raise UserError(f"input_size {size[0]}x{size[1]} ({where}) does not fit {cfg.pretrained}: its model "
                        f"takes {built_for[0]}x{built_for[1]} images; leave input_size out to use the "
                        "checkpoint's preprocessing")


def _source(where: str) -> str:
    return "the command line" if where == "command line" else where


def describe_preprocessing(data_config: dict) -> str:
    """``input 32x32, crop_pct 1.0, bicubic, ImageNet mean/std``."""
    mean = tuple(data_config["mean"])
    stats = {IMAGENET_MEAN: "ImageNet", HALF_MEAN: "0.5"}.get(mean, f"{mean} / {tuple(data_config['std'])}")
    _, h, w = data_config["input_size"]
    return f"input {h}x{w}, crop_pct {data_config['crop_pct']}, {data_config['interpolation']}, {stats} mean/std"


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
    _rank, world, _local, device = dist.init_distributed(cfg.device)
    try:
        use_ema = bool(ns.use_ema_weights or cfg.use_ema_for_eval)
        model, meta = _load(cfg, use_ema, device)
        data_config, origin = eval_data_config(cfg, meta, model)
        if dist.is_main():
            print(f"preprocessing: {describe_preprocessing(data_config)} ({origin})", file=sys.stderr)
        classes = [str(c) for c in meta.get("class_names") or []] or None
        dataset = build_dataset(cfg, "val", data_config=data_config, classes=classes)
        loader = build_loader(cfg, dataset, "val", data_config=data_config, distributed=world > 1)

        precision = _precision(cfg, model, device, world)
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
                print(f"wrote {ns.json_out} (metrics, per-class accuracy, confusion matrix)", file=sys.stderr)
    finally:
        dist.cleanup()
    return 0


def _precision(cfg: RunConfig, model, device: torch.device, world: int):
    """The config's amp_level / amp_dtype through the inference policy (auto = bf16 weights where the
    device has bf16 units and it measures faster). Under torchrun bf16 only if every process chose it."""
    precision = inference_precision(config_precision_choice(cfg.amp_level, cfg.amp_dtype), device, model,
                                    announce=world == 1)
    if world > 1:
        agree = torch.tensor([float(precision.weights is not None)], device=device)
        if dist.all_reduce_sum(agree).item() < world:
            precision = FP32
        if dist.is_main():
            print(f"precision: {precision.name}", file=sys.stderr, flush=True)
    return precision


def _write_json(path: str, results: dict, dataset, meta: dict, cfg: RunConfig, model) -> None:
    names = [str(c) for c in (getattr(dataset, "classes", None) or meta.get("class_names") or [])]
    conf = results["confusion"]
    out = {"Loss": results["Loss"], "Top1-Acc": results["Top1-Acc"], "Top5-Acc": results["Top5-Acc"],
           "num_samples": int(conf.sum()), "checkpoint": str(cfg.pretrained), "arch": meta.get("arch") or model.arch,
           "class_names": names, "per_class": per_class_report(conf, names),
           "confusion_matrix": conf.tolist()}
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
