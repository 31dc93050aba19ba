"""Placeholder: the DALL-E dVAE encoder (being written)."""
from __future__ import annotations


def load_dall_e(weights):
    raise NotImplementedError
