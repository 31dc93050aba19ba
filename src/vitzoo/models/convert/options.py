"""The one rule for what a model built from a file is: registry defaults < the file's options < the caller's.

Every entry point (``create_model(name, pretrained=FILE)``, ``load_model(FILE)``, ``vitzoo convert`` and
the commands that load checkpoints) builds through :func:`plan_model`, so a file gives the same network
whichever way it is opened. The file's options, lowest first:

1. what its tensors show: the class count (head rows) and resolution (position table), and -- when the
   architecture was detected rather than named -- the sizes (:mod:`~vitzoo.models.convert.detect`);
2. what a foreign file's config records (:attr:`Weights.model_kwargs`: HF ``config.json``, timm hub);
3. what a vitzoo checkpoint records (``meta["model_kwargs"]``: everything its model was built with, the
   source framework's GELU / LayerNorm epsilon / pre-logits of a converted file included);
4. what the layout implies for that config (:meth:`Weights.implied`: the source's numerics, a T2T-ViT
   release's attention scale, a 21k ``.npz``'s pre-logits layer).

The caller's explicit arguments override all of them; each override that changes what the file's network
computed is said in one line (the new head and resized position tables are said where they are made, in
:mod:`~vitzoo.models.convert.adapt`). A named architecture that the file records otherwise (another
network, not another name for the same one) is an error: nothing is silently built as something else.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from vitzoo.errors import ConfigError, UserError
from vitzoo.models.beit_mim import PRETRAIN_SETTINGS
from vitzoo.models.convert.detect import applied_fields, choose_arch, shown_fields
from vitzoo.models.convert.weights import Weights
from vitzoo.models.registry import build_config

log = logging.getLogger("vitzoo")

# fitted to the caller, and reported by adapt when they change (a new head, resized tables)
FITTED = ("num_classes", "img_size")
# training-time settings: two names that differ only in these are the same network
_TRAINING = ("drop_rate", "attn_drop_rate", "drop_path_rate", "performer_drop_rate", "grad_checkpointing",
             "init_scale")


@dataclass(frozen=True)
class Plan:
    """How to build the model for a file: the decision, its inputs' precedence resolved, and why."""

    arch: str
    kwargs: dict[str, Any]  # build_model's keyword arguments (registry defaults fill the rest)
    chosen: frozenset[str]  # fields the caller set: the loaded model is not held to the file's on these
    found: str | None = None  # how the architecture was found, when the file did not record it
    overrides: tuple[str, ...] = ()  # one line per caller value that changes what the file's network computed

    @property
    def notes(self) -> tuple[str, ...]:
        return ((self.found,) if self.found else ()) + self.overrides

    def say(self) -> None:
        """Log the notes (the entry points that print no report of their own call this)."""
        if self.found:
            log.info(self.found)
        for line in self.overrides:
            log.warning(line)


def file_options(weights: Weights, detected: dict[str, Any] | None = None, classify: bool = False) -> dict[str, Any]:
    """Layers 1-3 of the module docstring (the layout's implications, layer 4, need the config).

    ``classify``: the caller asks for a classifier (``num_classes``). A pre-training checkpoint built so,
    for fine-tuning, keeps its network options but not its pre-training task's (one relative-position
    table shared by the blocks, class-token pooling, no classifier): unilm's ``run_class_finetuning.py``
    builds the fine-tuning model from its own arguments, and the shared table is copied into every block
    on loading. Without one (a probe's encoder), the file's encoder is built as it was.
    """
    _, shown = shown_fields(weights.state_dict)
    tensors = {k: shown[k] for k in FITTED if k in shown}
    recorded = dict(weights.meta.get("model_kwargs") or {})
    if classify and weights.meta.get("task") == "pretrain":
        recorded = {k: v for k, v in recorded.items() if k not in PRETRAIN_SETTINGS}
    return {**tensors, **(detected or {}), **weights.model_kwargs, **recorded}


def plan_model(weights: Weights, arch: str | None, caller: dict[str, Any]) -> Plan:
    """The architecture (``arch``, else the file's record, else detected) and its options, merged."""
    recorded = weights.meta.get("arch") or weights.arch
    how: str | None = None
    detected: dict[str, Any] = {}
    if not arch and not recorded:
        found = choose_arch(weights.state_dict, weights.source, weights.family, {**weights.model_kwargs, **caller})
        arch, detected, how = found.arch, applied_fields(found), found.sentence()
    arch = arch or recorded
    assert arch is not None
    file = file_options(weights, detected, classify=bool(caller.get("num_classes")))
    if recorded and recorded != arch:
        check_same_network(weights.source, recorded, arch, {**file, **caller})
        how = f"built as {arch}, as named; the file records {recorded}, the same network"
    implied = weights.implied(_config(arch, {**file, **caller}, weights.source))
    theirs = {**file, **implied}
    return Plan(arch, {**theirs, **caller}, frozenset(caller), how, tuple(override_notes(theirs, caller)))


def override_notes(theirs: dict[str, Any], caller: dict[str, Any]) -> list[str]:
    """One line per caller value that replaces another value the file records (FITTED ones excepted)."""
    return [f"{key}={value!r} (given) instead of the file's {theirs[key]!r}: the model computes otherwise than "
            "the file's network" for key, value in caller.items()
            if key in theirs and key not in FITTED and theirs[key] != value]


def check_same_network(source: str, recorded: str, given: str, options: dict[str, Any]) -> None:
    """A UserError when ``given`` would build another network from this file than ``recorded`` does."""
    mine, theirs = _fields(given, options), _fields(recorded, options)
    if mine is None or theirs is None or type(mine) is not type(theirs):
        differ = ["another model family"]
    else:
        a, b = dataclasses.asdict(theirs), dataclasses.asdict(mine)
        differ = [f"{k} {a[k]!r} vs {b[k]!r}" for k in a if k not in _TRAINING and a[k] != b[k]]
    if differ:
        raise UserError(f"{source} records a {recorded}, not a {given} ({'; '.join(differ[:3])}): leave the "
                        f"architecture out (or name {recorded})")


def _fields(name: str, options: dict[str, Any]) -> Any:
    try:
        return build_config(name, **{k: v for k, v in options.items() if k not in FITTED})
    except ConfigError:  # a field that model family does not have: another network
        return None


def _config(arch: str, options: dict[str, Any], source: str) -> Any:
    try:
        return build_config(arch, **options)
    except ConfigError as e:
        raise UserError(f"{source}: {e}") from e
