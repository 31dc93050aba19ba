"""Fit a state dict of the same architecture to a built model, whatever layout it was read from.

What may differ from the model, and what is done (each logged; a change to what the model computes --
a new head, a resized position table -- at WARNING, which Python prints on stderr even when the caller
configured no logging, so an API user sees it too):

* a classifier of another width (``head`` / ``head_dist``), or none (a headless backbone, e.g. Hugging
  Face ``ViTModel``): the model's fresh head kept;
* parts a classifier has no use for: BEiT's MIM ``mask_token`` / ``lm_head`` (and its final ``norm``
  when the model pools the patch tokens through a fresh ``fc_norm``), the ViT-21k ``pre_logits`` layer:
  dropped when the model has none;
* BEiT's one shared relative-position table (pre-training) for a model with a table per block
  (fine-tuning): copied into every block, as unilm's ``run_class_finetuning.py`` does;
* the image size: absolute position tables are resized bicubically (class/dist tokens kept; timm's
  ``resample_abs_pos_embed``), BEiT relative tables resized, T2T-ViT's fixed sinusoid table rebuilt.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from vitzoo.models.beit import resize_rel_pos_table
from vitzoo.models.layers import resize_pos_embed

log = logging.getLogger("vitzoo")

_PRETRAIN_ONLY = ("mask_token", "lm_head.", "pre_logits.")  # BEiT MIM / ViT 21k parts
_HEADS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")
_SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"
_BLOCK_TABLE = "attn.relative_position_bias_table"


def adapt_state_dict(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fit a state dict of the same architecture (maybe another head / resolution) to ``model``."""
    target = model.state_dict()
    dropped = [k for k in sd if k.startswith(_PRETRAIN_ONLY) and k not in target]
    if "fc_norm.weight" in target and "norm.weight" not in target and "fc_norm.weight" not in sd:
        # BEiT pre-training's final norm (class token) meets a mean-pooling model with a fresh fc_norm:
        # unilm's fine-tuning leaves it unused the same way
        dropped += [k for k in ("norm.weight", "norm.bias") if k in sd]
    out = {k: v for k, v in sd.items() if k not in dropped}
    if "norm.weight" in dropped:
        out.update({k: target[k] for k in ("fc_norm.weight", "fc_norm.bias")})
        log.info("mean pooling: the pre-training norm dropped, fc_norm starts fresh (as unilm's fine-tuning)")
    if _SHARED_TABLE in out and _SHARED_TABLE not in target:
        table = out.pop(_SHARED_TABLE)
        out.update({k: table.clone() for k in target if k.endswith(_BLOCK_TABLE)})
        log.info("expanded the shared relative position bias table into every block")

    tables: list[str] = []  # relative position tables resized (one per BEiT block): one message for all
    for k, v in list(out.items()):
        if k not in target or target[k].shape == v.shape:
            continue
        want = target[k]
        if k in _HEADS:
            del out[k]
            dropped.append(k)
        elif k == "pos_embed" and getattr(model, "fixed_pos_embed", False):
            out[k] = want  # T2T-ViT: fixed sinusoid table, rebuilt for the new grid
            log.warning(f"rebuilt the sinusoid position table for {tuple(want.shape)}")
        elif k == "pos_embed":
            out[k] = resize_pos_embed(v, model.patch_embed.grid_size, getattr(model, "num_prefix_tokens", 1))
            log.warning(f"resized pos_embed {tuple(v.shape)} -> {tuple(want.shape)}")
        elif k.endswith("relative_position_bias_table"):
            out[k] = resize_rel_pos_table(v, model.patch_embed.grid_size)
            tables.append(f"{tuple(v.shape)} -> {tuple(want.shape)}")
    if tables:
        log.warning(f"resized {len(tables)} relative position bias table(s) {tables[0]}")

    absent = [k for k in _HEADS if k in target and k not in out and k not in dropped]
    if absent and len(absent) == len([k for k in _HEADS if k in target]):  # a headless file
        log.info(f"the file has no classifier: {getattr(model, 'num_classes', '?')}-class head initialised")
        out.update({k: target[k] for k in absent})
    heads = [k for k in dropped if k in _HEADS]
    if heads:
        log.warning(f"classifier re-initialised for {getattr(model, 'num_classes', '?')} classes "
                    f"(dropped {', '.join(heads)})")
        out.update({k: target[k] for k in heads})  # keep the fresh head of the model
    other = [k for k in dropped if k not in heads]
    if any(k.startswith("pre_logits.") for k in other):  # its head was replaced: the layer fed that head
        log.warning("dropped the 21k pre-logits layer with the head it fed (a new head reads the class token)")
    if other:
        log.info(f"dropped {len(other)} tensors the model has no use for: {', '.join(other[:6])}")
    return out
