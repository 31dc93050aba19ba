"""Hugging Face ``transformers`` folders: ViT, DeiT and BEiT (``config.json`` + ``model.safetensors`` /
``pytorch_model.bin``), as ``save_pretrained`` writes them and the hub stores them.

Classes read (``config.json`` ``architectures``): ``ViTForImageClassification``, ``ViTModel``,
``DeiTForImageClassification``, ``DeiTForImageClassificationWithTeacher``, ``DeiTModel``,
``BeitForImageClassification``, ``BeitModel``. The architecture comes from ``config.json``: the file
records a registered name that fits and the config fields (sizes, classes, image size, BEiT options).

Key names (modeling_vit.py / modeling_deit.py / modeling_beit.py; the names on disk, which transformers
5 still writes; its in-memory names ``layers.N.attention.q_proj`` ... are read too)::

    {vit,deit,beit}.embeddings.{cls_token, distillation_token, position_embeddings, mask_token}
    {...}.embeddings.patch_embeddings.projection          -> patch_embed.proj
    {...}.encoder.layer.N.attention.attention.{query,key,value} -> blocks.N.attn.qkv (fused, q k v rows)
                                                 (BEiT: key has no bias -> attn.q_bias / attn.v_bias)
    {...}.encoder.layer.N.attention.output.dense          -> blocks.N.attn.proj
    {...}.encoder.layer.N.{intermediate,output}.dense     -> blocks.N.mlp.fc1 / fc2
    {...}.encoder.layer.N.layernorm_{before,after}        -> blocks.N.norm1 / norm2
    beit.encoder.layer.N.lambda_{1,2}                     -> blocks.N.gamma_{1,2}
    beit...attention.attention.relative_position_bias.relative_position_bias_table -> attn.(same)
    beit.encoder.relative_position_bias.relative_position_bias_table -> rel_pos_bias.(same)
    {vit,deit,beit}.layernorm -> norm;  beit.pooler.layernorm -> fc_norm;  pooler.dense -> pre_logits.fc
    classifier / cls_classifier -> head;  distillation_classifier -> head_dist

Numerics: HF's LayerNorm epsilon is ``layer_norm_eps`` (1e-12 in every released ViT / DeiT / BEiT config,
1e-6 in timm) and ``hidden_act`` picks exact ("gelu") or tanh ("gelu_new", "gelu_pytorch_tanh") GELU:
both are recorded as :attr:`Weights.numerics`. ``DeiTForImageClassification`` keeps the distillation token
but classifies the class token alone: ``dist_head=False``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from vitzoo.constants import IMAGENET_MEAN
from vitzoo.errors import UserError
from vitzoo.models.convert import hub
from vitzoo.models.convert.weights import Weights
from vitzoo.models.registry import get_entry, list_models

NAME = "Hugging Face transformers"
MODEL_TYPES = ("vit", "deit", "beit")
_GELU = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True}

# transformers 5 in-memory names -> the on-disk names mapped below
_V5 = [(r"\blayers\.(\d+)\.", r"encoder.layer.\1."), (r"\.attention\.q_proj\.", ".attention.attention.query."),
       (r"\.attention\.k_proj\.", ".attention.attention.key."), (r"\.attention\.v_proj\.", ".attention.attention.value."),
       (r"\.attention\.o_proj\.", ".attention.output.dense."), (r"\.mlp\.fc1\.", ".intermediate.dense."),
       (r"\.mlp\.fc2\.", ".output.dense."), (r"\.relative_position_bias\.relative_position_bias_table$",
                                              ".attention.attention.relative_position_bias.relative_position_bias_table")]
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
LAYER_KEYS = {"attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
               "layernorm_before": "norm1", "layernorm_after": "norm2"}
TOP_KEYS = {"embeddings.cls_token": "cls_token", "embeddings.distillation_token": "dist_token",
             "embeddings.position_embeddings": "pos_embed", "embeddings.mask_token": "mask_token",
             "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
             "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
             "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
             "pooler.layernorm.weight": "fc_norm.weight", "pooler.layernorm.bias": "fc_norm.bias",
             "pooler.dense.weight": "pre_logits.fc.weight", "pooler.dense.bias": "pre_logits.fc.bias",
             "encoder.relative_position_bias.relative_position_bias_table":
                 "rel_pos_bias.relative_position_bias_table"}
_HEADS = {"classifier": "head", "cls_classifier": "head", "distillation_classifier": "head_dist"}


def detect(obj: dict | None, path: str | None) -> bool:
    config = hub.read_config(path) if obj is None else None
    return bool(config) and config.get("model_type") in MODEL_TYPES


def _from_v5(key: str) -> str:
    if ".q_proj." not in key and ".mlp.fc" not in key and not re.search(r"\blayers\.\d+\.", key):
        return key
    for pattern, repl in _V5:
        key = re.sub(pattern, repl, key)
    return key


def to_state_dict(tensors: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """HF names -> vitzoo names; q/k/v fused (BEiT: q and v biases kept apart, k has none)."""
    sd: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        key = _from_v5(key)
        key = key.split(".", 1)[1] if key.startswith(f"{model_type}.") else key  # headless models: no prefix
        head = key.rsplit(".", 1)
        if head[0] in _HEADS:
            sd[f"{_HEADS[head[0]]}.{head[1]}"] = value
        elif key in TOP_KEYS:
            sd[TOP_KEYS[key]] = value
        elif m := _LAYER.match(key):
            i, rest = int(m.group(1)), m.group(2)
            part = rest.rsplit(".", 1)
            if rest.startswith("attention.attention.") and part[0].rsplit(".", 1)[-1] in ("query", "key", "value"):
                qkv.setdefault(i, {})[f"{part[0].rsplit('.', 1)[-1]}.{part[1]}"] = value
            elif rest.endswith("relative_position_bias_table"):
                sd[f"blocks.{i}.attn.relative_position_bias_table"] = value
            elif rest.endswith("relative_position_index"):
                continue  # derived from the grid; rebuilt by the model
            elif rest in ("lambda_1", "lambda_2"):
                sd[f"blocks.{i}.gamma_{rest[-1]}"] = value
            elif part[0] in LAYER_KEYS:
                sd[f"blocks.{i}.{LAYER_KEYS[part[0]]}.{part[1]}"] = value
            else:
                raise UserError(f"unexpected tensor {key} in a {model_type} checkpoint")
        elif not key.endswith("relative_position_index"):
            raise UserError(f"unexpected tensor {key} in a {model_type} checkpoint")
    for i, p in qkv.items():
        sd[f"blocks.{i}.attn.qkv.weight"] = torch.cat([p["query.weight"], p["key.weight"], p["value.weight"]])
        if model_type == "beit":
            if "query.bias" in p:
                sd[f"blocks.{i}.attn.q_bias"], sd[f"blocks.{i}.attn.v_bias"] = p["query.bias"], p["value.bias"]
        elif "query.bias" in p:
            sd[f"blocks.{i}.attn.qkv.bias"] = torch.cat([p["query.bias"], p["key.bias"], p["value.bias"]])
    return sd


def _numerics(config: dict) -> dict[str, Any]:
    act = config.get("hidden_act", "gelu")
    if act not in _GELU:
        raise UserError(f"hidden_act {act!r} is not supported (vitzoo models use GELU: {', '.join(_GELU)})")
    return {"norm_eps": float(config.get("layer_norm_eps", 1e-12)), "gelu_approximate": _GELU[act]}


def _family(model_type: str, folder: Path) -> str:
    """``vit``, ``deit`` or ``beit``: the registry family whose preprocessing the file's matches."""
    if model_type != "vit":
        return model_type
    # facebook/deit-*-patch16-224 (no distillation token) are stored as model_type "vit": tell them by
    # their ImageNet normalisation (preprocessor_config.json), to keep DeiT's preprocessing
    try:
        mean = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8")).get("image_mean")
    except (OSError, ValueError, AttributeError):
        mean = None
    close = isinstance(mean, list) and len(mean) == 3 and all(abs(a - b) < 1e-3 for a, b in zip(mean, IMAGENET_MEAN))
    return "deit" if close else "vit"


