"""One flat, typed run configuration (`RunConfig`) read from YAML + command line, validated once.

Why flat: the seeds' YAML files (DeiT, T2T-ViT, BEiT in the MindSpore model zoo) are flat key lists, and
each key doubles as a CLI flag. The three seeds spell the same option differently (``lr``/``base_lr``,
``opt``/``optimizer``, ``aa``/``auto_augment`` ...): every option has ONE canonical name (the DeiT/timm
spelling, see SPEC.md "Config") and the other spellings are aliases resolved here, so the rest of the code
only ever reads canonical attributes. Precedence: CLI > YAML > default. MindSpore-only keys are mapped
where they mean something in PyTorch (``device_target``, ``pynative_mode``, ``disable_approximate_gelu``)
and otherwise accepted with a one-line note (``cfg.notes``) saying they have no effect.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from vitzoo.errors import ConfigError, nearest

SECTIONS = {"model": "Model", "data": "Dataset and loader", "aug": "Augmentation (train)",
            "optim": "Optimizer and schedule", "precision": "Precision", "ema": "EMA",
            "distill": "Distillation (DeiT)", "run": "Run, checkpoints and logs"}


def _f(sec: str, default: Any, kind: str, help: str, *aliases: str, choices=None, norm=None):
    """A schema field. kind: bool|int|float|str|floats|dict, '?' suffix = may be None (null)."""
    meta = {"section": sec, "kind": kind, "help": help, "aliases": aliases, "choices": choices,
            "norm": norm or {}}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


_SCHED_NORM = {"cosine_lr": "cosine", "cosine_annealing": "cosine", "cos": "cosine", "step_lr": "step",
               "multistep": "step", "multistep_lr": "step", "exp": "exponential", "exp_lr": "exponential",
               "exponential_lr": "exponential", "constant_lr": "constant", "plateau_lr": "plateau"}
_INTERP = ("bicubic", "bilinear", "nearest", "random")


@dataclass
class RunConfig:
    """Every option of the seeds' "Script Parameters" blocks under its canonical name (SPEC.md)."""

    # ----- model
    model: str = _f("model", "deit_base_patch16_224", "str", "registered model name", "arch")
    pretrained: str = _f("model", "", "str", "weights to start from (vitzoo checkpoint or official file); "
                         "weights only, head/pos-embed adapted", "finetune", "checkpoint_path")
    exclude_epoch_state: bool = _f("model", False, "bool", "with pretrained: true = start at start_epoch; "
                                   "false = continue the epoch count stored in the file (seeds' meaning)")
    num_classes: int = _f("model", 1000, "int", "classes of the classifier head", "nb_classes")
    input_size: int | None = _f("model", None, "int?", "input resolution (square); null = the model's own",
                                "image_size", "image_height", "image_width")
    model_overrides: dict = _f("model", {}, "dict", "mapping of model config fields handed to create_model, "  # noqa: RUF009
                               "e.g. '{patch_size: 4, depth: 4}'")
    drop: float = _f("model", 0.0, "float", "dropout rate (drop_rate)", "drop_rate")
    drop_path: float = _f("model", 0.1, "float", "stochastic depth rate (drop_path_rate)", "drop_path_rate")
    attn_drop: float = _f("model", 0.0, "float", "attention dropout rate", "attn_drop_rate")
    gelu_approximate: bool = _f("model", False, "bool", "tanh-approximate GELU (false = exact erf, as the "
                                "official PyTorch weights)")
    layer_scale_init_value: float | None = _f("model", None, "float?", "LayerScale init (BEiT 0.1 base, "
                                              "1e-5 large; 0 disables); null = model default")
    rel_pos_bias: bool | None = _f("model", None, "bool?", "BEiT relative position bias; null = default")
    abs_pos_emb: bool | None = _f("model", None, "bool?", "BEiT absolute position embedding; null = default")
    grad_checkpointing: bool = _f("model", False, "bool", "activation checkpointing (less memory, ~30% slower)")
    compile: bool = _f("model", False, "bool", "torch.compile the model (MindSpore pynative_mode: false)")
    channels_last: bool = _f("model", False, "bool", "channels-last memory format for the input/patch conv")
    # ----- data
    dataset: str = _f("data", "folder", "str", "reader: folder (ImageNet-style) | cifar10 | cifar100 "
                      "(any case; ImageNet = folder)", "data_set", choices=("folder", "cifar10", "cifar100"),
                      norm={"imagenet": "folder", "imnet": "folder", "image_folder": "folder",
                            "imagefolder": "folder", "cifar-10": "cifar10", "cifar-100": "cifar100"})
    data_path: str = _f("data", "", "str", "dataset root (folder: holds train_dir/val_dir; CIFAR: the .bin "
                        "folder)", "data_url")
    val_data_path: str = _f("data", "", "str", "separate validation root ('' = data_path)")
    train_dir: str = _f("data", "train", "str", "train sub-folder of data_path")
    val_dir: str = _f("data", "val", "str", "validation sub-folder (seeds: validation_preprocess)")
    train_num_samples: int = _f("data", -1, "int", "fixed seeded subset of the train set (-1 = all)")
    val_num_samples: int = _f("data", -1, "int", "fixed seeded subset of the validation set (-1 = all)")
    num_workers: int = _f("data", 8, "int", "data loader worker processes per GPU", "num_parallel_workers")
    pin_mem: bool = _f("data", True, "bool", "pin host memory for faster host-to-GPU copies", "pin_memory")
    persistent_workers: bool = _f("data", True, "bool", "keep loader workers alive between epochs")
    batch_size: int = _f("data", 64, "int", "batch size per process (per GPU)")
    eval_batch_size: int | None = _f("data", None, "int?", "validation batch size; null = batch_size")
    bad_image_policy: str = _f("data", "skip", "str", "unreadable image: skip (count, report) | error",
                               choices=("skip", "error"))
    repeated_aug: bool = _f("data", False, "bool", "repeated-augmentation sampler (DeiT recipe)")
    imagenet_default_mean_and_std: bool | None = _f("data", None, "bool?", "true = ImageNet mean/std, "
                                                    "false = 0.5/0.5 (BEiT); null = the model's own")
    crop_pct: float | None = _f("data", None, "float?", "eval centre-crop ratio; null = model default",
                                "eval_crop_ratio")
    interpolation: str = _f("data", "bicubic", "str", "resize interpolation", "train_interpolation",
                            choices=_INTERP)
    # ----- augmentation
    aa: str = _f("aug", "rand-m9-mstd0.5-inc1", "str?", "auto-augment policy (timm string); none = off",
                 "auto_augment")
    aa_interpolation: str | None = _f("aug", None, "str?", "auto-augment interpolation; null = interpolation",
                                      choices=_INTERP)
    color_jitter: float = _f("aug", 0.4, "float", "colour jitter strength (used when aa is off)")
    hflip: float = _f("aug", 0.5, "float", "horizontal flip probability")
    min_crop: float = _f("aug", 0.08, "float", "random-resized-crop minimum area fraction")
    reprob: float = _f("aug", 0.25, "float", "random erasing probability", "re_prob")
    remode: str = _f("aug", "pixel", "str", "random erasing mode", "re_mode", choices=("pixel", "rand", "const"))
    recount: int = _f("aug", 1, "int", "random erasing count", "re_count")
    resplit: bool = _f("aug", False, "bool", "do not erase the first (clean) augmentation split")
    mixup: float = _f("aug", 0.8, "float", "mixup alpha (0 = off)")
    cutmix: float = _f("aug", 1.0, "float", "cutmix alpha (0 = off)")
    cutmix_minmax: list | None = _f("aug", None, "floats?", "cutmix box ratio [min, max] (overrides alpha)")  # noqa: RUF009
    mixup_prob: float = _f("aug", 1.0, "float", "probability of applying mixup or cutmix per batch")
    mixup_switch_prob: float = _f("aug", 0.5, "float", "probability of cutmix instead of mixup when both on",
                                  "switch_prob")
    mixup_mode: str = _f("aug", "batch", "str", "mixup granularity", choices=("batch", "pair", "elem"))
    mixup_off_epoch: int = _f("aug", 0, "int", "turn mixup off from this epoch (0 = never)")
    smoothing: float = _f("aug", 0.1, "float", "label smoothing", "label_smoothing")
    # ----- optimizer and schedule
    opt: str = _f("optim", "adamw", "str", "optimizer (momentum = SGD with momentum)", "optimizer",
                  choices=("adamw", "sgd", "momentum"))
    lr: float = _f("optim", 5e-4, "float", "base learning rate (scaled by global batch / 512 unless "
                   "unscale_lr)", "base_lr", "lr_init")
    min_lr: float = _f("optim", 1e-5, "float", "lower lr bound of cosine/plateau schedules")
    warmup_lr: float = _f("optim", 1e-6, "float", "lr at the start of warmup")
    warmup_epochs: int = _f("optim", 5, "int", "linear warmup epochs", "warmup_length")
    momentum: float = _f("optim", 0.9, "float", "SGD momentum")
    weight_decay: float = _f("optim", 0.05, "float", "weight decay (not on biases, norms, pos-embed, tokens)")
    opt_eps: float = _f("optim", 1e-8, "float", "AdamW epsilon", "eps")
    opt_betas: list = _f("optim", [0.9, 0.999], "floats", "AdamW betas", "beta", "betas")  # noqa: RUF009
    layer_decay: float | None = _f("optim", None, "float?", "layer-wise lr decay (BEiT); null/1.0 = off")
    unscale_lr: bool = _f("optim", False, "bool", "use lr as given, without linear scaling by batch")
    sched: str = _f("optim", "cosine", "str", "lr schedule (seeds' cosine_lr = cosine)", "lr_scheduler",
                    choices=("cosine", "step", "exponential", "plateau", "constant"), norm=_SCHED_NORM)
    decay_epochs: float = _f("optim", 30.0, "float", "step schedule: epochs between decays", "lr_adjust")
    decay_rate: float = _f("optim", 0.1, "float", "step/exponential/plateau decay factor", "lr_gamma")
    patience_epochs: int = _f("optim", 10, "int", "plateau schedule patience")
    cooldown_epochs: int = _f("optim", 10, "int", "epochs at min_lr after the schedule ends")
    epochs: int = _f("optim", 300, "int", "epochs to train", "epoch_size")
    start_epoch: int = _f("optim", 0, "int", "first epoch (for schedules; resume sets it)")
    update_freq: int = _f("optim", 1, "int", "gradient accumulation steps per optimizer update", "accum_iter")
    clip_grad: float | None = _f("optim", None, "float?", "max global grad norm (null = no clipping)")
    use_clip_grad_norm: bool = _f("optim", False, "bool", "seed style: clip at clip_grad_norm (sets clip_grad)")
    clip_grad_norm: float = _f("optim", 1.0, "float", "seed style: norm used when use_clip_grad_norm")
    bce_loss: bool = _f("optim", False, "bool", "binary cross-entropy on (mixed) targets instead of softmax CE")
    # ----- precision
    amp_level: str = _f("precision", "O1", "str", "O0 fp32 | O1/O2 autocast | O3 half weights",
                        choices=("O0", "O1", "O2", "O3"))
    amp_dtype: str = _f("precision", "auto", "str", "autocast dtype; auto = bf16 where supported else fp16",
                        choices=("auto", "bf16", "fp16"),
                        norm={"bfloat16": "bf16", "float16": "fp16", "half": "fp16"})
    is_dynamic_loss_scale: bool = _f("precision", True, "bool", "fp16: dynamic loss scaling (GradScaler)")
    loss_scale: float = _f("precision", 1024.0, "float", "fp16: fixed loss scale when not dynamic")
    nonfinite_policy: str = _f("precision", "skip", "str", "non-finite loss: skip the step | stop the run",
                               choices=("skip", "stop"))
    # ----- EMA
    model_ema: bool = _f("ema", False, "bool", "keep an exponential moving average of the weights", "with_ema")
    model_ema_decay: float = _f("ema", 0.99996, "float", "EMA decay per step", "ema_decay")
    model_ema_force_cpu: bool = _f("ema", False, "bool", "keep the EMA copy on the CPU")
    # ----- distillation
    distillation_type: str = _f("distill", "none", "str", "DeiT distillation", choices=("none", "soft", "hard"))
    distillation_alpha: float = _f("distill", 0.5, "float", "weight of the distillation loss")
    distillation_tau: float = _f("distill", 1.0, "float", "soft distillation temperature")
    teacher_model: str = _f("distill", "regnety_160", "str", "teacher: zoo, timm or torchvision model name")
    teacher_path: str = _f("distill", "", "str", "teacher weights file (local)")
    # ----- run
    seed: int = _f("run", 0, "int", "random seed (rank is added per process)")
    device: str = _f("run", "auto", "str", "auto | cuda | cuda:N | cpu (MindSpore device_target GPU/CPU)")
    output_dir: str = _f("run", "output", "str", "folder for checkpoints, logs, metrics")
    resume: str = _f("run", "", "str", "checkpoint to continue from ('' = none, auto = newest in output_dir)")
    ckpt_keep_num: int = _f("run", 10, "int", "newest checkpoints kept", "keep_checkpoint_max")
    best_ckpt_num: int = _f("run", 5, "int", "best checkpoints (val top-1) kept")
    ckpt_save_every_step: int = _f("run", 0, "int", "save every N optimizer steps (0 = off)")
    ckpt_save_every_seconds: int = _f("run", 1800, "int", "save every N seconds (0 = off)",
                                      "ckpt_save_every_sec")
    print_loss_every: int = _f("run", 20, "int", "log a line every N steps (non-terminal output)")
    summary_loss_collect_freq: int = _f("run", 1, "int", "TensorBoard loss every N steps")
    eval_every: int = _f("run", 1, "int", "validate every N epochs (and at the end)")
    use_ema_for_eval: bool = _f("run", False, "bool", "validate the EMA weights")
    dist_eval: bool = _f("run", True, "bool", "shard validation over processes (exact all-reduced metrics)")
    log_dir: str = _f("run", "", "str", "text logs folder ('' = output_dir)", "logs_root_dir")
    ckpt_dir: str = _f("run", "", "str", "checkpoints folder ('' = output_dir/checkpoints)", "ckpt_root_dir")
    best_ckpt_dir: str = _f("run", "", "str", "best checkpoints folder ('' = output_dir/best)",
                            "best_ckpt_root_dir")
    summary_dir: str = _f("run", "", "str", "TensorBoard folder ('' = output_dir/tensorboard)",
                          "summary_root_dir")
    notes: list = field(default_factory=list, repr=False, compare=False)  # one line per no-effect key

    # ----- derived helpers (the trainer's arithmetic lives here, next to the keys it reads)
    def global_batch(self, world_size: int = 1) -> int:
        """Images per optimizer update: batch x processes x accumulation steps (BEiT's definition)."""
        return self.batch_size * world_size * self.update_freq

    def scaled_lr(self, world_size: int = 1) -> float:
        """DeiT's linear scaling rule, lr x global_batch / 512 (main.py); unscale_lr keeps lr as given."""
        return self.lr if self.unscale_lr else self.lr * self.global_batch(world_size) / 512.0

    @property
    def clip_value(self) -> float | None:
        """Max global grad norm or None (clip_grad, or clip_grad_norm when use_clip_grad_norm)."""
        return self.clip_grad if self.clip_grad is not None and self.clip_grad > 0 else None

    @property
    def eval_batch(self) -> int:
        return self.eval_batch_size or self.batch_size

    @property
    def mixup_active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0 or self.cutmix_minmax is not None

    def resolved_amp_dtype(self, bf16_supported: bool = True) -> str:
        """'float32' (O0), else 'bfloat16' | 'float16' (auto = bf16 where the device has it): getattr(torch, s)."""
        if self.amp_level == "O0":
            return "float32"
        if self.amp_dtype == "fp16" or (self.amp_dtype == "auto" and not bf16_supported):
            return "float16"
        return "bfloat16"

    def model_kwargs(self) -> dict:
        """Keyword overrides for ``create_model(cfg.model, **kw)`` (family defaults kept where unset)."""
        kw: dict[str, Any] = {"num_classes": self.num_classes, "drop_rate": self.drop,
                              "drop_path_rate": self.drop_path, "attn_drop_rate": self.attn_drop}
        if self.input_size is not None:
            kw["img_size"] = self.input_size
        if self.gelu_approximate:
            kw["gelu_approximate"] = True
        if self.grad_checkpointing:
            kw["grad_checkpointing"] = True
        if self.layer_scale_init_value is not None:
            kw["layer_scale_init_value"] = self.layer_scale_init_value
        if self.rel_pos_bias is not None:
            kw["use_rel_pos_bias"] = self.rel_pos_bias
        if self.abs_pos_emb is not None:
            kw["use_abs_pos_emb"] = self.abs_pos_emb
        kw.update(self.model_overrides)
        return kw

    def run_dirs(self) -> dict[str, str]:
        """log/ckpt/best/summary folders with '' resolved under output_dir."""
        import os

        out = self.output_dir or "."
        return {"log_dir": self.log_dir or out,
                "ckpt_dir": self.ckpt_dir or os.path.join(out, "checkpoints"),
                "best_ckpt_dir": self.best_ckpt_dir or os.path.join(out, "best"),
                "summary_dir": self.summary_dir or os.path.join(out, "tensorboard")}

    def to_dict(self) -> dict:
        """Every canonical key -> JSON-safe value (goes into checkpoint meta['config'])."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in schema()}

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False) -> RunConfig:
        """Rebuild from a dict (canonical or alias keys). strict=False drops unknown keys with a note, so a
        checkpoint written by another vitzoo version still loads."""
        return _build([(dict(d), "config dict")], strict=strict)


# --------------------------------------------------------------------------- schema tables
def schema() -> list[dataclasses.Field]:
    """The option fields in declaration (= section) order."""
    return [f for f in dataclasses.fields(RunConfig) if "kind" in f.metadata]


_FIELDS = {f.name: f for f in schema()}
ALIASES: dict[str, str] = {a: f.name for f in schema() for a in (f.name, *f.metadata["aliases"])}
# MindSpore keys with a PyTorch meaning: key -> (canonical field, converter(value) -> (value, note)).
_DEVICE_TARGET = {"gpu": "cuda", "cpu": "cpu", "ascend": "auto"}
MAPPED = {
    # MindSpore GRAPH_MODE (pynative_mode false) compiles the network; torch.compile is the analogue.
    "pynative_mode": ("compile", "bool", lambda v: not v),
    # The seeds build nn.GELU(approximate=not disable_approximate_gelu) and MindSpore's GELU approximates
    # (tanh) unless told not to, so false -> tanh GELU, true -> exact erf GELU (what PyTorch weights use).
    "disable_approximate_gelu": ("gelu_approximate", "bool", lambda v: not v),
    "device_target": ("device", "str", lambda v: _DEVICE_TARGET[v.lower()]),
}
# MindSpore / other-tool keys accepted for compatibility, with why they do nothing here.
IGNORED = {
    "device_id": "pick GPUs with CUDA_VISIBLE_DEVICES or the scripts' --device / --device_ids",
    "device_num": "the number of processes comes from torchrun (--nproc_per_node)",
    "dataset_sink_mode": "MindSpore data sinking has no PyTorch counterpart",
    "no_dataset_sink_mode": "MindSpore data sinking has no PyTorch counterpart",
    "collect_input_data": "MindInsight input collection; TensorBoard logs scalars",
    "dump_graph": "MindInsight graph dump",
    "model_postfix": "MindSpore run-folder suffix; set output_dir instead",
    "file_format": "export format is chosen by `vitzoo export --format`",
    "drop_block": "unused by these model families in the seeds; attention dropout is attn_drop",
    "use_pytorch_maxpool": "MindSpore CNN pooling switch; these transformers have no max-pool",
    "pre_trained": "ViT seed flag; set pretrained to the checkpoint path",
    "t_max": "ViT seed cosine period; cosine runs over epochs - warmup_epochs",
    "enable_deepspeed": "BEiT's DeepSpeed switch; mixed precision is amp_level/amp_dtype",
    "modelarts": "Huawei ModelArts upload switch",
    "run_modelarts": "Huawei ModelArts upload switch",
}
CLI_ONLY = ("config", "dry_run")


def _kind_name(kind: str) -> str:
    base = {"bool": "a boolean (true/false/1/0/yes/no)", "int": "an integer", "float": "a number",
            "str": "a string", "floats": "a list of numbers", "dict": "a mapping"}[kind.rstrip("?")]
    return base + (" or null" if kind.endswith("?") else "")


def _bad(key: str, kind: str, value: Any, where: str, extra: str = "") -> ConfigError:
    return ConfigError(f"config key '{key}' ({where}): expected {_kind_name(kind)}, got {value!r}{extra}")


def _coerce(kind: str, value: Any, key: str, where: str) -> Any:
    """YAML/CLI value -> typed value. CLI values arrive as strings; YAML reads '5e-4' as a string too."""
    import yaml

    optional, base = kind.endswith("?"), kind.rstrip("?")
    if isinstance(value, str) and base in ("floats", "dict") and value.strip()[:1] in "[{":
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _bad(key, kind, value, where, " (not valid YAML)") from None
    if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")
                         and (optional or base not in ("str", "dict"))):
        if optional:
            return None
        if base == "dict":
            return {}
        raise _bad(key, kind, value, where)
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        s = str(value).strip().lower()
        if s in ("true", "1", "yes", "y", "on"):
            return True
        if s in ("false", "0", "no", "n", "off"):
            return False
        raise _bad(key, kind, value, where)
    if base in ("int", "float"):
        if isinstance(value, bool):
            raise _bad(key, kind, value, where)
        try:
            num = float(value) if isinstance(value, str) else value
            if not isinstance(num, (int, float)) or math.isnan(num):
                raise ValueError
        except ValueError:
            raise _bad(key, kind, value, where) from None
        if base == "float":
            return float(num)
        if float(num).is_integer():
            return int(num)
        raise _bad(key, kind, value, where)
    if base == "str":
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _bad(key, kind, value, where)
    if base == "floats":
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if not isinstance(value, (list, tuple)) or not value:
            raise _bad(key, kind, value, where)
        return [_coerce("float", v, key, where) for v in value]
    if base == "dict":
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                raise _bad(key, kind, value, where, " (not valid YAML)") from None
        if not isinstance(value, dict):
            raise _bad(key, kind, value, where)
        try:
            return json.loads(json.dumps(value))
        except (TypeError, ValueError):
            raise _bad(key, kind, value, where, " (values must be plain numbers/strings/lists)") from None
    raise AssertionError(kind)  # pragma: no cover


def _field_value(name: str, value: Any, key: str, where: str) -> Any:
    meta = _FIELDS[name].metadata
    if value is None and meta["kind"] == "str" and _FIELDS[name].default == "":
        return ""  # `pretrained: null` means no file, as ''
    value = _coerce(meta["kind"], value, key, where)
    choices = meta["choices"]
    if choices and value is not None:
        s = value.strip()
        low = meta["norm"].get(s.lower(), s.lower())
        match = [c for c in choices if c.lower() == low]
        if not match:
            raise ConfigError(f"config key '{key}' ({where}): {value!r} is not one of "
                              f"{', '.join(choices)}{nearest(low, choices)}")
        value = match[0]
    return value


def _key_of(spelling: str) -> str:
    return spelling.replace("-", "_").lower()


def _collect(raw: dict, where: str, strict: bool, notes: list[str]) -> dict[str, tuple[Any, str]]:
    """Resolve one source's keys to canonical names: {canonical: (typed value, key as spelled)}."""
    out: dict[str, tuple[Any, str]] = {}
    for spelled, value in raw.items():
        key = _key_of(str(spelled))
        if key in IGNORED:
            notes.append(f"{spelled}: no effect here ({IGNORED[key]})")
            continue
        if key in MAPPED:
            name, kind, conv = MAPPED[key]
            typed = _coerce(kind, value, str(spelled), where)
            try:
                typed = conv(typed)
            except KeyError:
                raise ConfigError(f"config key '{spelled}' ({where}): {value!r} is not one of GPU, CPU, "
                                  "Ascend") from None
            note = f"{spelled}: {value} -> {name}: {typed}"
            if key == "device_target" and str(value).lower() == "ascend":
                note += " (no Ascend backend in PyTorch; using the best device found)"
            notes.append(note)
        elif key in ALIASES:
            name = ALIASES[key]
            typed = _field_value(name, value, str(spelled), where)
        elif strict:
            everything = list(ALIASES) + list(MAPPED) + list(IGNORED)
            raise ConfigError(f"unknown config key '{spelled}' ({where}){nearest(key, everything)}")
        else:
            notes.append(f"{spelled}: unknown key ignored ({where})")
            continue
        if name in out and out[name][0] != typed:
            raise ConfigError(f"config keys '{out[name][1]}' ({out[name][0]!r}) and '{spelled}' ({typed!r}) "
                              f"in {where} both set '{name}' to different values; keep one")
        out[name] = (typed, str(spelled))
    return out


