"""``vitzoo convert CKPT DIR --to hf``: a vitzoo ViT / DeiT / BEiT as a Hugging Face ``transformers`` folder.

The inverse of :mod:`.hf` (the reader): its key tables, read backwards. The folder holds what
``save_pretrained`` writes (``config.json``, ``model.safetensors`` with the on-disk names that transformers
4 and 5 both load, e.g. ``vit.encoder.layer.N.attention.attention.query``), a ``preprocessor_config.json``
for ``AutoImageProcessor`` and the model card (:mod:`.model_card`).

Classes written (``config.json`` ``architectures``):

    ViT, DeiT without distillation token -> ViTForImageClassification  (model_type "vit", as the hub
                                            stores facebook/deit-*-patch16-224; DeiT's ImageNet statistics
                                            in preprocessor_config.json tell the reader it is a DeiT)
    distilled DeiT                        -> DeiTForImageClassificationWithTeacher (logits: the mean of
                                            both heads, vitzoo's default too)
    distilled backbone, one head          -> DeiTForImageClassification (dist_head=False)
    BEiT                                  -> BeitForImageClassification

The numerics travel in the config (``layer_norm_eps`` = the model's ``norm_eps``, ``hidden_act`` "gelu" or
"gelu_pytorch_tanh"), so transformers computes the same function. What transformers' classes cannot
express (ViT mean pooling, LayerScale or a pre-logits layer; T2T-ViT) is refused with a UserError.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from vitzoo.errors import UserError
from vitzoo.models.convert import hf, hub_out, model_card

NAME = "Hugging Face transformers folder"
SUFFIX = ""  # a folder: picked by --to hf only
_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}  # PIL's codes, as HF configs store them

_TOP_OUT = {v: k for k, v in hf.TOP_KEYS.items()}
_LAYER_OUT = {v: k for k, v in hf.LAYER_KEYS.items()}


def target_numerics(model: nn.Module) -> dict[str, Any]:
    return {}  # config.json carries layer_norm_eps and hidden_act: transformers computes as the model does


def family(model: nn.Module) -> str:
    """``vit``, ``deit`` or ``beit``: the registry family (the name's prefix)."""
    fam = model.arch.split("_", 1)[0]
    if fam not in hf.MODEL_TYPES:
        raise UserError(f"--to hf writes ViT, DeiT and BEiT models (transformers has classes for them); "
                        f"{model.arch} is not one")
    return fam


def hf_class(model: nn.Module) -> tuple[str, str]:
    """``(model_type, transformers class)`` for ``model``; a UserError where transformers has none."""
    fam, cfg = family(model), model.cfg
    if model.num_classes <= 0:
        raise UserError(f"--to hf writes image classifiers; {model.arch} has no classifier head (num_classes 0)")
    if fam == "beit":
        return "beit", "BeitForImageClassification"
    unsupported = [name for name, on in (("use_mean_pooling", cfg.use_mean_pooling),
                                         ("layer_scale_init_value", cfg.layer_scale_init_value),
                                         ("representation_size", cfg.representation_size)) if on]
    if unsupported:
        raise UserError(f"--to hf: transformers' ViT / DeiT classes have no {', '.join(unsupported)} "
                        f"({model.arch} uses it); write --to timm or a vitzoo checkpoint instead")
    if not cfg.distilled:
        return "vit", "ViTForImageClassification"
    return "deit", "DeiTForImageClassificationWithTeacher" if cfg.dist_head else "DeiTForImageClassification"


def from_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """vitzoo's state dict in transformers' on-disk names: qkv split into query / key / value."""
    model_type, cls = hf_class(model)
    heads = {"head": "cls_classifier" if cls.endswith("WithTeacher") else "classifier",
             "head_dist": "distillation_classifier"}
    D = model.embed_dim
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach()
        name, _, leaf = key.rpartition(".")
        if key.endswith("relative_position_index") or key == "mask_token":
            continue  # derived from the grid / used by pre-training only: the classifiers have neither
        if key in _TOP_OUT:
            out[f"{model_type}.{_TOP_OUT[key]}"] = value
        elif name in heads:
            out[f"{heads[name]}.{leaf}"] = value
        elif key.startswith("blocks."):
            out.update(_block_tensors(model_type, key, value, D))
        else:
            raise UserError(f"--to hf: {model.arch} has a tensor {key} with no transformers equivalent")
    return out


def _block_tensors(model_type: str, key: str, value: torch.Tensor, D: int) -> dict[str, torch.Tensor]:
    _, i, rest = key.split(".", 2)
    layer = f"{model_type}.encoder.layer.{i}."
    attn = f"{layer}attention.attention."
    if rest == "attn.qkv.weight":
        q, k, v = value.split(D)  # (3D, D): q, k, v rows, as the reader fuses them
        return {f"{attn}query.weight": q, f"{attn}key.weight": k, f"{attn}value.weight": v}
    if rest == "attn.qkv.bias":
        q, k, v = value.split(D)
        return {f"{attn}query.bias": q, f"{attn}key.bias": k, f"{attn}value.bias": v}
    if rest in ("attn.q_bias", "attn.v_bias"):  # BEiT: the key projection has no bias
        return {f"{attn}{'query' if rest[5] == 'q' else 'value'}.bias": value}
    if rest == "attn.relative_position_bias_table":
        return {f"{attn}relative_position_bias.relative_position_bias_table": value}
    if rest in ("gamma_1", "gamma_2"):
        return {f"{layer}lambda_{rest[-1]}": value}
    module, _, leaf = rest.rpartition(".")
    if module in _LAYER_OUT:
        return {f"{layer}{_LAYER_OUT[module]}.{leaf}": value}
    raise UserError(f"--to hf: tensor {key} has no transformers equivalent")


def _beit_zero_biases(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """transformers' BEiT always has query and value biases: zeros stand in for a model without them."""
    if model.cfg.qkv_bias:
        return
    for i in range(len(model.blocks)):
        for part in ("query", "value"):
            tensors[f"beit.encoder.layer.{i}.attention.attention.{part}.bias"] = torch.zeros(model.embed_dim)


def label_maps(model: nn.Module, class_names: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    names = class_names if len(class_names) == model.num_classes else [f"LABEL_{i}" for i in range(model.num_classes)]
    return {str(i): n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}


def hf_config(model: nn.Module, class_names: list[str]) -> dict[str, Any]:
    """``config.json``: the fields transformers' ViTConfig / DeiTConfig / BeitConfig read (the rest default)."""
    model_type, cls = hf_class(model)
    cfg = model.cfg
    id2label, label2id = label_maps(model, class_names)
    intermediate = int(model.state_dict()["blocks.0.mlp.fc1.weight"].shape[0])
    config: dict[str, Any] = {
        "architectures": [cls], "model_type": model_type, "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads, "intermediate_size": intermediate,
        "hidden_act": "gelu_pytorch_tanh" if cfg.gelu_approximate else "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "layer_norm_eps": cfg.norm_eps,
        "image_size": cfg.img_size, "patch_size": cfg.patch_size, "num_channels": cfg.in_chans,
        "id2label": id2label, "label2id": label2id, "dtype": "float32",
    }
    if model_type == "beit":  # qkv_bias: transformers' BEiT ignores it (zero biases stand in); vitzoo reads it
        config.update(qkv_bias=cfg.qkv_bias, use_mask_token=False, use_absolute_position_embeddings=cfg.use_abs_pos_emb,
                      use_relative_position_bias=cfg.use_rel_pos_bias,
                      use_shared_relative_position_bias=cfg.use_shared_rel_pos_bias,
                      layer_scale_init_value=float(cfg.layer_scale_init_value or 0.0),
                      drop_path_rate=0.0, use_mean_pooling=cfg.use_mean_pooling)
    else:
        config["qkv_bias"] = cfg.qkv_bias
    return config


def preprocessor_config(model: nn.Module, dc: dict[str, Any]) -> dict[str, Any]:
    """``preprocessor_config.json`` from the model's eval preprocessing: resize to size / crop_pct, centre
    crop to the input size, normalise (DeiT's and BEiT's processors crop; ViT's would not). ``dc``: the
    checkpoint's data config (:func:`.hub_out.data_config`)."""
    _, h, w = dc["input_size"]
    crop_pct = float(dc.get("crop_pct") or 1.0)
    processor = "BeitImageProcessor" if family(model) == "beit" else "DeiTImageProcessor"
    return {"image_processor_type": processor, "do_resize": True,
            "size": {"height": int(h / crop_pct), "width": int(w / crop_pct)},
            "resample": _RESAMPLE.get(str(dc.get("interpolation", "bicubic")), 3), "do_center_crop": True,
            "crop_size": {"height": h, "width": w}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": list(dc["mean"]), "image_std": list(dc["std"])}


def write(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, overwrite: bool = False):
    meta = meta or {}
    tensors = from_state_dict(model)
    if family(model) == "beit":
        _beit_zero_biases(model, tensors)
    config = hf_config(model, list(meta.get("class_names") or []))
    card = model_card.render(model, meta, library="transformers", hub_class=config["architectures"][0])
    return hub_out.write_hub_folder(path, tensors, config, card, overwrite=overwrite,
                                    extra_json={"preprocessor_config.json":
                                                preprocessor_config(model, hub_out.data_config(model, meta))})
