"""Frozen features: one vector per image from a chosen block of an encoder, computed once per split.

Which vector (:class:`FeatureSpec`): the output tokens of block ``k`` (0-based; default the last),
pooled as the class token or the mean of the patch tokens, normalised as follows:

- the last block with the model's own pooling: exactly what its classifier head reads
  (``forward_head(pre_logits=True)``): MAE's linear probe takes the class token after the final norm
  (``main_linprobe.py``, ``global_pool=False``); a fine-tuned BEiT averages the patch tokens, then
  ``fc_norm``;
- the last block with the other pooling: the tokens through the model's final LayerNorm, then pooled;
- an intermediate block (or a model without a per-token final norm): each token layer-normed without
  an affine, then pooled. No norm was trained for that depth; BEiT's probe reads intermediate blocks
  (``run_linear_eval.py`` takes every block's output, class token and patch-token mean), and the
  batch-norm before the linear head cancels any per-dimension affine anyway. The norm matters for k-NN,
  whose cosine similarity is otherwise dominated by a few large-magnitude dimensions.

Why cached: the encoder is frozen and the images see the eval transform (no augmentation), so every
epoch of the probe would compute the same vectors again; computing them once makes a 100-epoch probe
cost about one forward pass over the data. MAE's probe instead passes augmented crops through the
encoder every epoch (RandomResizedCrop + flip), which regularises a little but costs ``epochs`` forward
passes; this is the cheaper variant (as DINO's ``eval_knn.py`` and many linear-probe sweeps do).

Under ``torchrun`` each process encodes its share (``OrderedSplitSampler``: rank ``r`` gets images
``r, r + w, ...``) and the shares are gathered back into dataset order on every process, so every
process holds the same features as a single process would.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.engine import dist
from vitzoo.errors import UserError
from vitzoo.runtime.precision import FP32, Precision


@dataclass(frozen=True)
class FeatureSpec:
    """Which vector an image becomes (recorded in the commands' JSON)."""

    block: int  # 0-based index of the block whose output is read
    depth: int  # blocks in the model
    pool: str  # cls | mean
    norm: str  # head-input (the model's own feature) | final-norm | layer-norm (no affine)
    prefix: int  # class (+ distillation) tokens before the patch tokens

    def describe(self) -> str:
        pool = "class token" if self.pool == "cls" else "mean of patch tokens"
        norm = {"head-input": "the model's own head input", "final-norm": "after the final norm",
                "layer-norm": "tokens layer-normed (no affine)"}[self.norm]
        return f"block {self.block + 1}/{self.depth}, {pool}, {norm}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


def feature_spec(model: nn.Module, block: int | None, pool: str) -> FeatureSpec:
    """The spec for ``probe_block`` / ``probe_pool`` on ``model``; an out-of-range block is a UserError."""
    depth = len(model.blocks)
    k = depth - 1 if block is None else block
    if not 0 <= k < depth:
        raise UserError(f"probe_block {block} is out of range: {model.arch or type(model).__name__} has "
                        f"{depth} blocks (0..{depth - 1}; leave probe_block out for the last)")
    # ViT / BEiT configs carry use_mean_pooling; a family without it (T2T-ViT) pools the class token
    own = "mean" if getattr(model.cfg, "use_mean_pooling", False) else "cls"
    pool = own if pool == "auto" else pool
    last = k == depth - 1
    if last and pool == own:
        norm = "head-input"
    elif last and isinstance(model.norm, nn.LayerNorm):
        norm = "final-norm"
    else:
        norm = "layer-norm"
    # BEiT has no num_prefix_tokens attribute: its class token is the only prefix
    prefix = getattr(model, "num_prefix_tokens", 1)
    return FeatureSpec(block=k, depth=depth, pool=pool, norm=norm, prefix=prefix)


class FrozenEncoder(nn.Module):
    """``images -> (B, D)`` features of ``spec``; takes ownership of ``model`` (cut after block k).

    Relies on the interface every vitzoo family shares: ``forward_features`` = embeddings, then
    ``self.blocks`` in order, then ``self.norm``. Dropping the blocks after ``k`` (never run) and moving
    the final norm out of ``forward_features`` leaves it returning block ``k``'s raw output tokens.
    """

    def __init__(self, model: nn.Module, spec: FeatureSpec):
        super().__init__()
        model.blocks = nn.ModuleList(list(model.blocks)[: spec.block + 1])
        self.final_norm, model.norm = model.norm, nn.Identity()
        self.model = model.eval().requires_grad_(False)
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)  # (B, prefix + N, D): block k's output
        if self.spec.norm == "head-input":
            return self.model.forward_head(self.final_norm(tokens), pre_logits=True)
        if self.spec.norm == "final-norm":
            tokens = self.final_norm(tokens)
        else:
            tokens = F.layer_norm(tokens, tokens.shape[-1:])
        return tokens[:, 0] if self.spec.pool == "cls" else tokens[:, self.spec.prefix:].mean(dim=1)


@dataclass
class Features:
    """One split's cached features (N, D) float32 and labels (N,), in dataset order, on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.y.numel()


@torch.no_grad()
def extract_features(encoder: nn.Module, loader, device: torch.device, *, precision: Precision = FP32,
                     desc: str = "features") -> Features:
    """Encode every image of ``loader`` once (eval mode, no grad), gathered over processes, on ``device``."""
    feats, labels = [], []
    with _bar(loader, desc) as batches:
        for x, y in batches:
            with precision.context(device):
                f = encoder(precision.cast_input(x.to(device, non_blocking=True)))
            feats.append(f.float())
            labels.append(y.to(device))
    x = torch.cat(feats) if feats else torch.empty(0, 0, device=device)
    y = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long, device=device)
    return _gather_in_order(Features(x, y), device)


def _gather_in_order(part: Features, device: torch.device) -> Features:
    """Every process's share, interleaved back into dataset order (rank r held r, r + w, r + 2w, ...)."""
    if not dist.is_dist():
        return part
    parts = dist.all_gather_objects((part.x.cpu(), part.y.cpu()))  # host sync: pickled through the group
    world, n = len(parts), sum(p[1].numel() for p in parts)
    dim = max(p[0].shape[1] for p in parts)
    x, y = torch.empty(n, dim), torch.empty(n, dtype=torch.long)
    for r, (px, py) in enumerate(parts):
        x[r::world], y[r::world] = px, py
    return Features(x.to(device), y.to(device))


class _bar:
    """A tqdm bar on a terminal (main process), else one line when the split is done."""

    def __init__(self, loader, desc: str):
        self.loader, self.desc, self.start = loader, desc, time.perf_counter()
        self.show = dist.is_main()
        self.tqdm = None
        if self.show and sys.stderr.isatty():
            from tqdm import tqdm  # only on a terminal

            self.tqdm = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True)

    def __enter__(self):
        return self.tqdm if self.tqdm is not None else self.loader

    def __exit__(self, *exc) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
        if self.show and exc[0] is None:
            n = len(self.loader.dataset)
            seconds = time.perf_counter() - self.start
            print(f"{self.desc}: {n} images encoded in {seconds:.1f} s", file=sys.stderr, flush=True)
