"""The DALL-E dVAE encoder (Ramesh et al., arXiv:2102.12092 sec. 2.1), the tokenizer BEiT pre-trains on.

Written afresh from the architecture of openai/DALL-E (``dall_e/encoder.py``, ``dall_e/utils.py``) so that
its released weights load 1:1: the parameter names are theirs (``blocks.input.w``,
``blocks.group_1.block_1.res_path.conv_1.w``, ..., ``blocks.output.conv.b``) and the numerics are theirs
in float32: a 7x7 input conv, four groups of residual blocks (widths n_hid, 2, 4, 8 n_hid; 2x2 max-pool
after the first three), each block ``id_path(x) + post_gain * res_path(x)`` with ``post_gain = 1 /
n_layers**2``, and a ReLU + 1x1 conv to the vocabulary logits. Images in [0, 1] are first mapped into the
logit-Laplace range [eps, 1 - eps] (their ``map_pixels``, eps = 0.1), so ``tokenize(images)`` equals
``Encoder(map_pixels(images)).argmax(1)``.

One difference, on purpose: on CUDA their convs (all but the output one) run in float16; ours stay in
the input's float32, so on a GPU a near-tie between two logits may break the other way.

Weights come from ``vitzoo convert encoder.pkl dall_e_encoder.safetensors`` (the released file is a pickled
module; :mod:`vitzoo.tokenizers.dall_e_pickle` reads it without running it), or from a plain state dict.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.checkpoint import read_file
from vitzoo.checkpoint.files import write_safetensors
from vitzoo.errors import UserError
from vitzoo.tokenizers.base import VisualTokenizer
from vitzoo.tokenizers.dall_e_pickle import names_dall_e, pickle_bytes

FORMAT = "vitzoo-dall-e-encoder"
FORMAT_VERSION = 1
GROUP_COUNT = 4  # fixed in dall_e (a class constant, the four groups are spelled out)
LOGIT_LAPLACE_EPS = 0.1  # dall_e/utils.py logit_laplace_eps


@dataclass(frozen=True)
class DalleSpec:
    """The encoder's hyper-parameters; dall_e's defaults are the released model's."""

    n_hid: int = 256
    n_blk_per_group: int = 2
    vocab_size: int = 8192
    input_channels: int = 3

    def __post_init__(self) -> None:
        if self.n_hid < 1 or self.n_blk_per_group < 1 or self.vocab_size < 2 or self.input_channels != 3:
            raise UserError(f"bad DALL-E encoder hyper-parameters: {self}")


def map_pixels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [eps, 1 - eps], the range the dVAE's logit-Laplace likelihood lives on (arXiv:2102.12092 A.3)."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


class Conv2d(nn.Module):
    """dall_e's conv: parameters named ``w`` / ``b``, 'same' padding, weights ~ N(0, 1 / fan_in), bias 0."""

    def __init__(self, n_in: int, n_out: int, kw: int) -> None:
        super().__init__()
        self.padding = (kw - 1) // 2
        self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw ** 2))
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w, self.b, padding=self.padding)


