"""``vitzoo convert encoder.pkl dall_e_encoder.safetensors``: the DALL-E encoder, once, into our format.

Recognises the released ``encoder.pkl`` (a pickled ``dall_e.encoder.Encoder``, read by
:mod:`vitzoo.tokenizers.dall_e_pickle` without running it) and plain state dicts with dall_e's key names
(``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``), and writes one safetensors file holding the weights
and the hyper-parameters, which ``vitzoo.create_tokenizer("dall-e", weights=...)`` and ``vitzoo pretrain
--tokenizer_path`` read. Recognition only looks at the file's pickle bytes / safetensors header for
dall_e's names; it loads nothing, so ``vitzoo convert`` on any other checkpoint goes on as before.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any

import torch

from vitzoo.tokenizers.dall_e import encoder_from_state_dict, load_dall_e, read_state_dict, save_dall_e
from vitzoo.tokenizers.dall_e_pickle import names_dall_e, pickle_bytes, read_dall_e_pickle

KEY_MARKERS = (b"blocks.input.w", b"blocks.output.conv.w")  # dall_e encoder state-dict keys


def _safetensors_keys(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            return " ".join(json.loads(f.read(min(n, 1 << 26)))).encode()
    except (OSError, ValueError, struct.error):
        return b""


def detect_dall_e(src: str) -> str | None:
    """``"pickle"`` (a pickle naming dall_e classes: the reader admits only the encoder's), ``"state_dict"``
    (dall_e encoder keys) or None (not ours: the model converters take it)."""
    if not os.path.isfile(src):
        return None
    head = _safetensors_keys(src) if src.endswith(".safetensors") else pickle_bytes(src)
    if names_dall_e(head):
        return "pickle"
    if all(m in head for m in KEY_MARKERS):
        return "state_dict"
    return None


@torch.no_grad()
def convert_dall_e(src: str, dst: str) -> dict[str, Any]:
    """Write ``src`` (see :func:`detect_dall_e`) as our DALL-E encoder safetensors at ``dst``, checked by
    reloading: the written file must give the same logits on a random image (``max_diff``)."""
    kind = detect_dall_e(src)
    state = read_dall_e_pickle(src) if kind == "pickle" else read_state_dict(src)[0]
    model = encoder_from_state_dict(state, src)
    save_dall_e(dst, model, {"converted_from": os.path.basename(src)})
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    max_diff = float((load_dall_e(dst).logits(x) - model.logits(x)).abs().max())
    return {"path": dst, "layout": "DALL-E encoder pickle" if kind == "pickle" else "DALL-E encoder state dict",
            "spec": model.spec, "num_params": sum(p.numel() for p in model.parameters()), "max_diff": max_diff}
