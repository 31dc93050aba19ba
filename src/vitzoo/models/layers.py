"""Building blocks shared by every family: attention (SDPA), MLP, drop path, patch embedding, block.

Parameter names follow timm's (``attn.qkv``, ``mlp.fc1``, ``ls1.gamma``, ...) so that timm state dicts
and the official DeiT / ViT releases load into these modules unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    Fused kernels (flash / memory-efficient) are used on GPU. When ``keep_attn`` is set, the softmax
    map is computed explicitly and kept in ``last_attn`` (B, heads, N, N) for visualisation.
    ``attn_dim`` lets the attention width differ from the input width (T2T's token attention);
    ``qk_scale`` overrides the usual ``head_dim ** -0.5`` (T2T-ViT's released weights use another).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qk_scale: float | None = None,
        attn_dim: int | None = None,
    ):
        super().__init__()
        attn_dim = attn_dim or dim
        if attn_dim % num_heads:
            raise ValueError(f"attention width {attn_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = attn_dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(attn_dim, attn_dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.keep_attn = False
        self.last_attn: torch.Tensor | None = None

    def qkv_proj(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, 3 * attn_dim). Families with other bias layouts override this."""
        return self.qkv(x)

    def attn_bias(self) -> torch.Tensor | None:
        """Additive attention bias (1 or B, heads, N, N), e.g. BEiT's relative position bias."""
        return None

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        qkv = self.qkv_proj(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # 3 x (B, heads, N, head_dim)

    def attend(self, q, k, v, bias: torch.Tensor | None = None) -> torch.Tensor:
        """softmax(q k^T * scale + bias) v -> (B, heads, N, head_dim)."""
        if self.keep_attn:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
            if bias is not None:
                attn = attn + bias
            attn = attn.softmax(dim=-1)
            self.last_attn = attn.detach()
            return self.attn_drop(attn) @ v
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale
        )

    def mix(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The heads' attention, before the output projection: (B, N, C) -> (B, N, attn_dim)."""
        B, N, _ = x.shape
        q, k, v = self.split_heads(x)
        own = self.attn_bias()
        if own is not None:
            bias = own if bias is None else own + bias
        return self.attend(q, k, v, bias).transpose(1, 2).reshape(B, N, -1)  # (B, N, attn_dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj_drop(self.proj(self.mix(x, bias)))


class Mlp(nn.Module):
    """fc1 -> GELU (exact, or tanh-approximate) -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, drop: float = 0.0,
                 gelu_approximate: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh" if gelu_approximate else "none")
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016), scaled by 1/keep_prob at train time."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel learnable residual scale (CaiT, arXiv:2103.17239), as timm names it (``gamma``)."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def check_input_size(x: torch.Tensor, img_size: int, why: str) -> None:
    """A clear error for an image of another size than the model was built for (tables are per size)."""
    if x.shape[-2:] != (img_size, img_size):
        raise ValueError(f"input is {tuple(x.shape[-2:])} but the model was built for {img_size}x{img_size}; "
                         f"rebuild it with img_size=... ({why})")


class PatchEmbed(nn.Module):
    """Image (B, C, H, W) -> patch tokens (B, N, D) with one strided convolution."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.img_size, "position embeddings are resized on load")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(LS(Attn(LN x))), then the same with the MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        qk_scale: float | None = None,
        gelu_approximate: bool = False,
        norm_eps: float = 1e-6,
        attn: nn.Module | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn or Attention(dim, num_heads, qkv_bias, attn_drop, drop, qk_scale=qk_scale)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, gelu_approximate=gelu_approximate)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), bias)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, grad_checkpointing: bool, bias=None) -> torch.Tensor:
    """Apply ``blocks`` in order; with activation checkpointing each block's activations are recomputed
    in the backward pass instead of stored (memory for compute, for the large models)."""
    for blk in blocks:
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(blk, x, bias, use_reentrant=False)
        else:
            x = blk(x, bias)
    return x


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rule of DeiT / BEiT: linearly increasing from 0 to ``rate`` over the blocks."""
    return [rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]


def resize_pos_embed(pos: torch.Tensor, new_grid: tuple[int, int], num_prefix: int,
                     old_grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Bicubic resampling of a (1, prefix + H*W, D) absolute position table to a new patch grid,
    keeping the class / distillation token entries unchanged (as DeiT does for fine-tuning at 384)."""
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    if old_grid is None:
        side = int(math.sqrt(grid.shape[1]))
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2).float()  # (1, D, H, W)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos.dtype)
    return torch.cat([prefix, grid], dim=1)


def init_weights_trunc_normal(module: nn.Module) -> None:
    """DeiT / BEiT init: truncated normal (std .02) for linear weights, zero bias, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
