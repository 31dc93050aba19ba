"""T2T-ViT: Tokens-to-Token Vision Transformer (Yuan et al., arXiv:2101.11986).

Instead of one hard patch split, the image is tokenised progressively (Sec. 3.1, Fig. 4 of the paper):
a *soft split* (overlapping unfold 7/4/2) makes 56x56 tokens from a 224 image; each of two T2T steps
re-structurises the tokens with a small one-head transformer layer (a Token Performer or a Token
Transformer), folds them back into an image and soft-splits again (unfold 3/2/1): 56 -> 28 -> 14. The
14x14 tokens are projected to ``embed_dim`` and fed, with a class token and a *fixed* sinusoid position
table, to a deep-narrow ViT backbone.

State-dict keys equal those of the official implementation (github.com/yitu-opensource/T2T-ViT,
``models/t2t_vit.py``), so its ``.pth.tar`` releases load strictly once unwrapped
(``models/convert/t2t.py``). Two tensors that the official code keeps as ``requires_grad=False``
parameters -- the sinusoid table ``pos_embed`` and the Performer random features
``tokens_to_token.attention{1,2}.w`` -- are persistent buffers here: saved and loaded under the same
names, never handed to the optimiser.

Attention scale: the official builders pass ``qk_scale = embed_dim ** -0.5`` when ``pretrained=True``
(the released ImageNet weights were trained that way), otherwise the usual ``head_dim ** -0.5`` applies.
A model that loads an official file is therefore built with ``qk_scale=released_qk_scale(cfg)``: the
converter decides that before building (``create_model(name, pretrained=FILE)``, ``load_model``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitzoo.constants import IMAGENET_MEAN, IMAGENET_STD
from vitzoo.models.base import ZooModel
from vitzoo.models.layers import (
    Attention,
    Block,
    Mlp,
    check_input_size,
    drop_path_rates,
    init_weights_trunc_normal,
    run_blocks,
)

TOKENS_TYPES = ("performer", "transformer")
# (kernel, stride, padding) of the three soft splits: total stride 4 * 2 * 2 = 16 (Sec. 3.1)
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))


@dataclass(frozen=True)
class T2TConfig:
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 384
    depth: int = 14
    num_heads: int = 6
    mlp_ratio: float = 3.0
    qkv_bias: bool = False  # the official backbone has no qkv bias
    qk_scale: float | None = None  # backbone attention scale; None = head_dim ** -0.5
    pretrained_qk_scale: float | None = None  # scale of the released weights; None = embed_dim ** -0.5
    tokens_type: str = "performer"  # T2T layer: "performer" or "transformer"
    token_dim: int = 64  # width of the tokens inside the T2T module
    kernel_ratio: float = 0.5  # Performer random features per token channel
    performer_drop_rate: float = 0.1  # the official Token Performer's fixed dropouts (dp1 / dp2)
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    gelu_approximate: bool = False
    grad_checkpointing: bool = False
    norm_eps: float = 1e-5  # nn.LayerNorm's default, as in the official code


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """(1, num_positions, dim) fixed table of "Attention is all you need" (Sec. 3.5): channel 2i holds
    sin(pos / 10000^(2i/dim)), channel 2i+1 the cosine of the same angle. Computed in float64 as the
    official numpy code does, then stored in float32."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    pair = torch.div(torch.arange(dim), 2, rounding_mode="floor").to(torch.float64)
    angle = pos / torch.pow(10000.0, 2 * pair / dim)  # (num_positions, dim)
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float().unsqueeze(0)


def soft_split_sizes(img_size: int) -> list[int]:
    """Token-grid side after each soft split (conv arithmetic): 224 -> [56, 28, 14], 32 -> [8, 4, 2]."""
    sides, side = [], img_size
    for k, s, p in SOFT_SPLITS:
        side = (side + 2 * p - k) // s + 1
        sides.append(side)
    return sides


