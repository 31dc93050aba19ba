"""Placeholder: tokenizers trained by `vitzoo train-tokenizer` (being written)."""
from __future__ import annotations


def load_trained_tokenizer(weights):
    raise NotImplementedError