class EncoderBlock(nn.Module):
    """Bottleneck residual block: 3x3, 3x3, 3x3, 1x1 convs at a quarter of the width, each after a ReLU;
    the residual branch is scaled by 1 / n_layers**2 so the stack starts near the identity."""

    def __init__(self, n_in: int, n_out: int, n_layers: int) -> None:
        super().__init__()
        n_hid = n_out // 4
        self.post_gain = 1 / n_layers ** 2
        self.id_path = Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(OrderedDict([
            ("relu_1", nn.ReLU()), ("conv_1", Conv2d(n_in, n_hid, 3)),
            ("relu_2", nn.ReLU()), ("conv_2", Conv2d(n_hid, n_hid, 3)),
            ("relu_3", nn.ReLU()), ("conv_3", Conv2d(n_hid, n_hid, 3)),
            ("relu_4", nn.ReLU()), ("conv_4", Conv2d(n_hid, n_out, 1))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


def _group(n_in: int, n_out: int, spec: DalleSpec, pool: bool) -> nn.Sequential:
    n_layers = GROUP_COUNT * spec.n_blk_per_group
    blocks = [(f"block_{i + 1}", EncoderBlock(n_in if i == 0 else n_out, n_out, n_layers))
              for i in range(spec.n_blk_per_group)]
    return nn.Sequential(OrderedDict(blocks + ([("pool", nn.MaxPool2d(kernel_size=2))] if pool else [])))


class DalleEncoder(VisualTokenizer):
    """Images (B, 3, H, W) in [0, 1] -> logits (B, vocab_size, H / 8, W / 8)."""

    downsample = 8  # three 2x2 max-pools

    def __init__(self, spec: DalleSpec = DalleSpec()) -> None:
        super().__init__()
        self.spec, self.vocab_size = spec, spec.vocab_size
        h = spec.n_hid
        self.blocks = nn.Sequential(OrderedDict([
            ("input", Conv2d(spec.input_channels, h, 7)),
            ("group_1", _group(h, h, spec, pool=True)),
            ("group_2", _group(h, 2 * h, spec, pool=True)),
            ("group_3", _group(2 * h, 4 * h, spec, pool=True)),
            ("group_4", _group(4 * h, 8 * h, spec, pool=False)),
            ("output", nn.Sequential(OrderedDict([("relu", nn.ReLU()), ("conv", Conv2d(8 * h, spec.vocab_size, 1))]))),
        ]))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] % 8 or images.shape[-2] % 8:
            raise UserError(f"DALL-E tokenizer input must be (B, 3, H, W) with H and W multiples of 8, got "
                            f"{tuple(images.shape)}")
        return self.blocks(map_pixels(images.float()))  # (B, vocab, H / 8, W / 8)


# ------------------------------------------------------------------------------ state dicts and files
def spec_from_state_dict(state: dict[str, torch.Tensor], source: str) -> DalleSpec:
    """The hyper-parameters a dall_e encoder state dict was built with, read off its shapes."""
    for key in ("blocks.input.w", "blocks.output.conv.w"):
        if key not in state:
            raise UserError(f"{source}: not a DALL-E encoder state dict (no {key!r})")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.group_1\.block_(\d+)\.", k))}
    inp, out = state["blocks.input.w"].shape, state["blocks.output.conv.w"].shape
    if len(inp) != 4 or len(out) != 4 or not blocks:
        raise UserError(f"{source}: not a DALL-E encoder state dict (input conv {tuple(inp)}, output conv "
                        f"{tuple(out)}, {len(blocks)} blocks per group)")
    return DalleSpec(n_hid=inp[0], n_blk_per_group=max(blocks), vocab_size=out[0], input_channels=inp[1])


def encoder_from_state_dict(state: dict[str, torch.Tensor], source: str,
                            spec: DalleSpec | None = None) -> DalleEncoder:
    """A DalleEncoder holding ``state`` (strict: every key, every shape); one-line UserError otherwise."""
    model = DalleEncoder(spec or spec_from_state_dict(state, source))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # torch lists missing / unexpected keys and shape mismatches
        detail = " ".join(str(e).split())
        raise UserError(f"{source}: does not match the DALL-E encoder {model.spec} ({detail[:300]})") from None
    return model.eval()


def save_dall_e(path: str | os.PathLike, model: DalleEncoder, extra: dict | None = None) -> None:
    """Weights (dall_e's names) + hyper-parameters in one safetensors file, written atomically."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "spec": dataclasses.asdict(model.spec),
            **(extra or {})}
    write_safetensors(path, model.state_dict(), meta)


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, vitzoo meta or {}) of a safetensors file or a plain ``torch.save`` state dict, read
    without executing anything (``weights_only``). A pickled *module* is refused here: convert it."""
    if not os.path.isfile(path):
        raise UserError(f"DALL-E encoder weights not found: {path}")
    if not path.endswith(".safetensors") and names_dall_e(pickle_bytes(path)):
        raise UserError(f"{path}: a pickled dall_e module; convert it once (read without running it): "
                        f"vitzoo convert {path} dall_e_encoder.safetensors")
    obj = read_file(path)
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict (a flat mapping of names to tensors)")
    return state, meta


def load_dall_e(weights: str | os.PathLike | None = None) -> DalleEncoder:
    """The DALL-E encoder in eval mode: the released size with random weights (dall_e's initialisation)
    when ``weights`` is None, else from our ``.safetensors`` (hyper-parameters in its header) or a plain
    state dict (hyper-parameters read off the shapes)."""
    if weights is None:
        return DalleEncoder().eval()
    path = str(weights)
    state, meta = read_state_dict(path)
    spec = None
    if meta.get("format") == FORMAT:
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise UserError(f"{path}: written by a newer vitzoo (DALL-E format {meta['format_version']}); upgrade")
        try:
            spec = DalleSpec(**meta["spec"])
        except (KeyError, TypeError):
            raise UserError(f"{path}: DALL-E header has no valid hyper-parameters (spec)") from None
    return encoder_from_state_dict(state, path, spec)
