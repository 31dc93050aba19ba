"""Visual tokenizers for masked image modeling: the DALL-E dVAE encoder BEiT used, and tokenizers trained by
``vitzoo train-tokenizer`` on the user's own images."""
from __future__ import annotations

from vitzoo.errors import UserError
from vitzoo.tokenizers.base import VisualTokenizer
from vitzoo.tokenizers.dall_e import load_dall_e
from vitzoo.tokenizers.vqvae import load_trained_tokenizer

TOKENIZER_KINDS = ("dall-e", "tokenizer")


def create_tokenizer(kind: str, weights: str | None = None, device: str = "cpu") -> VisualTokenizer:
    """``"dall-e"``: the DALL-E dVAE encoder (8,192 tokens; ``weights`` from ``vitzoo convert encoder.pkl``,
    or None for random weights); ``"tokenizer"``: a ``vitzoo train-tokenizer`` run's file. Frozen, eval mode."""
    if kind == "dall-e":
        tok = load_dall_e(weights)
    elif kind == "tokenizer":
        if not weights:
            raise UserError("mim_target tokenizer needs tokenizer_path (a `vitzoo train-tokenizer` output file)")
        tok = load_trained_tokenizer(weights)
    else:
        raise UserError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    tok.requires_grad_(False)
    return tok.eval().to(device)


__all__ = ["TOKENIZER_KINDS", "VisualTokenizer", "create_tokenizer"]