def _build(sources: list[tuple[dict, str]], strict: bool = True) -> RunConfig:
    """defaults < sources[0] < sources[1] ... (YAML first, command line last), then validate."""
    notes: list[str] = []
    values: dict[str, Any] = {}
    for raw, where in sources:
        values.update({k: v for k, (v, _) in _collect(raw, where, strict, notes).items()})
    cfg = RunConfig(**values)
    cfg.notes = list(dict.fromkeys(notes))
    _finalise(cfg)
    return cfg


def _finalise(cfg: RunConfig) -> None:
    """Normalise derived values and check cross-field rules, each failure naming its keys."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    if cfg.aa is None or cfg.aa.strip().lower() in ("", "none", "null", "false", "off"):
        cfg.aa = "none"
    if cfg.layer_decay is not None and cfg.layer_decay == 1.0:
        cfg.layer_decay = None
    if cfg.clip_grad is None and cfg.use_clip_grad_norm:
        cfg.clip_grad = cfg.clip_grad_norm  # seed style resolved into one key (SPEC.md)
    cfg.model = cfg.model.strip()
    need(bool(cfg.model), "config key 'model' is empty: give a registered model name (vitzoo models)")
    dev = cfg.device.strip().lower()
    need(dev in ("auto", "cuda", "cpu") or (dev.startswith("cuda:") and dev[5:].isdigit()),
         f"config key 'device': {cfg.device!r} is not one of auto, cuda, cuda:N, cpu")
    cfg.device = dev
    for name in ("batch_size", "update_freq", "num_classes", "recount", "eval_every"):
        need(getattr(cfg, name) >= 1, f"config key '{name}' must be >= 1, got {getattr(cfg, name)}")
    for name in ("epochs", "start_epoch", "warmup_epochs", "cooldown_epochs", "patience_epochs", "num_workers",
                 "mixup_off_epoch", "ckpt_keep_num", "best_ckpt_num", "ckpt_save_every_step",
                 "ckpt_save_every_seconds", "print_loss_every", "summary_loss_collect_freq", "lr", "min_lr",
                 "warmup_lr", "weight_decay", "momentum", "opt_eps", "mixup", "cutmix", "color_jitter",
                 "distillation_tau", "loss_scale", "decay_epochs", "decay_rate"):
        need(getattr(cfg, name) >= 0, f"config key '{name}' must be >= 0, got {getattr(cfg, name)}")
    for name in ("drop", "drop_path", "attn_drop", "reprob", "hflip", "mixup_prob", "mixup_switch_prob",
                 "distillation_alpha", "min_crop"):
        need(0 <= getattr(cfg, name) <= 1, f"config key '{name}' must be in [0, 1], got {getattr(cfg, name)}")
    need(0 <= cfg.smoothing < 1, f"config key 'smoothing' must be in [0, 1), got {cfg.smoothing}")
    need(0 < cfg.model_ema_decay < 1, f"config key 'model_ema_decay' must be in (0, 1), got {cfg.model_ema_decay}")
    need(cfg.start_epoch <= cfg.epochs, f"config key 'start_epoch' ({cfg.start_epoch}) is after 'epochs' "
         f"({cfg.epochs})")
    need(cfg.input_size is None or cfg.input_size > 0, f"config key 'input_size' must be > 0, got {cfg.input_size}")
    need(cfg.eval_batch_size is None or cfg.eval_batch_size > 0, "config key 'eval_batch_size' must be > 0")
    need(cfg.crop_pct is None or 0 < cfg.crop_pct <= 1, f"config key 'crop_pct' must be in (0, 1], got "
         f"{cfg.crop_pct}")
    need(cfg.layer_decay is None or 0 < cfg.layer_decay < 1, f"config key 'layer_decay' must be in (0, 1] "
         f"(null = off), got {cfg.layer_decay}")
    need(len(cfg.opt_betas) == 2 and all(0 <= b < 1 for b in cfg.opt_betas),
         f"config key 'opt_betas' must be two numbers in [0, 1), got {cfg.opt_betas}")
    need(cfg.cutmix_minmax is None or (len(cfg.cutmix_minmax) == 2 and
                                       0 < cfg.cutmix_minmax[0] <= cfg.cutmix_minmax[1] <= 1),
         f"config key 'cutmix_minmax' must be [min, max] with 0 < min <= max <= 1, got {cfg.cutmix_minmax}")
    need(cfg.clip_grad is None or cfg.clip_grad >= 0, f"config key 'clip_grad' must be >= 0, got {cfg.clip_grad}")
    need(cfg.is_dynamic_loss_scale or cfg.loss_scale > 0,
         "config key 'loss_scale' must be > 0 when 'is_dynamic_loss_scale' is false")
    if cfg.distillation_type != "none":
        need(bool(cfg.teacher_model.strip()), f"distillation_type '{cfg.distillation_type}' needs a teacher: "
             "set 'teacher_model' (and 'teacher_path' to its weights file)")
    need(cfg.train_num_samples == -1 or cfg.train_num_samples > 0, "config key 'train_num_samples' must be "
         "-1 (all) or > 0")
    need(cfg.val_num_samples == -1 or cfg.val_num_samples > 0, "config key 'val_num_samples' must be -1 "
         "(all) or > 0")


# --------------------------------------------------------------------------- YAML, CLI, dump
def read_yaml(path: str) -> dict:
    """A flat YAML mapping; a clear error for a missing file, bad YAML or a non-mapping top level."""
    import os

    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of 'key: value' lines, got "
                          f"{type(data).__name__}")
    return data


class _Parser(argparse.ArgumentParser):
    """argparse that takes --key-name as --key_name and raises UserError instead of exiting."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        fixed = []
        for a in args:
            if a.startswith("--") and len(a) > 2:
                key, eq, val = a[2:].partition("=")
                a = "--" + _key_of(key) + eq + val
            fixed.append(a)
        return super().parse_known_args(fixed, namespace)

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


