"""The seeds' dialects: how the MindSpore and PaddleViT spellings map onto RunConfig's canonical keys.

Aliases of one option (``lr``/``base_lr``/``lr_init``) are declared on the field itself (schema.py); this
module holds what is not a plain rename: value spellings (``cosine_lr`` -> ``cosine``), MindSpore keys
that mean something else in PyTorch (``pynative_mode: false`` = compile), and keys accepted with a note
because nothing here corresponds to them. Sources: the "Script Parameters" blocks of seeds 000-004.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

# value spellings -> canonical choice (MindSpore lr_scheduler names, timm short names)
SCHED_NAMES = {"cosine_lr": "cosine", "cosine_annealing": "cosine", "cos": "cosine", "step_lr": "step",
               "multistep": "step", "multistep_lr": "step", "exp": "exponential", "exp_lr": "exponential",
               "exponential_lr": "exponential", "constant_lr": "constant", "plateau_lr": "plateau"}
DATASET_NAMES = {"imagenet": "folder", "imnet": "folder", "image_folder": "folder", "imagefolder": "folder",
                 "cifar-10": "cifar10", "cifar-100": "cifar100"}
PRECISION_NAMES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")

_DEVICE_TARGET = {"gpu": "cuda", "cpu": "cpu", "ascend": "auto"}


def _device_target(value: str) -> str:
    return _DEVICE_TARGET[value.lower()]  # KeyError -> "not one of GPU, CPU, Ascend"


# MindSpore keys with a PyTorch meaning: key -> (canonical field, value type, converter).
MAPPED: dict[str, tuple[str, str, Callable[[Any], Any]]] = {
    # MindSpore GRAPH_MODE (pynative_mode false) compiles the network; torch.compile is the analogue.
    "pynative_mode": ("compile", "bool", lambda v: not v),
    # The seeds build nn.GELU(approximate=not disable_approximate_gelu) and MindSpore's GELU approximates
    # (tanh) unless told not to, so false -> tanh GELU, true -> exact erf GELU (what PyTorch weights use).
    "disable_approximate_gelu": ("gelu_approximate", "bool", lambda v: not v),
    "device_target": ("device", "str", _device_target),
}
DEVICE_TARGETS = "GPU, CPU, Ascend"

# Keys accepted for compatibility, with why they do nothing here.
IGNORED = {
    "device_id": "pick GPUs with CUDA_VISIBLE_DEVICES or the scripts' --device / --device_ids",
    "device_num": "the number of processes comes from torchrun (--nproc_per_node)",
    "dataset_sink_mode": "MindSpore data sinking has no PyTorch counterpart",
    "no_dataset_sink_mode": "MindSpore data sinking has no PyTorch counterpart",
    "collect_input_data": "MindInsight input collection; TensorBoard logs scalars",
    "dump_graph": "MindInsight graph dump",
    "model_postfix": "MindSpore run-folder suffix; set output_dir instead",
    "file_format": "export format is chosen by `vitzoo export --file-format`",
    "drop_block": "unused by these model families in the seeds; attention dropout is attn_drop",
    "use_pytorch_maxpool": "MindSpore CNN pooling switch; these transformers have no max-pool",
    "pre_trained": "ViT seed flag; set pretrained to the checkpoint path",
    "t_max": "ViT seed cosine period; cosine runs over epochs - warmup_epochs",
    "enable_deepspeed": "BEiT's DeepSpeed switch; mixed precision is amp_level/amp_dtype",
    "modelarts": "Huawei ModelArts upload switch",
    "run_modelarts": "Huawei ModelArts upload switch",
    "dist_eval": "evaluation is always sharded over the processes, with exact all-reduced metrics",
    # timm splits random erasing over augmentation splits (AugMix-JSD); vitzoo trains without splits
    "resplit": "random erasing per augmentation split needs aug splits, which vitzoo does not use",
}


# What other toolkits call an option (PyTorch Lightning, Hugging Face Trainer, Keras, mmcv / mmpretrain,
# fairseq, timm's train.py). Not aliases: such a key is still refused, but the message names the vitzoo
# key, which spelling similarity alone misses (``learning_rate`` is closer to ``decay_rate``).
SYNONYMS = {
    **dict.fromkeys(("learning_rate", "base_learning_rate", "initial_lr", "init_lr", "max_lr", "peak_lr",
                     "learningrate"), "lr"),
    **dict.fromkeys(("min_learning_rate", "final_lr", "end_lr", "eta_min", "lr_min"), "min_lr"),
    **dict.fromkeys(("num_epochs", "max_epochs", "n_epochs", "num_train_epochs", "total_epochs", "epoch",
                     "nb_epochs", "train_epochs"), "epochs"),
    **dict.fromkeys(("wd", "weightdecay", "decay", "l2", "l2_reg", "l2_regularization", "weight_decay_rate",
                     "adam_weight_decay"), "weight_decay"),
    **dict.fromkeys(("warmup", "warmup_epoch", "num_warmup_epochs", "warmup_steps", "warmup_iters"),
                    "warmup_epochs"),
    **dict.fromkeys(("batchsize", "bs", "train_batch_size", "per_device_train_batch_size", "micro_batch_size",
                     "batch_size_per_gpu", "samples_per_gpu", "imgs_per_gpu"), "batch_size"),
    **dict.fromkeys(("val_batch_size", "test_batch_size", "per_device_eval_batch_size"), "eval_batch_size"),
    **dict.fromkeys(("gradient_accumulation_steps", "accumulate_grad_batches", "grad_accum",
                     "grad_accum_steps", "accumulation_steps"), "update_freq"),
    **dict.fromkeys(("max_grad_norm", "gradient_clip_val", "grad_clip", "clip_norm", "grad_clip_norm"),
                    "clip_grad"),
    **dict.fromkeys(("optim", "optimizer_name", "optimizer_type"), "opt"),
    **dict.fromkeys(("scheduler", "lr_schedule", "lr_scheduler_type", "schedule", "lr_policy"), "sched"),
    **dict.fromkeys(("adam_epsilon", "epsilon", "adam_eps"), "opt_eps"),
    **dict.fromkeys(("adam_betas", "adam_beta1", "adam_beta2", "beta1", "beta2"), "opt_betas"),
    **dict.fromkeys(("dropout", "dropout_rate", "dropout_prob", "hidden_dropout_prob"), "drop"),
    **dict.fromkeys(("stochastic_depth", "stochastic_depth_rate", "droppath", "drop_path_prob"), "drop_path"),
    **dict.fromkeys(("attention_dropout", "attention_probs_dropout_prob", "attn_dropout"), "attn_drop"),
    **dict.fromkeys(("num_labels", "n_classes", "classes", "num_class", "n_class"), "num_classes"),
    **dict.fromkeys(("img_size", "resolution", "image_resolution", "crop_size", "imgsz"), "input_size"),
    **dict.fromkeys(("model_name", "backbone", "network", "net", "architecture"), "model"),
    **dict.fromkeys(("workers", "n_workers", "dataloader_num_workers", "num_dataloader_workers"),
                    "num_workers"),
    **dict.fromkeys(("data_dir", "data_root", "dataset_path", "dataset_dir", "root", "imagenet_path",
                     "train_data"), "data_path"),
    **dict.fromkeys(("output", "out_dir", "output_path", "save_dir", "work_dir", "outdir"), "output_dir"),
    **dict.fromkeys(("resume_from_checkpoint", "resume_from", "ckpt_path", "resume_path"), "resume"),
    **dict.fromkeys(("pretrained_model", "init_checkpoint", "load_from", "weights", "pretrained_path"),
                    "pretrained"),
    **dict.fromkeys(("random_seed", "manual_seed", "rng_seed"), "seed"),
    **dict.fromkeys(("ema", "use_ema", "ema_model"), "model_ema"),
    **dict.fromkeys(("mixup_alpha",), "mixup"),
    **dict.fromkeys(("cutmix_alpha",), "cutmix"),
    **dict.fromkeys(("randaugment", "rand_augment", "autoaugment"), "aa"),
    **dict.fromkeys(("fp16", "bf16", "mixed_precision", "amp", "precision", "use_amp"), "amp_level"),
    **dict.fromkeys(("teacher", "teacher_name"), "teacher_model"),
    **dict.fromkeys(("distillation",), "distillation_type"),
}


def mapped_note(spelled: str, value: Any, name: str, typed: Any) -> str:
    note = f"{spelled}: {value} -> {name}: {typed}"
    if spelled.lower() == "device_target" and str(value).lower() == "ascend":
        note += " (no Ascend backend in PyTorch; using the best device found)"
    return note
