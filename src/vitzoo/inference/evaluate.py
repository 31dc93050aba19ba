"""Loading a checkpoint to evaluate it: which model, which preprocessing, which precision.

Shared by the commands that run a trained or pre-trained network over a labeled split without training
it: ``vitzoo eval``, ``vitzoo linprobe`` and ``vitzoo knn`` (and, for int8's calibration, ``vitzoo infer``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vitzoo.config import RunConfig
from vitzoo.config.schema import default_of
from vitzoo.constants import HALF_MEAN, IMAGENET_MEAN
from vitzoo.data import image_batches, resolve_data_config
from vitzoo.data.transforms import PREPROCESSING_KEYS
from vitzoo.engine import dist
from vitzoo.errors import UserError
from vitzoo.models import load_model
from vitzoo.runtime.packed import calibrate_int8
from vitzoo.runtime.precision import FP32, Precision, config_precision_choice, inference_precision


def load_for_eval(cfg: RunConfig, use_ema: bool, device: torch.device):
    """(model, meta): the architecture a vitzoo checkpoint records, else the config's ``model``.

    A model named on the command line is the user's choice: one that the checkpoint records otherwise is
    an error (load_model says so); a config file's, written for any model, gives way to the checkpoint's.
    """
    path = cfg.pretrained
    if str(path).endswith(".npz") or cfg.explicit.get("model") == "command line":
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


def describe_change(reference: str, ref: dict, results: dict) -> str:
    """One line: how top-1 / top-5 moved from ``ref``'s metrics (the reference: fp32, another file) to
    ``results``'s, on the same images."""
    change = 100 * (results["Top1-Acc"] - ref["Top1-Acc"])
    return (f"vs {reference}: top-1 {round(ref['Top1-Acc'], 6)} -> {round(results['Top1-Acc'], 6)} ({change:+.2f} points), "
            f"top-5 {round(ref['Top5-Acc'], 6)} -> {round(results['Top5-Acc'], 6)}")


def eval_precision(cfg: RunConfig, model, device: torch.device, world: int):
    """The config's amp_level / amp_dtype through the inference policy (auto = bf16 weights where the
    device has bf16 units and it measures faster). Under torchrun bf16 only if every process chose it."""
    precision = inference_precision(config_precision_choice(cfg.amp_level, cfg.amp_dtype), device, model,
                                    announce=world == 1)
    if world > 1:
        agree = torch.tensor([float(precision.weights is not None or bool(precision.int8_weight_bits))],
                             device=device)
        if dist.all_reduce_sum(agree).item() < world:
            precision = FP32
        if dist.is_main():
            print(f"precision: {precision.describe()}", file=sys.stderr, flush=True)
    return precision


CALIBRATION_BATCH = 16  # images per calibration forward


def add_calibration_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, int8_flag: str) -> None:
    parser.add_argument("--calibration-data", "--calibration_data", dest="calibration_data", default=None,
                        metavar="FOLDER",
                        help=f"with {int8_flag}: fix the int8 layers' input ranges on these images (searched "
                             "recursively), so that an image's result no longer depends on the batch it is in; "
                             "faster too on CPUs with VNNI, the same speed without (default: each batch's own range)")
    parser.add_argument("--calibration-images", "--calibration_images", dest="calibration_images", type=int,
                        default=64, metavar="N",
                        help="at most this many calibration images, evenly spaced over the folder's sorted "
                             "images (default: %(default)s)")


def check_calibration(args: argparse.Namespace, choice: str, int8_flag: str) -> None:
    """``--calibration-data`` where it cannot apply: one line, before the weights load."""
    if args.calibration_data is None:
        return
    if choice != "int8":
        raise UserError(f"--calibration-data fixes int8's activation ranges: add {int8_flag}")
    if not Path(args.calibration_data).is_dir():
        what = "is not a folder" if Path(args.calibration_data).exists() else "no such folder"
        raise UserError(f"--calibration-data {args.calibration_data}: {what} (give a folder of calibration images)")
    if args.calibration_images < 1:
        raise UserError(f"--calibration-images must be at least 1, got {args.calibration_images}")


def calibrate(model: torch.nn.Module, precision: Precision, args: argparse.Namespace, data_config: dict,
              announce: bool = True) -> None:
    """With ``--calibration-data`` and an int8 ``precision``: calibrate ``model``'s int8 layers on those
    images (:func:`vitzoo.runtime.packed.calibrate_int8`) and say so on stderr."""
    if not precision.int8_weight_bits:
        return
    if args.calibration_data is None:
        if announce:
            print("int8: activation ranges per batch (an image's result can move slightly with its batch; "
                  "--calibration-data FOLDER fixes them)", file=sys.stderr, flush=True)
        return
    sizes: list[int] = []

    def batches():  # counted as they stream by
        for batch in image_batches(args.calibration_data, data_config, args.calibration_images, CALIBRATION_BATCH):
            sizes.append(len(batch))
            yield batch

    layers = calibrate_int8(model, batches())
    if announce:
        print(f"int8: input ranges of {layers} layer(s) calibrated on {sum(sizes)} image(s) from "
              f"{args.calibration_data} (the same for every batch)", file=sys.stderr, flush=True)
