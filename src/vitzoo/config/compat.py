"""The seeds' dialects: how the MindSpore and PaddleViT spellings map onto RunConfig's canonical keys.

Aliases of one option (``lr``/``base_lr``/``lr_init``) are declared on the field itself (schema.py); this
module holds what is not a plain rename: value spellings (``cosine_lr`` -> ``cosine``), MindSpore keys
that mean something else in PyTorch (``pynative_mode: false`` = compile), and keys accepted with a note
because nothing here corresponds to them. Sources: the "Script Parameters" blocks of seeds 000-004.
"""
from __future__ import annotations

from typing import Any, Callable

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


def mapped_note(spelled: str, value: Any, name: str, typed: Any) -> str:
    note = f"{spelled}: {value} -> {name}: {typed}"
    if spelled.lower() == "device_target" and str(value).lower() == "ascend":
        note += " (no Ascend backend in PyTorch; using the best device found)"
    return note
