"""BEiT, fine-tuning architecture (Bao et al., arXiv:2106.08254).

Differences from ViT: relative position bias in every attention (or one table shared by all blocks),
no absolute position embedding by default, q/v biases without a k bias, layer scale (``gamma_1/2``,
CaiT-style), and mean pooling of the patch tokens followed by ``fc_norm``. Key names follow the
official release and timm, so their state dicts load unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.constants import HALF_MEAN, HALF_STD
from vitzoo.models.base import ZooModel
from vitzoo.models.layers import (
    Attention,
    Block,
    PatchEmbed,
    drop_path_rates,
    init_weights_trunc_normal,
    run_blocks,
)


@dataclass(frozen=True)
class BEiTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True  # q and v biases (k has none), as in the paper's code
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_scale_init_value: float | None = 0.1  # 0.1 base, 1e-5 large; 0/None disables
    use_rel_pos_bias: bool = True  # one table per block
    use_shared_rel_pos_bias: bool = False  # one table for all blocks (the pre-training setting)
    use_abs_pos_emb: bool = False
    use_mean_pooling: bool = True
    init_scale: float = 0.001  # head init scale of the fine-tuning recipe
    gelu_approximate: bool = False
    grad_checkpointing: bool = False
    norm_eps: float = 1e-6


def relative_position_index(grid: tuple[int, int]) -> torch.Tensor:
    """Index into the bias table for every (query, key) pair of ``1 + H*W`` tokens.

    Patch pairs index their 2-D offset (shifted to be non-negative, row-major over (2H-1, 2W-1));
    the last three entries of the table are cls->patch, patch->cls and cls->cls.
    """
    H, W = grid
    num_rel = (2 * H - 1) * (2 * W - 1)
    coords = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")).flatten(1)  # (2, HW)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (HW, HW, 2)
    rel[..., 0] += H - 1
    rel[..., 1] += W - 1
    rel[..., 0] *= 2 * W - 1
    index = torch.zeros(H * W + 1, H * W + 1, dtype=torch.long)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:] = num_rel
    index[0:, 0] = num_rel + 1
    index[0, 0] = num_rel + 2
    return index


def resize_rel_pos_table(table: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resampling of a (num_rel + 3, heads) table to another patch grid (extra 3 rows kept)."""
    old_rel, heads = table.shape[0] - 3, table.shape[1]
    side = math.isqrt(old_rel)
    new_h, new_w = 2 * new_grid[0] - 1, 2 * new_grid[1] - 1
    if (side, side) == (new_h, new_w):
        return table
    grid = table[:old_rel].T.reshape(1, heads, side, side).float()
    grid = F.interpolate(grid, size=(new_h, new_w), mode="bicubic", align_corners=False)
    grid = grid.reshape(heads, new_h * new_w).T.to(table.dtype)
    return torch.cat([grid, table[old_rel:]], dim=0)


