"""Each option's rule is stated once (on its schema field) and its verdict is the one every consumer meets.

For every field with a range rule, the values at and just beyond each bound go through the command line:
the schema must accept exactly the in-range ones (with a message naming the key for the others), and every
consumer that reads options -- transforms, mixup, model kwargs, optimiser, schedule, loss, scaler, EMA,
one training step -- must then run with each accepted value without a second opinion.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.config import load_config, schema
from vitzoo.config.schema import FIELDS, KINDS, Range
from vitzoo.data import build_mixup, build_train_transform, resolve_data_config
from vitzoo.engine.build import model_kwargs
from vitzoo.engine.ema import ModelEma
from vitzoo.engine.loop import TrainStep, train_one_epoch
from vitzoo.engine.losses import build_criterion
from vitzoo.engine.optim import build_optimizer
from vitzoo.engine.scaling import build_scaler
from vitzoo.engine.schedule import build_scheduler
from vitzoo.errors import UserError
from vitzoo.models import create_model
from vitzoo.runtime.precision import resolve_precision


def _bounds(rule: Range, integer: bool) -> list[tuple[float, bool]]:
    """(value, should the schema accept it) at and just beyond each bound of ``rule``."""
    eps = 1 if integer else 1e-6
    t = rule.text
    if t.startswith(">"):
        bound = float(t.lstrip(">= "))
        return [(bound, t.startswith(">=")), (bound - eps, False), (bound + eps, True)]
    lo, hi = (float(s.strip(" [()]")) for s in t.split(","))
    return [(lo, t[0] == "["), (lo - eps, False), (lo + eps, True),
            (hi, t[-1] == "]"), (hi + eps, False), (hi - eps, True)]


CASES = [(f.name, v, ok) for f in schema() if f.metadata["rule"] is not None
         for v, ok in _bounds(f.metadata["rule"], KINDS[f.name].base == "int")]
# what the small consumer run below needs besides the option under test
BASE = ["--model", "deit_tiny_patch16_224", "--num_classes", "3", "--input_size", "16", "--epochs", "2",
        "--batch_size", "2", "--device", "cpu", "--amp_level", "O0"]


def _fmt(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(value)


def test_every_rule_is_tested():
    ruled = {f.name for f in schema() if f.metadata["rule"] is not None}
    assert ruled == {name for name, _, _ in CASES} and len(ruled) >= 40


@pytest.mark.parametrize("name, value, accepted", CASES, ids=[f"{n}={v:g}" for n, v, _ in CASES])
def test_rule_verdict_reaches_every_consumer(name, value, accepted):
    integer = KINDS[name].base == "int"
    if integer and not float(value).is_integer():
        pytest.skip("integer option")
    args = [*BASE, f"--{name}", _fmt(value, integer)]
    if name == "epochs" and value < 1:
        args += ["--warmup_epochs", "0", "--cooldown_epochs", "0"]
    if not accepted:
        with pytest.raises(UserError, match=rf"'{name}' \(command line\) must be"):
            load_config(None, args)
        return
    cfg = load_config(None, args)
    assert getattr(cfg, name) == pytest.approx(value) or (name == "layer_decay" and value == 1.0)
    _run_consumers(cfg)


def _run_consumers(cfg) -> None:
    """Everything that reads options, once, with ``cfg`` as the schema let it through."""
    data_config = resolve_data_config(cfg, {"input_size": (3, 16, 16), "crop_pct": 0.9, "mean": (0.5,) * 3,
                                            "std": (0.5,) * 3, "interpolation": "bicubic"})
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), np.uint8))
    x = torch.stack([build_train_transform(cfg, data_config)(img) for _ in range(2)])
    size = cfg.input_size  # a patch that fits: the image/patch rule is the model's (create_model checks it)
    model = create_model(cfg.model, **{**model_kwargs(cfg), "patch_size": min(8, size), "depth": 1,
                                       "embed_dim": 24, "num_heads": 2})
    mixup = build_mixup(cfg, cfg.num_classes)
    optimizer = build_optimizer(cfg, model, cfg.scaled_lr())
    scheduler = build_scheduler(cfg, optimizer, cfg.scaled_lr(), updates_per_epoch=2)
    precision = resolve_precision(cfg.amp_level, cfg.amp_dtype, torch.device("cpu"))
    step = TrainStep(model, build_criterion(cfg, mixup is not None), optimizer, torch.device("cpu"), precision,
                     scheduler, build_scaler(precision, torch.device("cpu"), cfg.is_dynamic_loss_scale,
                                             cfg.loss_scale), mixup, cfg.clip_value, 1,
                     ModelEma(model, cfg.model_ema_decay), cfg.nonfinite_policy)
    stats = train_one_epoch(step, [(x, torch.tensor([0, cfg.num_classes - 1]))])
    assert stats["updates"] == 1 and (math.isfinite(stats["loss"]) or stats["skipped"] == 1)


@pytest.mark.parametrize("args, accepted", [
    (["--cutmix_minmax", "0.3", "0.7"], True), (["--cutmix_minmax", "0.01", "1"], True),
    (["--cutmix_minmax", "0.3", "0.3"], False),  # timm draws the box size from randint(min, max)
    (["--cutmix_minmax", "0", "0.5"], False), (["--cutmix_minmax", "0.6", "0.5"], False),
    (["--opt_betas", "0", "0.999"], True), (["--opt_betas", "0.9", "1"], False),
    (["--train_num_samples", "-1"], True), (["--train_num_samples", "0"], False),
    (["--sched", "step", "--decay_epochs", "0"], False), (["--sched", "cosine", "--decay_epochs", "0"], True),
    (["--is_dynamic_loss_scale", "false", "--loss_scale", "0"], False),
])
def test_cross_key_rules(args, accepted):
    if not accepted:
        with pytest.raises(UserError, match="config key"):
            load_config(None, [*BASE, *args])
        return
    _run_consumers(load_config(None, [*BASE, *args]))


def test_rules_are_declared_once():
    """The range of a field is its metadata, and its help does not restate a different one."""
    for f in schema():
        rule = f.metadata["rule"]
        if rule is not None:
            assert isinstance(rule, Range) and f.name in FIELDS