def pick_arch(family: str, kwargs: dict[str, Any]) -> str:
    """The registered ``family`` name whose config matches ``kwargs`` most closely (sizes first)."""
    order = ("embed_dim", "depth", "num_heads", "patch_size", "distilled", "img_size")
    best, best_score = None, -1
    for name in list_models(f"{family}_*"):
        cfg = get_entry(name).cfg
        score = sum(2 ** (len(order) - i) for i, key in enumerate(order)
                    if key in kwargs and getattr(cfg, key, None) == kwargs[key])
        if score > best_score:
            best, best_score = name, score
    if best is None:
        raise UserError(f"no registered {family} model")
    return best


def model_kwargs(config: dict, sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The vitzoo config fields ``config.json`` records (sizes, classes, image size, BEiT options)."""
    model_type, classes = config["model_type"], config.get("architectures") or [""]
    D = int(config["hidden_size"])
    kw: dict[str, Any] = {"embed_dim": D, "depth": int(config["num_hidden_layers"]),
                          "num_heads": int(config["num_attention_heads"]),
                          "mlp_ratio": int(config["intermediate_size"]) / D, "img_size": int(config["image_size"]),
                          "patch_size": int(config["patch_size"]), "in_chans": int(config.get("num_channels", 3))}
    if "head.weight" in sd:
        kw["num_classes"] = int(sd["head.weight"].shape[0])
    if model_type == "beit":
        scale = config.get("layer_scale_init_value", 0.1)
        kw.update(qkv_bias=bool(config.get("qkv_bias", True)),  # written by vitzoo's --to hf only (to_hf.py)
                  use_abs_pos_emb=bool(config.get("use_absolute_position_embeddings", False)),
                  use_rel_pos_bias=bool(config.get("use_relative_position_bias", False)),
                  use_shared_rel_pos_bias=bool(config.get("use_shared_relative_position_bias", False)),
                  use_mean_pooling=bool(config.get("use_mean_pooling", True)),
                  layer_scale_init_value=float(scale) if scale and scale > 0 else None)
        return kw
    kw["qkv_bias"] = bool(config.get("qkv_bias", True))
    kw["distilled"] = model_type == "deit"  # every HF DeiT has the distillation token
    if model_type == "deit":
        kw["dist_head"] = classes[0] != "DeiTForImageClassification"
    return kw


def read(obj: None, path: str, use_ema: bool) -> Weights:
    config = hub.read_config(path) or {}
    model_type = config["model_type"]
    folder = hub.hub_folder(path)
    tensors, file = hub.read_hub_weights(path)
    try:
        sd = to_state_dict(tensors, model_type)
        family = _family(model_type, folder)
        kwargs = model_kwargs(config, sd)
        if model_type == "beit" and not kwargs["qkv_bias"]:  # the zeros to_hf.py writes for transformers' biases
            sd = {k: v for k, v in sd.items() if not k.endswith((".attn.q_bias", ".attn.v_bias"))}
    except KeyError as e:
        raise UserError(f"{path}: {hub.CONFIG} lacks {e.args[0]}") from e
    except UserError as e:
        raise UserError(f"{path}: {e}") from e
    arch = pick_arch(family, kwargs)
    classes = (config.get("architectures") or ["?"])[0]
    meta = {}
    labels = config.get("id2label") or {}
    names = [str(labels.get(str(i), labels.get(i, ""))) for i in range(kwargs.get("num_classes", 0))]
    if names and any(n and n != f"LABEL_{i}" for i, n in enumerate(names)):
        meta["class_names"] = names
    return Weights(sd, f"{NAME} {classes} ({file})", path, meta=meta, arch=arch, model_kwargs=kwargs,
                   numerics=_numerics(config), family=family)