_METAVAR = {"bool": "BOOL", "int": "INT", "float": "FLOAT", "str": "STR", "floats": "FLOAT",
            "dict": "YAML"}


def build_parser(prog: str = "vitzoo train", description: str | None = None) -> argparse.ArgumentParser:
    """--config, --dry-run and one --key per option (aliases hidden but accepted), grouped by section."""
    p = _Parser(prog=prog, description=description or "Train a model from a YAML config; any key can be "
                "given as --key value (CLI wins over YAML). Keys also accept --key-name spelling.",
                usage="%(prog)s [--config YAML] [--dry-run] [--KEY VALUE ...]",
                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--config", "--config_path", dest="config", default=None, metavar="YAML",
                   help="YAML config file (flat keys, any seed dialect)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print the resolved config (every key) and exit")
    groups = {sec: p.add_argument_group(title) for sec, title in SECTIONS.items()}
    for f in schema():
        m = f.metadata
        base = m["kind"].rstrip("?")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = f"; choices: {', '.join(m['choices'])}" if m["choices"] else ""
        alias = f"; alias: {', '.join(m['aliases'])}" if m["aliases"] else ""
        kw = {"dest": f.name, "default": argparse.SUPPRESS, "metavar": _METAVAR[base]}
        kw.update(nargs="+" if base == "floats" else ("?" if base == "bool" else None))
        if base == "bool":
            kw["const"] = "true"
        groups[m["section"]].add_argument(f"--{f.name}", help=f"{m['help']} [default: "
                                          f"{_show(default)}{extra}{alias}]", **kw)
        for a in m["aliases"]:
            p.add_argument(f"--{a}", help=argparse.SUPPRESS, **kw)
    compat = p.add_argument_group("MindSpore seed keys (mapped or accepted without effect)")
    for key, (name, kind, _) in MAPPED.items():
        compat.add_argument(f"--{key}", dest=key, default=argparse.SUPPRESS, metavar=_METAVAR[kind],
                            nargs="?" if kind == "bool" else None, const="true" if kind == "bool" else None,
                            help=f"sets {name}")
    for key, why in IGNORED.items():
        compat.add_argument(f"--{key}", dest=key, default=argparse.SUPPRESS, metavar="X", nargs="?",
                            const="true", help=f"no effect: {why}")
    return p


