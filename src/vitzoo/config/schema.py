"""RunConfig: every option of a run, its type, default, help, seed aliases and validity rule, stated once.

Why flat: the seeds' YAML files (DeiT, T2T-ViT, BEiT in the MindSpore model zoo) are flat key lists, and
each key doubles as a CLI flag. The seeds spell some options differently (``lr``/``base_lr``,
``opt``/``optimizer``, ``aa``/``auto_augment`` ...): every option has ONE canonical name (the DeiT/timm
spelling) and the others are aliases resolved when the config is built, so the rest of the code reads
only canonical attributes -- and trusts them: each field's rule (``rule="[0, 1]"``) is checked here and
nowhere else. Why dataclasses and not pydantic: the seeds need value spellings normalised per field
(``cosine_lr``), MindSpore keys that invert (``pynative_mode``) and one-line errors naming the key and
the file it came from; that is this module's ~100 lines of rules either way, without a new dependency.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from vitzoo.config.compat import DATASET_NAMES, INTERPOLATIONS, PRECISION_NAMES, SCHED_NAMES
from vitzoo.config.types import Kind, kind_of

SECTIONS = {"model": "Model", "data": "Dataset and loader", "aug": "Augmentation (train)",
            "optim": "Optimizer and schedule", "precision": "Precision", "ema": "EMA",
            "distill": "Distillation (DeiT)", "mim": "Masked image modeling (vitzoo pretrain) and tokenizers",
            "probe": "Representation probes (vitzoo linprobe, vitzoo knn)", "run": "Run, checkpoints and logs"}


@dataclass(frozen=True)
class Range:
    """A numeric rule in interval notation: ``"[0, 1)"``, ``">= 1"``, ``"> 0"`` (null always passes)."""

    text: str

    def holds(self, v: float) -> bool:
        t = self.text
        if t.startswith((">=", ">")):
            bound = float(t.lstrip(">= "))
            return v >= bound if t.startswith(">=") else v > bound
        lo, hi = (float(s.strip(" [()]")) for s in t.split(","))
        return (lo <= v if t[0] == "[" else lo < v) and (v <= hi if t[-1] == "]" else v < hi)

    def describe(self) -> str:
        return self.text if self.text.startswith(">") else f"in {self.text}"


def option(section: str, default: Any, help: str, *aliases: str, choices: tuple[str, ...] | None = None,
           names: dict[str, str] | None = None, rule: str | None = None) -> Any:
    """A RunConfig field. ``names``: other spellings of the choices; ``rule``: a :class:`Range`."""
    meta = {"section": section, "help": help, "aliases": aliases, "choices": choices, "names": names or {},
            "rule": Range(rule) if rule else None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


# option(...) builds dataclasses.field objects, as field() does: RUF009 does not apply
# ruff: noqa: RUF009
@dataclass
class RunConfig:
    """Every option of the seeds' "Script Parameters" blocks under its canonical name."""

    # ----- model
    model: str = option("model", "deit_base_patch16_224", "registered model name", "arch")
    pretrained: str = option("model", "", "weights to start from: a file (vitzoo or official), a weights tag "
                             "(deit_small_patch16_224.fb_in1k; `vitzoo models --pretrained`), hf-hub:org/repo "
                             "or a URL; weights only, head/pos-embed adapted", "finetune", "checkpoint_path")
    exclude_epoch_state: bool = option("model", False, "with pretrained: true = start at start_epoch; "
                                       "false = continue the epoch count stored in the file (seeds' meaning)")
    num_classes: int = option("model", 1000, "classes of the classifier head (train: unset = the train set's classes)",
                              "nb_classes", rule=">= 1")
    input_size: int | None = option("model", None, "input resolution (square); null = the model's own",
                                    "image_size", "image_height", "image_width", rule="> 0")
    model_overrides: dict = option("model", {}, "mapping of model config fields handed to create_model, "
                                   "e.g. '{patch_size: 4, depth: 4}'")
    drop: float = option("model", 0.0, "dropout rate (drop_rate)", "drop_rate", rule="[0, 1]")
    drop_path: float = option("model", 0.1, "stochastic depth rate (drop_path_rate)", "drop_path_rate",
                              rule="[0, 1]")
    attn_drop: float = option("model", 0.0, "attention dropout rate", "attn_drop_rate", rule="[0, 1]")
    gelu_approximate: bool = option("model", False, "tanh-approximate GELU (false = exact erf, as the "
                                    "official PyTorch weights)")
    layer_scale_init_value: float | None = option("model", None, "LayerScale init (BEiT 0.1 base, 1e-5 "
                                                  "large; 0 disables); null = model default", rule=">= 0")
    rel_pos_bias: bool | None = option("model", None, "BEiT relative position bias; null = default")
    abs_pos_emb: bool | None = option("model", None, "BEiT absolute position embedding; null = default")
    grad_checkpointing: bool = option("model", False, "activation checkpointing (less memory, ~30% slower)")
    compile: bool = option("model", False, "torch.compile the model (MindSpore pynative_mode: false)")
    channels_last: bool = option("model", False, "channels-last memory format for the input/patch conv")
    # ----- data
    dataset: str = option("data", "folder", "reader: folder (ImageNet-style; pretrain: any folder tree, labels "
                          "ignored) | cifar10 | cifar100 | webdataset (tar shards: a brace pattern, folder, "
                          "or URL) (any case; ImageNet = folder)", "data_set",
                          choices=("folder", "cifar10", "cifar100", "webdataset"), names=DATASET_NAMES)
    data_path: str = option("data", "", "dataset root (folder: holds train_dir/val_dir; CIFAR: the .bin "
                            "folder)", "data_url")
    val_data_path: str = option("data", "", "separate validation root ('' = data_path)")
    train_dir: str = option("data", "train", "train sub-folder of data_path")
    val_dir: str = option("data", "val", "validation sub-folder (seeds: validation_preprocess)")
    train_num_samples: int = option("data", -1, "fixed seeded subset of the train set (-1 = all)")
    val_num_samples: int = option("data", -1, "fixed seeded subset of the validation set (-1 = all)")
    num_workers: int = option("data", 8, "data loader worker processes per GPU", "num_parallel_workers",
                              rule=">= 0")
    pin_mem: bool = option("data", True, "pin host memory for faster host-to-GPU copies", "pin_memory")
    persistent_workers: bool = option("data", True, "keep loader workers alive between epochs")
    batch_size: int = option("data", 64, "batch size per process (per GPU)", rule=">= 1")
    eval_batch_size: int | None = option("data", None, "validation batch size; null = batch_size", rule="> 0")
    bad_image_policy: str = option("data", "skip", "unreadable image: skip (count, report) | error",
                                   choices=("skip", "error"))
    shard_shuffle_buffer: int = option("data", 2000, "streamed (URL) WebDataset shards: samples each loader "
                                       "worker shuffles among (local shards are shuffled exactly)", rule=">= 1")
    repeated_aug: bool = option("data", False, "repeated-augmentation sampler (DeiT recipe)")
    imagenet_default_mean_and_std: bool | None = option("data", None, "true = ImageNet mean/std, false = "
                                                        "0.5/0.5 (BEiT); null = the model's own")
    crop_pct: float | None = option("data", None, "eval centre-crop ratio; null = model default",
                                    "eval_crop_ratio", rule="(0, 1]")
    interpolation: str = option("data", "bicubic", "resize interpolation", "train_interpolation",
                                choices=INTERPOLATIONS)
    # ----- augmentation
    aa: str | None = option("aug", "rand-m9-mstd0.5-inc1", "auto-augment policy (timm string); none = off",
                            "auto_augment")
    aa_interpolation: str | None = option("aug", None, "auto-augment interpolation; null = interpolation",
                                          choices=INTERPOLATIONS)
    color_jitter: float = option("aug", 0.4, "colour jitter strength (used when aa is off)", rule=">= 0")
    hflip: float = option("aug", 0.5, "horizontal flip probability", rule="[0, 1]")
    min_crop: float = option("aug", 0.08, "random-resized-crop minimum area fraction", rule="(0, 1]")
    reprob: float = option("aug", 0.25, "random erasing probability", "re_prob", rule="[0, 1]")
    remode: str = option("aug", "pixel", "random erasing mode", "re_mode", choices=("pixel", "rand", "const"))
    recount: int = option("aug", 1, "random erasing count", "re_count", rule=">= 1")
    augment_on: str = option("aug", "cpu", "where the recipe after crop and flip runs (auto-augment, normalise, "
                             "erasing): cpu = loader workers (timm's way) | device = the training device, "
                             "on whole batches, the same pixels (for GPU runs bound by the loader)",
                             choices=("cpu", "device"))
    decode_on: str = option("aug", "cpu", "where training JPEGs are decoded, cropped and resized: cpu = loader "
                            "workers | device = nvJPEG on the GPU, the workers only read the files and draw "
                            "(needs augment_on: device; other formats still decode in the workers)",
                            choices=("cpu", "device"))
    mixup: float = option("aug", 0.8, "mixup alpha (0 = off)", rule=">= 0")
    cutmix: float = option("aug", 1.0, "cutmix alpha (0 = off)", rule=">= 0")
    cutmix_minmax: list[float] | None = option("aug", None, "cutmix box ratio [min, max] with 0 < min < max "
                                               "<= 1 (overrides alpha)")
    mixup_prob: float = option("aug", 1.0, "probability of applying mixup or cutmix per batch", rule="[0, 1]")
    mixup_switch_prob: float = option("aug", 0.5, "probability of cutmix instead of mixup when both on",
                                      "switch_prob", rule="[0, 1]")
    mixup_mode: str = option("aug", "batch", "mixup granularity", choices=("batch", "pair", "elem"))
    mixup_off_epoch: int = option("aug", 0, "turn mixup off from this epoch (0 = never)", rule=">= 0")
    smoothing: float = option("aug", 0.1, "label smoothing", "label_smoothing", rule="[0, 1)")
    # ----- optimizer and schedule
    opt: str = option("optim", "adamw", "optimizer (sgd = Nesterov SGD, momentum = SGD with momentum)",
                      "optimizer", choices=("adamw", "adam", "sgd", "momentum"))
    lr: float = option("optim", 5e-4, "base learning rate (scaled by global batch / 512 unless unscale_lr)",
                       "base_lr", "lr_init", rule=">= 0")
    min_lr: float = option("optim", 1e-5, "lower lr bound of cosine/plateau schedules", rule=">= 0")
    warmup_lr: float = option("optim", 1e-6, "lr at the start of warmup", rule=">= 0")
    warmup_epochs: int = option("optim", 5, "linear warmup epochs", "warmup_length", rule=">= 0")
    momentum: float = option("optim", 0.9, "SGD momentum", rule=">= 0")
    weight_decay: float = option("optim", 0.05, "weight decay (not on biases, norms, pos-embed, tokens)",
                                 rule=">= 0")
    opt_eps: float = option("optim", 1e-8, "AdamW epsilon", "eps", rule=">= 0")
    opt_betas: list[float] = option("optim", [0.9, 0.999], "AdamW betas: two numbers in [0, 1)", "beta",
                                    "betas")
    layer_decay: float | None = option("optim", None, "layer-wise lr decay (BEiT); null/1.0 = off",
                                       rule="(0, 1]")
    unscale_lr: bool = option("optim", False, "use lr as given, without linear scaling by batch")
    sched: str = option("optim", "cosine", "lr schedule (seeds' cosine_lr = cosine)", "lr_scheduler",
                        choices=("cosine", "step", "exponential", "plateau", "constant"), names=SCHED_NAMES)
    decay_epochs: float = option("optim", 30.0, "step schedule: epochs between decays", "lr_adjust",
                                 rule=">= 0")
    decay_rate: float = option("optim", 0.1, "step/exponential/plateau decay factor", "lr_gamma", rule=">= 0")
    patience_epochs: int = option("optim", 10, "plateau schedule patience", rule=">= 0")
    cooldown_epochs: int = option("optim", 0, "the last N of `epochs` at min_lr (0: the schedule spans every "
                                  "epoch, as DeiT's cosine does)", rule=">= 0")
    epochs: int = option("optim", 300, "epochs to train", "epoch_size", rule=">= 0")
    start_epoch: int = option("optim", 0, "first epoch (for schedules; resume sets it)", rule=">= 0")
    update_freq: int = option("optim", 1, "gradient accumulation steps per optimizer update", "accum_iter",
                              rule=">= 1")
    clip_grad: float | None = option("optim", None, "max global grad norm (null = no clipping)", rule=">= 0")
    use_clip_grad_norm: bool = option("optim", False, "seed style: clip at clip_grad_norm (sets clip_grad)")
    clip_grad_norm: float = option("optim", 1.0, "seed style: norm used when use_clip_grad_norm")
    bce_loss: bool = option("optim", False, "binary cross-entropy on (mixed) targets instead of softmax CE")
    # ----- precision
    amp_level: str = option("precision", "O1", "O0 fp32 | O1/O2 autocast | O3 half weights",
                            choices=("O0", "O1", "O2", "O3"))
    amp_dtype: str = option("precision", "auto", "autocast dtype; auto = bf16 where supported else fp16 "
                            "(on CPU: bf16 with AVX512-BF16/AMX units where a timed training step is faster, else fp32); int8: "
                            "eval only, linear layers in int8 on a CPU", choices=("auto", "bf16", "fp16", "int8"),
                            names=PRECISION_NAMES)
    is_dynamic_loss_scale: bool = option("precision", True, "fp16: dynamic loss scaling (GradScaler)")
    loss_scale: float = option("precision", 1024.0, "fp16: fixed loss scale when not dynamic", rule=">= 0")
    nonfinite_policy: str = option("precision", "skip", "non-finite loss: skip the step | stop the run",
                                   choices=("skip", "stop"))
    # ----- EMA
    model_ema: bool = option("ema", False, "keep an exponential moving average of the weights", "with_ema")
    model_ema_decay: float = option("ema", 0.99996, "EMA decay per step", "ema_decay", rule="(0, 1)")
    model_ema_force_cpu: bool = option("ema", False, "keep the EMA copy on the CPU")
    # ----- distillation
    distillation_type: str = option("distill", "none", "DeiT distillation", choices=("none", "soft", "hard"))
    distillation_alpha: float = option("distill", 0.5, "weight of the distillation loss", rule="[0, 1]")
    distillation_tau: float = option("distill", 1.0, "soft distillation temperature", rule=">= 0")
    teacher_model: str = option("distill", "regnety_160", "teacher: zoo, timm or torchvision model name")
    teacher_path: str = option("distill", "", "teacher weights: a file, a tag (regnety_160.deit_in1k), "
                               "hf-hub:org/repo or a URL")
    # ----- masked image modeling (BEiT pre-training) and tokenizers
    mim_target: str = option("mim", "dall-e", "what masked patches predict: dall-e (the DALL-E dVAE's visual "
                             "tokens) | tokenizer (a `vitzoo train-tokenizer` run's tokens) | pixels (normalised "
                             "patch pixels, as MAE/SimMIM)", "discrete_vae_type",
                             choices=("dall-e", "tokenizer", "pixels"),
                             names={"dalle": "dall-e", "dall_e": "dall-e", "customized": "tokenizer",
                                    "vqvae": "tokenizer", "pixel": "pixels"})
    tokenizer_path: str = option("mim", "", "tokenizer weights: the DALL-E encoder (.safetensors from "
                                 "`vitzoo convert encoder.pkl`) or a train-tokenizer run's file",
                                 "discrete_vae_weight_path")
    mask_ratio: float = option("mim", 0.4, "fraction of patches masked (BEiT: 75 of 196 = 0.38)",
                               rule="(0, 1)")
    min_mask_patches: int = option("mim", 16, "smallest masked block, in patches (BEiT: 16)",
                                   "min_mask_patches_per_block", rule=">= 1")
    max_mask_patches: int | None = option("mim", None, "largest masked block; null = the number to mask",
                                          "max_mask_patches_per_block", rule=">= 1")
    mask_aspect: float = option("mim", 0.3, "block aspect ratio range [mask_aspect, 1/mask_aspect] "
                                "(BEiT: 0.3)", "min_mask_aspect", rule="(0, 1]")
    second_input_size: int | None = option("mim", None, "tokenizer view size; null = patch grid x the "
                                           "tokenizer's downsampling (224 px, patch 16, DALL-E: 112)",
                                           rule="> 0")
    second_interpolation: str = option("mim", "lanczos", "tokenizer view resize (BEiT: lanczos)",
                                       choices=("bicubic", "bilinear", "lanczos", "nearest"))
    norm_pix_loss: bool = option("mim", True, "pixels target: normalise each patch by its mean/std (MAE)")
    tokenizer_type: str = option("mim", "vqvae", "train-tokenizer: vqvae (vector quantiser) | dvae "
                                 "(Gumbel-softmax discrete VAE, as DALL-E)", choices=("vqvae", "dvae"))
    codebook_size: int = option("mim", 1024, "train-tokenizer: visual vocabulary size (DALL-E: 8192)",
                                rule=">= 2")
    tokenizer_width: int = option("mim", 64, "train-tokenizer: channels of the first conv stage", rule=">= 1")
    # ----- representation probes (frozen encoder; features cached once per split)
    probe_block: int | None = option("probe", None, "block whose output tokens are the feature (0-based; "
                                     "null = the last, through the model's final norm)", rule=">= 0")
    probe_pool: str = option("probe", "auto", "feature pooling: cls (class token) | mean (patch tokens, "
                             "BEiT's probe) | auto (the model's own; mean for a pretrain checkpoint)",
                             choices=("auto", "cls", "mean"))
    probe_epochs: int = option("probe", 100, "linprobe: epochs over the cached train features", rule=">= 1")
    probe_lr: float = option("probe", 0.1, "linprobe: peak lr of SGD (momentum 0.9, cosine to 0, no weight "
                             "decay), not scaled by the batch", rule="> 0")
    probe_batch_size: int = option("probe", 256, "linprobe: feature vectors per step (images are encoded "
                                   "in eval_batch_size batches)", rule=">= 1")
    knn_k: int = option("probe", 20, "knn: neighbours that vote (DINO: 20)", rule=">= 1")
    knn_t: float = option("probe", 0.07, "knn: temperature of the exp(cosine / T) vote weights (DINO: 0.07)",
                          rule="> 0")
    # ----- run
    seed: int = option("run", 0, "random seed (rank is added per process)")
    device: str = option("run", "auto", "auto | cuda | cuda:N | cpu (MindSpore device_target GPU/CPU)")
    output_dir: str = option("run", "output", "folder for checkpoints, logs, metrics")
    resume: str = option("run", "", "checkpoint to continue from ('' = none, auto = newest in output_dir)")
    overwrite: bool = option("run", False, "output_dir holds an earlier run: delete its checkpoints, logs, "
                             "metrics and TensorBoard files first (nothing else); without it such a folder "
                             "is refused")
    ckpt_keep_num: int = option("run", 10, "newest checkpoints kept", "keep_checkpoint_max", rule=">= 0")
    best_ckpt_num: int = option("run", 5, "best checkpoints (val top-1) kept", rule=">= 0")
    ckpt_save_every_step: int = option("run", 0, "save every N optimizer steps (0 = off)", rule=">= 0")
    ckpt_save_every_seconds: int = option("run", 1800, "save every N seconds (0 = off)",
                                          "ckpt_save_every_sec", rule=">= 0")
    print_loss_every: int = option("run", 20, "log a line every N steps (non-terminal output)", rule=">= 1")
    summary_loss_collect_freq: int = option("run", 1, "TensorBoard loss every N steps", rule=">= 1")
    eval_every: int = option("run", 1, "validate every N epochs (and at the end)", rule=">= 1")
    use_ema_for_eval: bool = option("run", False, "validate the EMA weights")
    dist_timeout: float = option("run", 600.0, "seconds a torchrun process waits for a peer that hangs "
                                 "before the run stops (a dead peer is noticed at once)", rule="> 0")
    log_dir: str = option("run", "", "text logs folder ('' = output_dir)", "logs_root_dir")
    ckpt_dir: str = option("run", "", "checkpoints folder ('' = output_dir/checkpoints)", "ckpt_root_dir")
    best_ckpt_dir: str = option("run", "", "best checkpoints folder ('' = output_dir/best)",
                                "best_ckpt_root_dir")
    summary_dir: str = option("run", "", "TensorBoard folder ('' = output_dir/tensorboard)",
                              "summary_root_dir")
    notes: list = field(default_factory=list, repr=False, compare=False)  # one line per no-effect key
    # canonical key -> where it was set (YAML path / "command line"): what the user chose, as opposed to
    # a default; eval lets only these override the checkpoint's preprocessing. Not a config value.
    explicit: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    # ----- derived values (arithmetic on the keys, next to them)
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
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0 or self.cutmix_minmax is not None)

    def to_dict(self) -> dict:
        """Every canonical key -> JSON-safe value (goes into checkpoint meta['config'])."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in schema()}


# --------------------------------------------------------------------------- the schema as tables
def schema() -> list[dataclasses.Field]:
    """The option fields in declaration (= section) order."""
    return [f for f in dataclasses.fields(RunConfig) if "section" in f.metadata]


_HINTS = typing.get_type_hints(RunConfig)
KINDS: dict[str, Kind] = {f.name: kind_of(_HINTS[f.name]) for f in schema()}
FIELDS = {f.name: f for f in schema()}
ALIASES: dict[str, str] = {a: f.name for f in schema() for a in (f.name, *f.metadata["aliases"])}


def default_of(name: str) -> Any:
    f = FIELDS[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()
