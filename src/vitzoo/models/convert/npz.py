"""Google ViT ``.npz`` checkpoints (``ViT-B_16.npz`` and friends) -> a state dict in our (timm) key layout.

The ViT seed fine-tunes from Google's ImageNet-21k ``ViT-B_16.npz`` (released with arXiv:2010.11929,
github.com/google-research/vision_transformer). Those files are flat numpy archives whose names are the
Flax module paths and whose dense kernels are stored ``(in, out)``, attention kernels per head::

    embedding/kernel                    (ph, pw, 3, D)   conv kernel, HWIO   -> patch_embed.proj.weight (OIHW)
    cls                                 (1, 1, D)                            -> cls_token
    Transformer/posembed_input/pos_embedding (1, 1+N, D)                     -> pos_embed
    Transformer/encoderblock_i/LayerNorm_0/{scale,bias}                      -> blocks.i.norm1
    Transformer/encoderblock_i/MultiHeadDotProductAttention_1/{query,key,value}/kernel  (D, heads, hd)
                                                                             -> blocks.i.attn.qkv (3D, D)
    Transformer/encoderblock_i/MultiHeadDotProductAttention_1/out/kernel    (heads, hd, D) -> attn.proj
    Transformer/encoderblock_i/LayerNorm_2/{scale,bias}                      -> blocks.i.norm2
    Transformer/encoderblock_i/MlpBlock_3/Dense_{0,1}/{kernel,bias}          -> blocks.i.mlp.fc{1,2}
    Transformer/encoder_norm/{scale,bias}                                    -> norm
    pre_logits/{kernel,bias}  (21k files only: the tanh "representation" layer) -> pre_logits.fc
    head/{kernel,bias}                                                       -> head

The archive is read with ``allow_pickle=False``: it can never run code. torch cannot open these files, so
the layout is recognised by its ``.npz`` suffix before anything is loaded (``obj`` is None then).
"""
from __future__ import annotations

import os
import re
from functools import partial
from typing import Any

import numpy as np
import torch

from vitzoo.errors import UserError
from vitzoo.models.convert.weights import Weights

NAME = "Google ViT .npz"

