"""PaddleViT ``.pdparams`` files (github.com/BR-IDL/PaddleViT, image_classification/DeiT), read and written
without Paddle.

``paddle.save(model.state_dict(), path)`` pickles a dict of numpy arrays (protocol 2). Pickles can run any
code, so they are read by an unpickler that admits numpy array reconstruction and plain containers only;
a file that names anything else is refused before anything it asks for is called.

PaddleViT's DeiT (deit.py) names and layouts::

    patch_embedding.patch_embedding     (conv, OIHW as torch)  -> patch_embed.proj
    position_embedding / cls_token / dist_token                 -> pos_embed / cls_token / dist_token
    encoder.layers.N.{attn_norm, mlp_norm}                      -> blocks.N.{norm1, norm2}
    encoder.layers.N.attn.{qkv, out}     (Linear, (in, out))    -> blocks.N.attn.{qkv, proj} (transposed)
    encoder.layers.N.mlp.{fc1, fc2}      (Linear, (in, out))    -> blocks.N.mlp.{fc1, fc2} (transposed)
    encoder.encoder_norm / classifier / classifier_dist         -> norm / head / head_dist

Numerics: LayerNorm epsilon 1e-6, exact GELU, distilled models averaging both heads in eval mode: as
vitzoo's DeiT.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vitzoo.checkpoint import atomic_write
from vitzoo.errors import UserError
from vitzoo.models.convert.weights import Weights

NAME = "PaddleViT .pdparams"
SUFFIX = ".pdparams"
NUMERICS = {"gelu_approximate": False, "norm_eps": 1e-6}

# what a pickle of numpy arrays needs, and nothing that can act on the machine
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),  # bytes in protocol 2
            ("collections", "OrderedDict")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def read_pdparams(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The file's ``{name: array}``; a UserError (nothing executed) for anything but arrays and containers."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"checkpoint not found: {path}" if isinstance(e, FileNotFoundError) else f"{path}: {e}") from e
    try:
        obj = _ArraysOnly(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        if re.fullmatch(r"[\w.]+\.\w+", str(e)):
            raise UserError(f"{path}: refused: it needs {e} to unpickle (code, not data); only numpy arrays and "
                            "plain containers are loaded, nothing was run") from None
        raise UserError(f"{path}: not a readable .pdparams file ({' '.join(str(e).split())})") from None
    except Exception as e:  # truncated stream, not a pickle at all
        raise UserError(f"{path}: not a readable .pdparams file (truncated, corrupt or another format)") from e
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict of arrays, found {type(obj).__name__}")
    arrays = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}  # skips paddle's name table
    if not arrays:
        raise UserError(f"{path}: no arrays in the file")
    return arrays


# PaddleViT DeiT name prefix <-> vitzoo's, in matching order ("{i}" is a block index); both directions use it
_NAMES = [("patch_embedding.patch_embedding.", "patch_embed.proj."), ("position_embedding", "pos_embed"),
          ("encoder.layers.{i}.attn_norm.", "blocks.{i}.norm1."), ("encoder.layers.{i}.mlp_norm.", "blocks.{i}.norm2."),
          ("encoder.layers.{i}.attn.out.", "blocks.{i}.attn.proj."), ("encoder.layers.{i}.", "blocks.{i}."),
          ("encoder.encoder_norm.", "norm."), ("classifier_dist.", "head_dist."), ("classifier.", "head.")]


def _rules(forward: bool) -> list[tuple[str, str]]:
    """(regex, replacement) pairs from :data:`_NAMES`, Paddle -> vitzoo or the way back."""
    rules = []
    for paddle, ours in _NAMES:
        src, dst = (paddle, ours) if forward else (ours, paddle)
        pattern = "^" + re.escape(src).replace(re.escape("{i}"), r"(\d+)") + ("" if src.endswith(".") else "$")
        rules.append((pattern, dst.replace("{i}", r"\1")))
    return rules


_LINEAR = re.compile(r"(attn\.(qkv|proj)|mlp\.fc[12]|^head(_dist)?)\.weight$")


def to_state_dict(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    sd = {}
    for key, arr in arrays.items():
        for pattern, repl in _rules(forward=True):
            key = re.sub(pattern, repl, key)
        t = torch.from_numpy(np.array(arr, dtype=np.float32))
        sd[key] = t.T.contiguous() if _LINEAR.search(key) else t  # Paddle Linear: (in, out)
    return sd


def from_state_dict(model: nn.Module) -> dict[str, np.ndarray]:
    out = {}
    for key, value in model.state_dict().items():
        arr = value.detach().cpu()
        if _LINEAR.search(key):
            arr = arr.T
        for pattern, repl in _rules(forward=False):
            key = re.sub(pattern, repl, key)
        out[key] = np.ascontiguousarray(arr.numpy())
    return out


def detect(obj: dict | None, path: str | None) -> bool:
    return obj is None and str(path).endswith(SUFFIX)


def read(obj: None, path: str, use_ema: bool) -> Weights:
    return Weights(to_state_dict(read_pdparams(path)), NAME, path, numerics=dict(NUMERICS), family="deit")


def target_numerics(model: nn.Module) -> dict:
    return dict(NUMERICS)


def write(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, overwrite: bool = False):
    """One file, replaced as a vitzoo checkpoint is (``meta`` and ``overwrite`` are for folder writers)."""
    if not getattr(model, "arch", "").startswith(("deit", "vit")):
        raise UserError(f"--to paddle writes PaddleViT's DeiT layout; {model.arch} is not a DeiT / ViT model")
    data = pickle.dumps(from_state_dict(model), protocol=2)  # as paddle.save writes state dicts
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