def _show(v: Any) -> str:
    return "''" if v == "" else json.dumps(v) if isinstance(v, (list, dict, bool, type(None))) else str(v)


def config_from_namespace(ns: argparse.Namespace) -> RunConfig:
    """YAML from ns.config (if any) overridden by the keys given on the command line."""
    cli = {k: v for k, v in vars(ns).items() if k not in CLI_ONLY and _key_of(k) in
           (set(ALIASES) | set(MAPPED) | set(IGNORED))}
    for k, v in cli.items():  # nargs="+" on a list field: one token may itself be "[0.9,0.999]"
        if isinstance(v, list) and len(v) == 1:
            cli[k] = v[0]
    sources = [(read_yaml(ns.config), ns.config)] if getattr(ns, "config", None) else []
    return _build(sources + [(cli, "command line")])


def parse_args(argv: list[str] | None = None, prog: str = "vitzoo train", description: str | None = None,
               parser: argparse.ArgumentParser | None = None) -> tuple[RunConfig, argparse.Namespace]:
    """Parse a command line into (RunConfig, namespace with .config and .dry_run); unknown -> UserError."""
    parser = parser or build_parser(prog, description)
    ns, rest = parser.parse_known_args(argv)
    if rest:
        bad = rest[0]
        key = _key_of(bad.lstrip("-").partition("=")[0])
        opts = list(ALIASES) + list(MAPPED) + list(IGNORED)
        hint = nearest(key, opts).replace(": ", ": --").replace(", ", ", --") if bad.startswith("-") else ""
        raise ConfigError(f"unknown option '{bad}'{hint} (see {parser.prog} --help)")
    return config_from_namespace(ns), ns


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """YAML file (or None) + CLI-style overrides (['--batch_size', '8', ...]) -> validated RunConfig."""
    args = (["--config", path] if path else []) + list(overrides or [])
    return parse_args(args)[0]


def dump_config(cfg: RunConfig) -> str:
    """YAML text of every resolved canonical key, by section; loading it gives the same config."""
    import yaml

    lines = ["# vitzoo resolved config (canonical keys; load with: vitzoo train --config THIS_FILE)"]
    lines += [f"# note: {n}" for n in cfg.notes]
    sec = None
    for f in schema():
        if f.metadata["section"] != sec:
            sec = f.metadata["section"]
            lines.append(f"\n# ===== {SECTIONS[sec]} ===== #")
        value = getattr(cfg, f.name)
        if isinstance(value, (list, dict)):
            text = f"{f.name}: " + yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        else:
            text = yaml.safe_dump({f.name: value}, default_flow_style=False, width=10_000).strip()
        lines.append(f"{text:<40} # {f.metadata['help']}")
    return "\n".join(lines) + "\n"