_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_ATTN = "MultiHeadDotProductAttention_1"


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _dense(w: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Flax Dense (in, out) kernel -> torch Linear (out, in) weight, plus bias."""
    return _t(w[f"{name}/kernel"]).T.contiguous(), _t(w[f"{name}/bias"])


def _block(w: dict, p: str, i: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    b = f"blocks.{i}."
    for src, dst in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
        out[b + dst + ".weight"] = _t(w[f"{p}{src}/scale"])
        out[b + dst + ".bias"] = _t(w[f"{p}{src}/bias"])
    # query/key/value kernels are (D, heads, head_dim); flatten the heads and stack q, k, v row-wise, which
    # is the order timm's fused qkv Linear splits them in (reshape(B, N, 3, heads, hd)).
    ws, bs = [], []
    for name in ("query", "key", "value"):
        k = w[f"{p}{_ATTN}/{name}/kernel"]
        ws.append(_t(k.reshape(k.shape[0], -1)).T)  # (D, D) out x in
        bs.append(_t(w[f"{p}{_ATTN}/{name}/bias"]).reshape(-1))
    out[b + "attn.qkv.weight"] = torch.cat(ws, 0).contiguous()  # (3D, D)
    out[b + "attn.qkv.bias"] = torch.cat(bs, 0)
    k = w[f"{p}{_ATTN}/out/kernel"]  # (heads, head_dim, D)
    out[b + "attn.proj.weight"] = _t(k.reshape(-1, k.shape[-1])).T.contiguous()
    out[b + "attn.proj.bias"] = _t(w[f"{p}{_ATTN}/out/bias"])
    out[b + "mlp.fc1.weight"], out[b + "mlp.fc1.bias"] = _dense(w, f"{p}MlpBlock_3/Dense_0")
    out[b + "mlp.fc2.weight"], out[b + "mlp.fc2.bias"] = _dense(w, f"{p}MlpBlock_3/Dense_1")
    return out


def npz_to_state_dict(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map Google ViT names/layouts to our (timm-equal) state-dict keys. Raises UserError on other layouts."""
    w = dict(weights)
    if "embedding/kernel" not in w or "Transformer/posembed_input/pos_embedding" not in w:
        hint = ", ".join(sorted(w)[:5])
        raise UserError(f"not a Google ViT .npz (no embedding/kernel or posembed_input; first keys: {hint})")
    if any(k.startswith(("conv_root", "block")) for k in w):
        raise UserError("hybrid ResNet+ViT .npz files (R50+ViT) are not supported; only pure ViT-* files")
    sd: dict[str, torch.Tensor] = {
        # HWIO -> OIHW: (ph, pw, in, out) -> (out, in, ph, pw)
        "patch_embed.proj.weight": _t(w["embedding/kernel"]).permute(3, 2, 0, 1).contiguous(),
        "patch_embed.proj.bias": _t(w["embedding/bias"]),
        "cls_token": _t(w["cls"]),
        "pos_embed": _t(w["Transformer/posembed_input/pos_embedding"]),
        "norm.weight": _t(w["Transformer/encoder_norm/scale"]),
        "norm.bias": _t(w["Transformer/encoder_norm/bias"]),
    }
    depth = 1 + max((int(m.group(1)) for k in w if (m := _BLOCK.match(k))), default=-1)
    if depth == 0:
        raise UserError("Google ViT .npz without any Transformer/encoderblock_N entries")
    for i in range(depth):
        try:
            sd.update(_block(w, f"Transformer/encoderblock_{i}/", i))
        except KeyError as e:
            raise UserError(f"Google ViT .npz: encoder block {i} lacks {e.args[0]}") from e
    if "pre_logits/kernel" in w:  # 21k release files: tanh(Dense) before the head (timm's pre_logits.fc)
        sd["pre_logits.fc.weight"], sd["pre_logits.fc.bias"] = _dense(w, "pre_logits")
    if "head/kernel" in w:
        sd["head.weight"], sd["head.bias"] = _dense(w, "head")
    return sd


def load_npz(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], int]:
    """Read a Google ViT ``.npz`` file (no pickle): our-layout state dict, and the head count."""
    try:
        with np.load(path, allow_pickle=False) as f:
            weights = {k: f[k] for k in f.files}
    except FileNotFoundError as e:
        raise UserError(f"file not found: {path}") from e
    except Exception as e:  # zip errors, object arrays needing pickle, ...
        raise UserError(f"{path}: not a readable numpy .npz archive ({e})") from e
    try:
        return npz_to_state_dict(weights), int(weights[f"Transformer/encoderblock_0/{_ATTN}/query/kernel"].shape[1])
    except UserError as e:
        raise UserError(f"{path}: {e}") from e


def detect(obj: dict | None, path: str | None) -> bool:
    return obj is None and str(path).endswith(".npz")


def read(obj: None, path: str, use_ema: bool) -> Weights:
    sd, heads = load_npz(path)
    # the head count is in the attention kernels' shapes (D, heads, head_dim), which the fused qkv loses:
    # recorded, so that a file naming no architecture still builds with its heads
    return Weights(sd, NAME, path, arch_overrides=partial(_keep_pre_logits, sd), family="vit",
                   model_kwargs={"num_heads": heads})


def _keep_pre_logits(sd: dict[str, torch.Tensor], cfg: Any) -> dict[str, Any]:
    """A 21k file's pre-logits layer stays whenever the head it feeds is kept (same class count): Google's
    model passes the class token through it. A model with a new head drops it (reported on load)."""
    if "pre_logits.fc.weight" not in sd or "head.weight" not in sd:
        return {}
    if getattr(cfg, "num_classes", None) != sd["head.weight"].shape[0]:
        return {}
    return {"representation_size": int(sd["pre_logits.fc.weight"].shape[0])}
