"""unilm BEiT ``.pth`` files (github.com/microsoft/unilm/tree/master/beit, arXiv:2106.08254).

``{"model": sd}`` (``{"module": sd}`` in some releases), timm key names, plus what timm does not save:
the ``relative_position_index`` buffers, which are derived from the patch grid (dropped here; every model
rebuilds them). Pre-training files hold one relative-position table shared by all blocks
(``rel_pos_bias.relative_position_bias_table``) beside ``mask_token`` / ``lm_head``; fitting those to a
fine-tuning model (a table per block, no MIM head) depends on the model and is done by
:func:`vitzoo.models.convert.adapt.adapt_state_dict` for every source alike.
"""
from __future__ import annotations

import dataclasses

from vitzoo.models.convert.weights import Weights, has_keys, read_wrapped

NAME = "BEiT .pth"
_DERIVED = "relative_position_index"  # rebuilt from the grid by the model; never loaded


def detect(obj: dict | None, path: str | None) -> bool:
    return obj is not None and has_keys(obj, "relative_position_bias_table", _DERIVED)


def read(obj: dict, path: str | None, use_ema: bool) -> Weights:
    weights = read_wrapped(obj, path, use_ema, NAME)
    kept = {k: v for k, v in weights.state_dict.items() if not k.endswith(_DERIVED)}
    return dataclasses.replace(weights, state_dict=kept, family="beit")
