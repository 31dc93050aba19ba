"""ViT (Dosovitskiy et al., arXiv:2010.11929) and DeiT (Touvron et al., arXiv:2012.12877).

DeiT is ViT trained with a better recipe; its distilled variant adds a distillation token that attends
with the class token and feeds its own head (Fig. 2 of the DeiT paper). The token is a config flag.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from vitzoo.constants import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD
from vitzoo.models.base import ZooModel
from vitzoo.models.layers import Block, PatchEmbed, drop_path_rates, init_weights_trunc_normal, run_blocks


@dataclass(frozen=True)
class ViTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_scale_init_value: float | None = None  # None/0: no LayerScale
    use_mean_pooling: bool = False  # True: average patch tokens + fc_norm instead of the class token
    distilled: bool = False  # DeiT distillation token + head
    # distilled only: False keeps the distillation token but classifies the class token alone
    # (Hugging Face DeiTForImageClassification, the fine-tuning head of a distilled backbone)
    dist_head: bool = True
    gelu_approximate: bool = False
    grad_checkpointing: bool = False
    norm_eps: float = 1e-6
    # Google's ImageNet-21k ViTs: tanh(Linear(embed_dim -> representation_size)) between the class token
    # and the head (the "pre-logits" layer of arXiv:2010.11929 sec. 3.1); None: the head reads the token
    representation_size: int | None = None


class VisionTransformer(ZooModel):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.embed_dim = D = cfg.embed_dim
        self.distilled = cfg.distilled and cfg.dist_head  # has a distillation head to train
        self.distilled_training = False
        self.grad_checkpointing = cfg.grad_checkpointing
        self.num_prefix_tokens = 2 if cfg.distilled else 1

        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + self.num_prefix_tokens, D))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.drop_rate, cfg.attn_drop_rate, dpr,
                  cfg.layer_scale_init_value, gelu_approximate=cfg.gelu_approximate, norm_eps=cfg.norm_eps)
            for dpr in drop_path_rates(cfg.drop_path_rate, cfg.depth)
        )
        self.norm = nn.Identity() if cfg.use_mean_pooling else nn.LayerNorm(D, eps=cfg.norm_eps)
        self.fc_norm = nn.LayerNorm(D, eps=cfg.norm_eps) if cfg.use_mean_pooling else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.pre_logits: nn.Module = nn.Identity()
        if cfg.representation_size:
            self.pre_logits = nn.Sequential(OrderedDict(fc=nn.Linear(D, cfg.representation_size), act=nn.Tanh()))
        head_in = cfg.representation_size or D
        self.head = nn.Linear(head_in, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.head_dist = None
        if cfg.distilled and cfg.dist_head:
            self.head_dist = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()

        for p in (self.pos_embed, self.cls_token, self.dist_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self.apply(init_weights_trunc_normal)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, N, D)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat(prefix + [x], dim=1) + self.pos_embed  # (B, prefix + N, D)
        x = run_blocks(self.blocks, self.pos_drop(x), self.grad_checkpointing)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        if self.cfg.use_mean_pooling:
            x = self.fc_norm(x[:, self.num_prefix_tokens:].mean(dim=1))
            return x if pre_logits else self.head(self.head_drop(x))
        if self.head_dist is None:  # no distillation head: the class token alone
            x = self.pre_logits(x[:, 0])
            return x if pre_logits else self.head(self.head_drop(x))
        cls, dist = x[:, 0], x[:, 1]
        if pre_logits:
            return (cls + dist) / 2
        cls, dist = self.head(self.head_drop(cls)), self.head_dist(self.head_drop(dist))
        # The official DeiT code predicts with the mean of both heads; the trainer asks for both.
        return (cls, dist) if self.distilled_training else (cls + dist) / 2


# ----------------------------------------------------------------------------------- variants
# Widths from Table 1 of arXiv:2010.11929 (ViT-B/L) and Table 1 of arXiv:2012.12877 (Ti/S).
_SIZES = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}


def _data(img: int, crop: float, mean, std) -> dict:
    return {"input_size": (3, img, img), "crop_pct": crop, "mean": mean, "std": std, "interpolation": "bicubic"}


VARIANTS: dict[str, tuple[ViTConfig, dict]] = {}
# ViT: Google's released weights (and timm's) normalise to [-1, 1]; eval crop 0.9 at 224, 1.0 at 384.
for _size in ("tiny", "small", "base", "large"):
    for _img in (224, 384):
        VARIANTS[f"vit_{_size}_patch16_{_img}"] = (
            ViTConfig(img_size=_img, patch_size=16, **_SIZES[_size]),
            _data(_img, 0.9 if _img == 224 else 1.0, HALF_MEAN, HALF_STD),
        )
for _img in (224, 384):
    VARIANTS[f"vit_base_patch32_{_img}"] = (
        ViTConfig(img_size=_img, patch_size=32, **_SIZES["base"]),
        _data(_img, 0.9 if _img == 224 else 1.0, HALF_MEAN, HALF_STD),
    )
# DeiT: ImageNet mean/std, crop 0.875 at 224 and 1.0 at 384 (PaddleViT / DeiT README tables).
for _size in ("tiny", "small", "base"):
    for _dist in (False, True):
        _name = f"deit_{_size}_{'distilled_' if _dist else ''}patch16_224"
        VARIANTS[_name] = (ViTConfig(distilled=_dist, **_SIZES[_size]), _data(224, 0.875, IMAGENET_MEAN, IMAGENET_STD))
for _dist in (False, True):
    VARIANTS[f"deit_base_{'distilled_' if _dist else ''}patch16_384"] = (
        ViTConfig(img_size=384, distilled=_dist, **_SIZES["base"]),
        _data(384, 1.0, IMAGENET_MEAN, IMAGENET_STD),
    )
