"""The small interface every vitzoo model shares (timm's, without its 43-argument constructor)."""
from __future__ import annotations

import re

import torch
from torch import nn

from vitzoo.models.layers import Attention

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


class ZooModel(nn.Module):
    """Mixin giving every family: heads, weight-decay / layer-decay hooks, checkpointing, attention maps.

    Subclasses define ``blocks`` (nn.ModuleList of transformer blocks), ``head``, ``embed_dim`` and
    ``forward_features`` / ``forward_head``; the registry sets ``arch``, ``model_kwargs`` and
    ``data_config`` after building.
    """

    distilled = False
    arch: str = ""
    # names of embeddings that belong to "layer 0" for layer-wise lr decay (plus anything under them)
    embedding_prefixes: tuple[str, ...] = ("cls_token", "dist_token", "pos_embed", "patch_embed")

    # ----------------------------------------------------------------------------------- heads
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    # -------------------------------------------------------------------------- optimiser hooks
    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides biases and norms (which the optimiser finds by ndim)."""
        return {n for n, _ in self.named_parameters() if n.split(".")[0] in ("cls_token", "dist_token", "pos_embed")}

    def num_layers(self) -> int:
        return len(self.blocks)

    def layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay (BEiT): 0 embeddings, i+1 block i, L+1 the rest."""
        if name.startswith(self.embedding_prefixes):
            return 0
        m = _BLOCK.match(name)
        return int(m.group(1)) + 1 if m else self.num_layers() + 1

    # --------------------------------------------------------------------------------- extras
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def set_distilled_training(self, enable: bool = True) -> None:
        if enable and not self.distilled:
            raise ValueError(f"{self.arch or type(self).__name__} has no distillation head")
        self.distilled_training = enable

    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Softmax attention of every backbone block, each (B, heads, N, N), in block order."""
        attns = [m for blk in self.blocks for m in blk.modules() if isinstance(m, Attention)]
        for a in attns:
            a.keep_attn = True
        try:
            self.forward_features(x)
            return [a.last_attn for a in attns]
        finally:
            for a in attns:
                a.keep_attn, a.last_attn = False, None
