"""What a masked patch is trained to predict: a tokenizer's visual token, or its own pixels.

* ``dall-e`` / ``tokenizer`` (BEiT): the id a frozen tokenizer gives that patch's region of the smaller
  second view; the LM head is a classifier over the tokenizer's vocabulary, trained with cross-entropy.
* ``pixels`` (MAE, He et al. 2021; SimMIM, Xie et al. 2021): the patch's own pixels of the input view,
  each patch normalised by its mean and variance (MAE's ``norm_pix_loss``, which it found gives better
  representations); the LM head regresses them, trained with the mean squared error.

Targets are computed in fp32 without gradients, outside any autocast: a tokenizer's argmax must not
change with the training precision.
"""
from __future__ import annotations

import torch

from vitzoo.config import RunConfig
from vitzoo.errors import UserError
from vitzoo.tokenizers import VisualTokenizer, create_tokenizer


class TokenTarget:
    """(patches, tokenizer view (B, 3, s, s), mask (B, N)) -> token ids of the masked positions (M,)."""

    kind = "tokens"

    def __init__(self, tokenizer: VisualTokenizer, name: str):
        self.tokenizer, self.name = tokenizer, name
        self.dim = int(tokenizer.vocab_size)
        self.downsample = int(tokenizer.downsample)

    def __call__(self, patches: torch.Tensor, view: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids = self.tokenizer.tokenize(view.float()).flatten(1)  # (B, N)
        return ids[mask]


class PixelTarget:
    """(patches (B, 3, H, W), -, mask (B, N)) -> the masked patches' pixels (M, p * p * 3), maybe normalised."""

    kind = "pixels"
    name = "pixels"

    def __init__(self, patch_size: int, normalize: bool):
        self.patch_size, self.normalize = patch_size, normalize
        self.dim = patch_size * patch_size * 3

    def __call__(self, patches: torch.Tensor, view: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = patches.shape
        p = self.patch_size
        x = patches.float().reshape(B, C, H // p, p, W // p, p)
        x = x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)  # (B, N, p*p*C), MAE order
        if self.normalize:
            x = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-6).sqrt()
        return x[mask]


MIMTarget = TokenTarget | PixelTarget


def build_target(cfg: RunConfig, patch_size: int, grid: tuple[int, int], device: torch.device) -> MIMTarget:
    """The target ``cfg.mim_target`` names, on ``device``; checks a tokenizer's grid fits the patch grid."""
    if cfg.mim_target == "pixels":
        return PixelTarget(patch_size, cfg.norm_pix_loss)
    if not cfg.tokenizer_path:
        if cfg.mim_target == "dall-e":
            raise UserError("mim_target dall-e needs tokenizer_path: convert the released encoder once with "
                            "`vitzoo convert encoder.pkl dall_e_encoder.safetensors`; with nothing to download, "
                            "use mim_target tokenizer (vitzoo train-tokenizer) or pixels")
        raise UserError("mim_target tokenizer needs tokenizer_path: the file `vitzoo train-tokenizer` wrote "
                        "(OUT/tokenizer.safetensors)")
    target = TokenTarget(create_tokenizer(cfg.mim_target, cfg.tokenizer_path, device=str(device)), cfg.mim_target)
    size = second_view_size(cfg, grid, target)
    if size != grid[0] * target.downsample:
        raise UserError(f"second_input_size {size} gives a {size // target.downsample}x{size // target.downsample}"
                        f" token grid, but the model has {grid[0]}x{grid[1]} patches; use {grid[0] * target.downsample}"
                        " (or null)")
    return target


def second_view_size(cfg: RunConfig, grid: tuple[int, int], target: MIMTarget) -> int | None:
    """The tokenizer view's side: ``second_input_size``, else the patch grid x the tokenizer's downsampling."""
    if isinstance(target, PixelTarget):
        return None
    return cfg.second_input_size or grid[0] * target.downsample