def soft_split(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """The soft split on a channels-last image: (B, H, W, C) -> (B, L, C * kernel**2), the columns in
    ``nn.Unfold``'s order (C, kh, kw) and the same numbers, bit for bit (tests/test_t2t_vit.py).

    The official code runs ``nn.Unfold`` on a channels-first image, transposes the result to tokens, and
    the LayerNorm that follows copies it into rows; the tokens of a T2T layer are first transposed back
    into an image for it. Here the patches are strided views of the padded tokens, gathered in two
    copies that each read whole rows: the (kh, kw, C) patches first (C contiguous floats at a time),
    then a transpose of each patch's small (kh*kw, C) matrix into nn.Unfold's order. Gathering the
    (C, kh, kw) order directly strides by C floats in the innermost loop. On a 2-core Xeon, 8 images at
    224, the three splits took 14.4 / 6.8 / 1.7 ms as the official sequence and 1.7 / 4.5 / 1.1 ms as
    one gather. On a 2-core AVX2 EPYC the two copies took the second split from 11.0 to 2.9 ms, and a
    whole t2t_vit_14 forward from 601 to 585 ms at batch 8 (2,243 to 2,080 ms at batch 32; a training
    step at batch 8 from 1,690 to 1,654 ms; medians of 5 alternated calls).
    """
    if torch.onnx.is_in_onnx_export():  # its Unfold needs static sizes (a dynamic batch is not): the official op
        return F.unfold(x.permute(0, 3, 1, 2), kernel, stride=stride, padding=padding).transpose(1, 2)
    channels = x.shape[-1]
    x = F.pad(x, (0, 0, padding, padding, padding, padding))
    patches = x.unfold(1, kernel, stride).unfold(2, kernel, stride)  # (B, oh, ow, C, kh, kw), a view
    batch, rows, cols = patches.shape[:3]
    rows_first = patches.permute(0, 1, 2, 4, 5, 3).reshape(-1, kernel * kernel, channels)  # (B*L, kh*kw, C)
    return rows_first.transpose(1, 2).reshape(batch, rows * cols, -1)  # (B, L, C*kh*kw)


class TokenPerformer(nn.Module):
    """One-head Performer layer of the T2T module (Sec. 3.1; Choromanski et al., arXiv:2009.14794).

    softmax(q k^T) is approximated by phi(q) phi(k)^T with positive random features
    phi(x) = exp(w x - |x|^2 / 2) / sqrt(m), so attention costs O(N m d) instead of O(N^2 d):
    y = phi(q) (phi(k)^T v) / (phi(q) sum_j phi(k_j)). The output width (``in_dim``) differs from the
    input width (``dim``), so v, not x, is the residual. The random features ``w`` (m, in_dim) are drawn
    once (orthogonal rows scaled by sqrt(m)) and fixed: a persistent buffer.
    """

    def __init__(self, dim: int, in_dim: int, kernel_ratio: float = 0.5, drop: float = 0.1,
                 norm_eps: float = 1e-5, gelu_approximate: bool = False, eps: float = 1e-8):
        super().__init__()
        self.emb = in_dim
        self.m = int(in_dim * kernel_ratio)
        self.eps = eps  # keeps the normaliser away from zero (official: 1e-8)
        self.kqv = nn.Linear(dim, 3 * in_dim)  # official order of the chunks: k, q, v
        self.dp = nn.Dropout(drop)
        self.proj = nn.Linear(in_dim, in_dim)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(in_dim, eps=norm_eps)
        # official key names mlp.0 / mlp.2: a Sequential, not layers.Mlp
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, in_dim),
            nn.GELU(approximate="tanh" if gelu_approximate else "none"),
            nn.Linear(in_dim, in_dim),
            nn.Dropout(drop),
        )
        w = torch.empty(self.m, in_dim)
        if not w.is_meta:  # QR has no meta kernel; a meta model only needs the shape
            nn.init.orthogonal_(w)
        self.register_buffer("w", w * math.sqrt(self.m))

    def prm_exp(self, x: torch.Tensor) -> torch.Tensor:
        """Positive random features: (B, T, in_dim) -> (B, T, m), exp(w x - |x|^2/2) / sqrt(m).

        The official einsum + repeat + three element-wise passes become one fused multiply-add
        (``baddbmm`` with the per-token shift broadcast over m) and an in-place exp; the 1/sqrt(m)
        factor moves into the exponent as -log(m)/2. Same function, about half the time on CPU.
        """
        shift = x.pow(2).sum(dim=-1, keepdim=True).mul_(-0.5).sub_(0.5 * math.log(self.m))  # (B, T, 1)
        w_t = self.w.float().t().expand(x.shape[0], -1, -1)  # (B, in_dim, m), a view
        return torch.baddbmm(shift, x, w_t).exp_()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        k, q, v = self.kqv(x).split(self.emb, dim=-1)  # 3 x (B, T, in_dim)
        # The exponentials overflow in half precision: the kernel runs in fp32 (the official code
        # casts to float too), also under autocast.
        # (meta tensors, used to count parameters and FLOPs, have no autocast: "cpu" stands in, a no-op)
        with torch.autocast(device_type="cpu" if x.device.type == "meta" else x.device.type, enabled=False):
            kp, qp = self.prm_exp(k.float()), self.prm_exp(q.float())  # (B, T, m)
            norm = qp @ kp.sum(dim=1).unsqueeze(-1)  # (B, T, 1): phi(q_i) . sum_j phi(k_j)
            context = kp.transpose(1, 2) @ v.float()  # (B, m, in_dim): phi(k)^T v
            y = (qp @ context).div_(norm.add_(self.eps))  # (B, T, in_dim)
        return v + self.dp(self.proj(y.to(v.dtype)))  # v as the skip connection (official)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenAttention(Attention):
    """One-head softmax attention of the Token Transformer (SDPA through :class:`layers.Attention`).

    qkv maps the input width ``dim`` to ``in_dim * 3``; the official code scales by the *input* width,
    ``dim ** -0.5`` (its head_dim is ``dim // num_heads`` with one head), and adds v as the skip
    connection because input and output widths differ.
    """

    def __init__(self, dim: int, in_dim: int, qkv_bias: bool = False):
        super().__init__(dim, num_heads=1, qkv_bias=qkv_bias, qk_scale=dim**-0.5, attn_dim=in_dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.split_heads(x)  # 3 x (B, 1, N, in_dim)
        y = self.attend(q, k, v, bias).transpose(1, 2).reshape(B, N, -1)  # (B, N, in_dim)
        return v.squeeze(1) + self.proj_drop(self.proj(y))


class TokenTransformer(nn.Module):
    """Token Transformer layer: x = v + Attn(LN x); x = x + MLP(LN x) (no dropout, as official)."""

    def __init__(self, dim: int, in_dim: int, mlp_ratio: float = 1.0, norm_eps: float = 1e-5,
                 gelu_approximate: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = TokenAttention(dim, in_dim)
        self.norm2 = nn.LayerNorm(in_dim, eps=norm_eps)
        self.mlp = Mlp(in_dim, int(in_dim * mlp_ratio), gelu_approximate=gelu_approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class T2TModule(nn.Module):
    """Soft split -> [T2T layer -> reshape to an image -> soft split] x 2 -> linear projection."""

    def __init__(self, cfg: T2TConfig):
        super().__init__()
        if cfg.tokens_type not in TOKENS_TYPES:
            raise ValueError(f"tokens_type must be one of {', '.join(TOKENS_TYPES)}, got {cfg.tokens_type!r}")
        self.img_size = cfg.img_size
        self.sides = soft_split_sizes(cfg.img_size)
        if min(self.sides) < 1:
            raise ValueError(f"img_size {cfg.img_size} is too small for the three soft splits (stride 16)")
        self.num_patches = self.sides[-1] ** 2
        self.grad_checkpointing = cfg.grad_checkpointing
        d0, d1 = cfg.in_chans * SOFT_SPLITS[0][0] ** 2, cfg.token_dim * SOFT_SPLITS[1][0] ** 2  # 147, 576
        if cfg.tokens_type == "performer":
            layer = {"kernel_ratio": cfg.kernel_ratio, "drop": cfg.performer_drop_rate, "norm_eps": cfg.norm_eps,
                         "gelu_approximate": cfg.gelu_approximate}
            self.attention1 = TokenPerformer(d0, cfg.token_dim, **layer)
            self.attention2 = TokenPerformer(d1, cfg.token_dim, **layer)
        else:
            layer = {"mlp_ratio": 1.0, "norm_eps": cfg.norm_eps, "gelu_approximate": cfg.gelu_approximate}
            self.attention1 = TokenTransformer(d0, cfg.token_dim, **layer)
            self.attention2 = TokenTransformer(d1, cfg.token_dim, **layer)
        self.project = nn.Linear(cfg.token_dim * SOFT_SPLITS[2][0] ** 2, cfg.embed_dim)

    def _layer(self, layer: nn.Module, x: torch.Tensor, side: int) -> torch.Tensor:
        """T2T layer on (B, side*side, C) tokens, folded back into a (B, side, side, C') image (a view)."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(layer, x, use_reentrant=False)
        else:
            x = layer(x)
        return x.reshape(x.shape[0], side, side, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.img_size, "the sinusoid table is rebuilt on load")
        s0, s1, _ = self.sides
        x = soft_split(x.permute(0, 2, 3, 1), *SOFT_SPLITS[0])  # (B, s0*s0, C*7*7)
        x = soft_split(self._layer(self.attention1, x, s0), *SOFT_SPLITS[1])  # (B, s1*s1, token_dim*9)
        x = soft_split(self._layer(self.attention2, x, s1), *SOFT_SPLITS[2])  # (B, s2*s2, token_dim*9)
        return self.project(x)  # (B, N, embed_dim)


class T2TViT(ZooModel):
    """T2T module + class token + fixed sinusoid positions + ViT backbone (pre-norm, no qkv bias)."""

    fixed_pos_embed = True  # the converter rebuilds (does not interpolate) pos_embed at another img_size
    embedding_prefixes = ("cls_token", "pos_embed", "tokens_to_token")

    def __init__(self, cfg: T2TConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.embed_dim = D = cfg.embed_dim
        self.grad_checkpointing = cfg.grad_checkpointing
        self.num_prefix_tokens = 1

        self.tokens_to_token = T2TModule(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.register_buffer("pos_embed", sinusoid_table(self.tokens_to_token.num_patches + 1, D))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.drop_rate, cfg.attn_drop_rate, dpr,
                  qk_scale=cfg.qk_scale, gelu_approximate=cfg.gelu_approximate, norm_eps=cfg.norm_eps)
            for dpr in drop_path_rates(cfg.drop_path_rate, cfg.depth)
        )
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()

        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights_trunc_normal)  # every Linear incl. the T2T module's, as official

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.tokens_to_token.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens_to_token(x)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        x = self.pos_drop(x + self.pos_embed.to(x.dtype))
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]
        return x if pre_logits else self.head(x)


def released_qk_scale(cfg: T2TConfig) -> float:
    """The backbone attention scale the official ImageNet releases were trained with: ``embed_dim ** -0.5``,
    or the variant's ``pretrained_qk_scale`` where its official builder used another."""
    return cfg.pretrained_qk_scale or cfg.embed_dim**-0.5


# ----------------------------------------------------------------------------------- variants
# Hyper-parameters of the official builders (models/t2t_vit.py of yitu-opensource/T2T-ViT; Table 2 of
# arXiv:2101.11986). The official builders' pretrained scale is embed_dim ** -0.5 except for
# t2t_vit_14_wide, whose builder uses 512 ** -0.5 with embed_dim 768.
_DATA = {"input_size": (3, 224, 224), "crop_pct": 0.9, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
         "interpolation": "bicubic"}
_SIZES = {
    "7": {"embed_dim": 256, "depth": 7, "num_heads": 4, "mlp_ratio": 2.0},
    "10": {"embed_dim": 256, "depth": 10, "num_heads": 4, "mlp_ratio": 2.0},
    "12": {"embed_dim": 256, "depth": 12, "num_heads": 4, "mlp_ratio": 2.0},
    "14": {"embed_dim": 384, "depth": 14, "num_heads": 6, "mlp_ratio": 3.0},
    "19": {"embed_dim": 448, "depth": 19, "num_heads": 7, "mlp_ratio": 3.0},
    "24": {"embed_dim": 512, "depth": 24, "num_heads": 8, "mlp_ratio": 3.0},
}

VARIANTS: dict[str, tuple[T2TConfig, dict]] = {}
for _n, _size in _SIZES.items():
    VARIANTS[f"t2t_vit_{_n}"] = (T2TConfig(tokens_type="performer", **_size), _DATA)
for _n in ("14", "19", "24"):
    VARIANTS[f"t2t_vit_t_{_n}"] = (T2TConfig(tokens_type="transformer", **_SIZES[_n]), _DATA)
VARIANTS["t2t_vit_14_resnext"] = (
    T2TConfig(tokens_type="performer", embed_dim=384, depth=14, num_heads=32, mlp_ratio=3.0), _DATA)
VARIANTS["t2t_vit_14_wide"] = (
    T2TConfig(tokens_type="performer", embed_dim=768, depth=4, num_heads=12, mlp_ratio=3.0,
              pretrained_qk_scale=512**-0.5), _DATA)