def gather_rel_pos_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(num_rel + 3, heads) table, (N, N) index -> (1, heads, N, N) additive attention bias."""
    N = index.shape[0]
    return table[index.view(-1)].view(N, N, -1).permute(2, 0, 1).unsqueeze(0)


class RelativePositionBias(nn.Module):
    """One relative-position table shared by all blocks (``rel_pos_bias.*``, the pre-training setting)."""

    def __init__(self, grid: tuple[int, int], num_heads: int):
        super().__init__()
        num_rel = (2 * grid[0] - 1) * (2 * grid[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rel, num_heads))
        # derived from the grid, so not saved (the official files carry it; the loader drops it)
        self.register_buffer("relative_position_index", relative_position_index(grid), persistent=False)

    def forward(self) -> torch.Tensor:
        return gather_rel_pos_bias(self.relative_position_bias_table, self.relative_position_index)


class BEiTAttention(Attention):
    """Attention with separate q/v biases (k bias fixed at zero) and an optional own rel-pos table."""

    def __init__(self, dim, num_heads, qkv_bias, attn_drop, proj_drop, grid: tuple[int, int] | None):
        super().__init__(dim, num_heads, qkv_bias=False, attn_drop=attn_drop, proj_drop=proj_drop)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        if qkv_bias:  # k has no bias: a fixed zero slot, kept (not rebuilt per call) and never saved
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.relative_position_bias_table = None
        if grid:
            num_rel = (2 * grid[0] - 1) * (2 * grid[1] - 1) + 3
            self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rel, num_heads))
            self.register_buffer("relative_position_index", relative_position_index(grid), persistent=False)

    def qkv_proj(self, x: torch.Tensor) -> torch.Tensor:
        if self.q_bias is None:
            return self.qkv(x)
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        return F.linear(x, self.qkv.weight, bias)

    def attn_bias(self) -> torch.Tensor | None:
        if self.relative_position_bias_table is None:
            return None
        return gather_rel_pos_bias(self.relative_position_bias_table, self.relative_position_index)


class BEiTBlock(Block):
    """Block with BEiT's layer-scale names (``gamma_1``, ``gamma_2``) and BEiT attention."""

    def __init__(self, cfg: BEiTConfig, drop_path: float, grid: tuple[int, int] | None):
        D = cfg.embed_dim
        attn = BEiTAttention(D, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate, grid)
        super().__init__(D, cfg.num_heads, cfg.mlp_ratio, drop=cfg.drop_rate, drop_path=drop_path,
                         gelu_approximate=cfg.gelu_approximate, norm_eps=cfg.norm_eps, attn=attn)
        init = cfg.layer_scale_init_value
        self.gamma_1 = nn.Parameter(torch.full((D,), float(init))) if init else None
        self.gamma_2 = nn.Parameter(torch.full((D,), float(init))) if init else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.gamma_1 is None:
            return super().forward(x, bias)
        x = x + self.drop_path1(self.gamma_1 * self.attn(self.norm1(x), bias))
        return x + self.drop_path2(self.gamma_2 * self.mlp(self.norm2(x)))


class BEiT(ZooModel):
    embedding_prefixes = ("cls_token", "pos_embed", "patch_embed", "mask_token")

    def __init__(self, cfg: BEiTConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.embed_dim = D = cfg.embed_dim
        self.grad_checkpointing = cfg.grad_checkpointing
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, D)
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, D)) if cfg.use_abs_pos_emb else None
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.rel_pos_bias = RelativePositionBias(grid, cfg.num_heads) if cfg.use_shared_rel_pos_bias else None
        own_grid = grid if cfg.use_rel_pos_bias and not cfg.use_shared_rel_pos_bias else None
        self.blocks = nn.ModuleList(
            BEiTBlock(cfg, dpr, own_grid) for dpr in drop_path_rates(cfg.drop_path_rate, cfg.depth)
        )
        self.norm = nn.Identity() if cfg.use_mean_pooling else nn.LayerNorm(D, eps=cfg.norm_eps)
        self.fc_norm = nn.LayerNorm(D, eps=cfg.norm_eps) if cfg.use_mean_pooling else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()

        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights_trunc_normal)
        with torch.no_grad():  # BEiT: rescale residual branches by depth; small head init
            for i, blk in enumerate(self.blocks):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
            if isinstance(self.head, nn.Linear):
                self.head.weight.mul_(cfg.init_scale)
                self.head.bias.mul_(cfg.init_scale)

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters()
                if n in ("cls_token", "pos_embed") or n.endswith("relative_position_bias_table")}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(self.patch_embed(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) -> normed tokens (B, 1 + N, D): class token, position, blocks, norm."""
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        shared = self.rel_pos_bias() if self.rel_pos_bias is not None else None  # (1, heads, N, N)
        x = run_blocks(self.blocks, self.pos_drop(x), self.grad_checkpointing, shared)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc_norm(x[:, 1:].mean(dim=1)) if self.cfg.use_mean_pooling else x[:, 0]
        return x if pre_logits else self.head(self.head_drop(x))


def _beit(size: str, img: int) -> tuple[BEiTConfig, dict]:
    dims = {"base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "layer_scale_init_value": 0.1},
            "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "layer_scale_init_value": 1e-5}}[size]
    data = {"input_size": (3, img, img), "crop_pct": 0.9 if img == 224 else 1.0, "mean": HALF_MEAN,
            "std": HALF_STD, "interpolation": "bicubic"}
    return BEiTConfig(img_size=img, **dims), data


VARIANTS = {
    "beit_base_patch16_224": _beit("base", 224),
    "beit_base_patch16_384": _beit("base", 384),
    "beit_large_patch16_224": _beit("large", 224),
    "beit_large_patch16_384": _beit("large", 384),
    "beit_large_patch16_512": _beit("large", 512),
}
