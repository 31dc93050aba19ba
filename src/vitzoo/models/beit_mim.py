"""BEiT for masked image modeling: the pre-training half (Bao et al., arXiv:2106.08254, section 2.3).

The encoder is :class:`~vitzoo.models.beit.BEiT` with the pre-training settings (one relative-position
table shared by all blocks, no absolute position embedding, class token through the final norm, no
classifier); masked patches are replaced by a learned ``mask_token`` before the blocks, and a linear
``lm_head`` maps each masked position's output to the target: logits over the tokenizer's visual
vocabulary (BEiT), or the patch's pixels (the MAE / SimMIM target). Key names are unilm's
(``modeling_pretrain.py``), so its pre-trained files and ours share one layout.

A pre-training checkpoint records the *encoder's* architecture (e.g. ``beit_base_patch16_224`` with
``use_shared_rel_pos_bias``), so ``load_model`` gives the encoder for probes and ``vitzoo train
--pretrained`` fine-tunes it (mask token and LM head dropped, the shared table copied into every block).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from vitzoo.errors import UserError
from vitzoo.models.beit import BEiT, BEiTConfig
from vitzoo.models.registry import build_config, build_model, get_entry

# the encoder settings of unilm's run_beit_pretraining.py defaults (rel_pos_bias shared, abs_pos_emb off)
PRETRAIN_SETTINGS = {"use_shared_rel_pos_bias": True, "use_rel_pos_bias": False, "use_abs_pos_emb": False,
                     "use_mean_pooling": False, "num_classes": 0}


def _trunc_normal_(tensor: torch.Tensor, std: float) -> None:
    # unilm's pre-training init truncates at +-1 std (not timm's +-2 absolute)
    nn.init.trunc_normal_(tensor, std=std, a=-std, b=std)


class BEiTForMaskedImageModeling(BEiT):
    """``forward(images, bool_masked_pos)`` -> (M, target_dim): the LM head at the M masked positions."""

    embedding_prefixes = ("cls_token", "pos_embed", "patch_embed", "mask_token", "rel_pos_bias")

    def __init__(self, cfg: BEiTConfig, target_dim: int, init_std: float = 0.02):
        super().__init__(cfg)
        D = cfg.embed_dim
        self.target_dim = target_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.lm_head = nn.Linear(D, target_dim)
        self._init_pretraining(init_std)

    def _init_pretraining(self, std: float) -> None:
        """unilm modeling_pretrain.py: every linear / conv / token at trunc-normal(std, +-std), LayerNorm
        at (1, 0), then each block's residual projections divided by sqrt(2 * depth index)."""
        for p in (self.cls_token, self.mask_token, *([self.pos_embed] if self.pos_embed is not None else [])):
            _trunc_normal_(p.data, std)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                _trunc_normal_(m.weight.data, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            for i, blk in enumerate(self.blocks):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"mask_token"}

    def forward_masked(self, x: torch.Tensor, bool_masked_pos: torch.Tensor | None) -> torch.Tensor:
        """Images -> normed tokens (B, 1 + N, D), masked patches (``bool_masked_pos`` (B, N) or (B, h, w),
        True = masked) replaced by the mask token before the blocks."""
        tokens = self.patch_embed(x)  # (B, N, D)
        if bool_masked_pos is not None:
            masked = bool_masked_pos.flatten(1).unsqueeze(-1)  # (B, N, 1)
            tokens = torch.where(masked, self.mask_token.to(tokens.dtype), tokens)
        return self.encode(tokens)

    def forward(self, x: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                return_all_tokens: bool = False) -> torch.Tensor:
        tokens = self.forward_masked(x, bool_masked_pos)[:, 1:]  # (B, N, D), the class token dropped
        if return_all_tokens or bool_masked_pos is None:
            return self.lm_head(tokens)  # (B, N, target_dim)
        return self.lm_head(tokens[bool_masked_pos.flatten(1)])  # (M, target_dim)


def mim_encoder_config(name: str, **overrides) -> BEiTConfig:
    """The encoder config pre-training builds for ``name`` (a registered BEiT) with ``overrides``."""
    if not issubclass(get_entry(name).model_cls, BEiT):
        raise UserError(f"pretrain: masked image modeling is built for BEiT models; {name} is not one "
                        "(e.g. beit_base_patch16_224)")
    return build_config(name, **{**overrides, **PRETRAIN_SETTINGS})


def build_mim_model(name: str, target_dim: int, **overrides) -> BEiTForMaskedImageModeling:
    """The pre-training model around the encoder ``name`` (a registered BEiT), with ``overrides``."""
    mim_encoder_config(name, **overrides)  # refuses a model that is not a BEiT
    kwargs = {**overrides, **PRETRAIN_SETTINGS}
    return build_model(name, **kwargs, model_cls=lambda cfg: BEiTForMaskedImageModeling(cfg, target_dim))
