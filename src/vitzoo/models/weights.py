"""Official checkpoint layouts -> our models.

Release files as their authors publish them load unchanged:

* DeiT / timm ``.pth``: ``{"model": state_dict}`` (timm key names, which are ours);
* T2T-ViT ``.pth.tar``: ``{"state_dict_ema" | "state_dict": ...}`` with a ``module.`` prefix; the released
  ImageNet weights were trained with attention scale ``embed_dim ** -0.5`` (the official builders set
  ``qk_scale`` when ``pretrained=True``), so a T2T model loading an official file switches to that scale;
* BEiT ``.pth``: ``{"model" | "module": ...}`` with ``relative_position_index`` buffers (dropped: they are
  derived) and, for pre-trained files, one shared relative-position table (copied into every block when
  the model has per-block tables);
* Google ViT ``.npz``: see :mod:`vitzoo.models.npz`.

Then the file is adapted to the model: a classifier of another width is dropped (and left freshly
initialised), absolute position tables are resized bicubically (class/dist tokens kept), BEiT relative
bias tables are resized, T2T's fixed sinusoid table is rebuilt. Everything dropped or resized is logged.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.checkpoint import is_vitzoo_checkpoint, load_checkpoint
from vitzoo.errors import UserError
from vitzoo.models.layers import resize_pos_embed

log = logging.getLogger("vitzoo")

_WRAPPERS = ("model", "module", "state_dict", "model_state")
_DERIVED = ("relative_position_index",)  # buffers rebuilt from the grid; never loaded
_PRETRAIN_ONLY = ("mask_token", "lm_head.", "pre_logits.")  # BEiT MIM / ViT 21k parts a classifier has no use for


def unwrap_state_dict(obj: dict, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Find the state dict inside an official release file and strip ``module.`` prefixes."""
    order = ("state_dict_ema", "model_ema") + _WRAPPERS if use_ema else _WRAPPERS + ("state_dict_ema", "model_ema")
    sd = obj
    for key in order:
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"no state dict found (top-level keys: {', '.join(list(obj)[:8])})")
    return {(k.removeprefix("module.")): v for k, v in sd.items()}


def load_official_state_dict(path: str | Path, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of an official release file (.pth / .pth.tar / .npz), keys as in our models."""
    if str(path).endswith(".npz"):
        from vitzoo.models.npz import load_npz_state_dict

        return load_npz_state_dict(path)
    obj = load_checkpoint(path)
    if is_vitzoo_checkpoint(obj):
        return obj["ema"] if use_ema and obj.get("ema") else obj["model"]
    return unwrap_state_dict(obj, use_ema)


def adapt_state_dict(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fit a state dict of the same architecture (maybe another head / resolution) to ``model``."""
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for k, v in sd.items():
        if k.endswith(_DERIVED) or (k.startswith(_PRETRAIN_ONLY) and k not in target):
            dropped.append(k)
            continue
        out[k] = v

    # BEiT: a shared table (pre-training) copied into every block that has its own (fine-tuning)
    shared = "rel_pos_bias.relative_position_bias_table"
    if shared in out and shared not in target:
        table = out.pop(shared)
        for k in target:
            if k.endswith("attn.relative_position_bias_table"):
                out[k] = table.clone()
        log.info("expanded the shared relative position bias table into every block")

    for k, v in list(out.items()):
        if k not in target or target[k].shape == v.shape:
            continue
        want = target[k]
        if k in ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias"):
            del out[k]
            dropped.append(k)
        elif k == "pos_embed" and getattr(model, "fixed_pos_embed", False):
            out[k] = want  # T2T-ViT: fixed sinusoid table, rebuilt for the new grid
            log.info(f"rebuilt the sinusoid position table for {tuple(want.shape)}")
        elif k == "pos_embed":
            prefix = getattr(model, "num_prefix_tokens", 1)
            out[k] = resize_pos_embed(v, model.patch_embed.grid_size, prefix)
            log.info(f"resized pos_embed {tuple(v.shape)} -> {tuple(want.shape)}")
        elif k.endswith("relative_position_bias_table"):
            from vitzoo.models.beit import resize_rel_pos_table

            grid = model.patch_embed.grid_size
            out[k] = resize_rel_pos_table(v, grid)
            log.info(f"resized {k} {tuple(v.shape)} -> {tuple(want.shape)}")
    heads = [k for k in dropped if k.startswith(("head.", "head_dist."))]
    if heads:
        log.info(f"classifier re-initialised for {getattr(model, 'num_classes', '?')} classes (dropped {', '.join(heads)})")
    other = [k for k in dropped if k not in heads and not k.endswith(_DERIVED)]
    if other:
        log.info(f"dropped {len(other)} tensors the model has no use for: {', '.join(other[:6])}")
    for k in heads:  # keep the fresh head of the model
        out[k] = target[k]
    return out


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:4])})")
        raise UserError(f"{source} does not fit {getattr(model, 'arch', 'the model')}: {'; '.join(parts)}")


def load_pretrained(model: nn.Module, source: str | Path | dict, use_ema: bool = False) -> dict[str, Any]:
    """Load weights (ours or an official release) into ``model``; returns the file's meta ({} if none)."""
    name = str(source) if not isinstance(source, dict) else "the checkpoint"
    if isinstance(source, dict):
        obj = source
    elif str(source).endswith(".npz"):
        obj = {"model": load_official_state_dict(source)}
    else:
        obj = load_checkpoint(source)
    ours = is_vitzoo_checkpoint(obj)
    if ours:
        sd = obj["ema"] if use_ema and obj.get("ema") else obj["model"]
        if use_ema and not obj.get("ema"):
            log.warning(f"{name} holds no EMA weights; using the model weights")
    else:
        sd = unwrap_state_dict(obj, use_ema)
        if hasattr(model, "use_official_qk_scale"):
            model.use_official_qk_scale()
    load_state_dict_strict(model, adapt_state_dict(sd, model), name)
    log.info(f"loaded weights from {name}")
    return obj.get("meta", {}) if ours else {}


def load_model(path: str | Path, arch: str | None = None, use_ema: bool = False, device: str = "cpu",
               **overrides: Any) -> tuple[nn.Module, dict]:
    """Build and load the model a checkpoint describes (``arch`` needed only for official files).

    Returns ``(model in eval mode on device, meta)``.
    """
    from vitzoo.models.registry import create_model

    obj = {"model": load_official_state_dict(path)} if str(path).endswith(".npz") else load_checkpoint(path)
    meta = obj["meta"] if is_vitzoo_checkpoint(obj) else {}
    arch = arch or meta.get("arch")
    if not arch:
        raise UserError(f"{path} does not record its architecture; pass --arch NAME")
    kwargs = {**meta.get("model_kwargs", {}), **overrides}
    if not meta and "num_classes" not in kwargs:  # an official file: keep the classifier it was trained with
        head = unwrap_state_dict(obj).get("head.weight")
        if head is not None:
            kwargs["num_classes"] = head.shape[0]
    model = create_model(arch, **kwargs)
    load_pretrained(model, obj, use_ema=use_ema)
    return model.to(device).eval(), meta
