"""``vitzoo convert CKPT DIR --to timm``: a vitzoo model as timm's hub folder, the layout
``timm.models.push_to_hf_hub`` / ``save_for_hf`` write and :mod:`.timm_hub` reads.

``config.json`` holds ``architecture`` (the registered name, which is timm's: vitzoo's ViT / DeiT / BEiT
variants carry timm's names and sizes), ``num_classes``, ``num_features``, ``global_pool``, ``label_names``,
``model_args`` (the arguments that differ from the variant's defaults, in timm's argument names, so
``timm.create_model("hf-hub:USER/REPO")`` or ``"local-dir:DIR"`` builds the same shape) and
``pretrained_cfg`` (input size, crop_pct, interpolation, mean / std: the model's eval preprocessing).
``model.safetensors`` is the state dict as is: vitzoo's key names are timm's.

timm computes with LayerNorm eps 1e-6 and exact GELU; a model with other numerics (one converted from
transformers or MindSpore) is written all the same and the logit change it makes is reported
(:func:`target_numerics`). T2T-ViT is not a timm model and is refused.
"""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from vitzoo.errors import UserError
from vitzoo.models.convert import hub_out, model_card
from vitzoo.models.registry import get_entry

NAME = "timm hub folder"
SUFFIX = ""  # a folder: picked by --to timm only
NUMERICS = {"norm_eps": 1e-6, "gelu_approximate": False}  # timm's LayerNorm(eps=1e-6), nn.GELU()
FAMILIES = ("vit", "deit", "beit")
# the config fields that shape the network, as timm's constructor arguments (VisionTransformer / Beit);
# every one is written, not only those that differ from the variant, so the file does not depend on defaults
_ARGS = {"img_size": "img_size", "patch_size": "patch_size", "in_chans": "in_chans", "embed_dim": "embed_dim",
         "depth": "depth", "num_heads": "num_heads", "mlp_ratio": "mlp_ratio", "qkv_bias": "qkv_bias",
         "layer_scale_init_value": "init_values"}
_BEIT_ARGS = {"use_abs_pos_emb": "use_abs_pos_emb", "use_rel_pos_bias": "use_rel_pos_bias",
              "use_shared_rel_pos_bias": "use_shared_rel_pos_bias"}


def target_numerics(model: nn.Module) -> dict[str, Any]:
    return dict(NUMERICS)


def _check(model: nn.Module) -> None:
    if model.arch.split("_", 1)[0] not in FAMILIES:
        raise UserError(f"--to timm writes ViT, DeiT and BEiT models (timm has them under the same names); "
                        f"{model.arch} is not one")
    cfg, default = model.cfg, get_entry(model.arch).cfg
    if getattr(cfg, "representation_size", None):
        raise UserError("--to timm: timm's VisionTransformer has no pre-logits layer (representation_size); "
                        "write --to hf or a vitzoo checkpoint instead")
    if getattr(cfg, "distilled", False) != getattr(default, "distilled", False) or not getattr(cfg, "dist_head", True):
        raise UserError(f"--to timm: {model.arch} with distilled={cfg.distilled}, dist_head={cfg.dist_head} is not "
                        "a timm model (timm's distilled DeiTs are the *_distilled_* names, with both heads)")


def model_args(model: nn.Module) -> dict[str, Any]:
    """The constructor arguments that rebuild ``model``'s network in timm (``global_pool`` "avg": the mean
    of the patch tokens and fc_norm, "token": the class token)."""
    cfg = model.cfg
    names = {**_ARGS, **(_BEIT_ARGS if model.arch.startswith("beit") else {})}
    args: dict[str, Any] = {timm_name: getattr(cfg, name) for name, timm_name in names.items()}
    args["init_values"] = args["init_values"] or None  # vitzoo: None or 0 = no LayerScale; timm: None
    args["global_pool"] = "avg" if cfg.use_mean_pooling else "token"
    args["num_classes"] = model.num_classes
    return args


def pretrained_cfg(model: nn.Module, dc: dict[str, Any]) -> dict[str, Any]:
    """timm's preprocessing record, from the checkpoint's data config (:func:`.hub_out.data_config`)."""
    classifier = ["head", "head_dist"] if getattr(model, "head_dist", None) is not None else "head"
    return {"input_size": list(dc["input_size"]), "fixed_input_size": True,
            "interpolation": dc.get("interpolation", "bicubic"), "crop_pct": dc.get("crop_pct", 1.0),
            "crop_mode": "center", "mean": list(dc["mean"]), "std": list(dc["std"]),
            "num_classes": model.num_classes, "first_conv": "patch_embed.proj", "classifier": classifier}


def timm_config(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    class_names = list(meta.get("class_names") or [])
    config: dict[str, Any] = {
        "architecture": model.arch, "num_classes": model.num_classes, "num_features": model.embed_dim,
        "global_pool": "avg" if model.cfg.use_mean_pooling else "token"}
    if len(class_names) == model.num_classes:
        config["label_names"] = list(class_names)
    config["model_args"] = model_args(model)
    config["pretrained_cfg"] = pretrained_cfg(model, hub_out.data_config(model, meta))
    return config


def write(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, overwrite: bool = False):
    meta = meta or {}
    _check(model)
    config = timm_config(model, meta)
    tensors = {k: v for k, v in model.state_dict().items() if not k.endswith("relative_position_index")}
    card = model_card.render(model, meta, library="timm", hub_class=model.arch, numerics=NUMERICS)
    return hub_out.write_hub_folder(path, tensors, config, card, overwrite=overwrite)
