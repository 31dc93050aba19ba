"""What every visual tokenizer is: a frozen module mapping images to a grid of discrete token ids.

BEiT's masked image modeling predicts, for each masked patch, the id a tokenizer gives that patch's
region of a second, smaller view of the image (the tokenizer's grid equals the ViT's patch grid).
"""
from __future__ import annotations

import torch
from torch import nn


class VisualTokenizer(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> token ids (B, H / downsample, W / downsample).

    Subclasses set ``vocab_size`` and ``downsample`` and implement :meth:`logits` (B, vocab, h, w); each
    applies its own input mapping inside (DALL-E's ``map_pixels``, a trained tokenizer's normalisation).
    """

    vocab_size: int
    downsample: int

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(dim=1)  # (B, h, w)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Token ids (B, h, w) -> images (B, 3, H, W) in [0, 1], for tokenizers that have a decoder."""
        return None
