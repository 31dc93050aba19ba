"""Linear probe: a linear classifier trained on frozen, cached features (the BEiT / MAE protocol).

The head is ``BatchNorm1d(affine=False)`` then ``Linear``, as MAE's ``main_linprobe.py`` builds it (eps
1e-6, weights trunc-normal std 0.01, zero bias): the batch-norm whitens each feature dimension, so one
learning rate suits encoders whose features have very different scales (pre-trained, random, from an
intermediate block) and the comparison between them measures the features, not their scale.

Optimiser: SGD, momentum 0.9, weight decay 0, cosine decay to 0 (the SGD choice of BEiT's
``run_linear_eval.py``; per step here, per epoch there). Not LARS: MAE uses LARS for its 16,384-image
batches, where the per-layer trust ratio keeps the huge learning rate stable; with the batch-norm in
front and the batches here (hundreds), plain momentum SGD trains the same head without it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.probe.features import Features


@dataclass(frozen=True)
class ProbeSettings:
    epochs: int
    lr: float  # peak learning rate (absolute: not scaled by the batch)
    batch_size: int
    seed: int


def build_head(dim: int, num_classes: int) -> nn.Sequential:
    """BatchNorm1d(affine=False, eps=1e-6) + Linear, initialised as MAE's probe head."""
    linear = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)


def train_linear_probe(train: Features, num_classes: int, settings: ProbeSettings,
                       on_epoch: Callable[[int, float, float], None] | None = None) -> nn.Sequential:
    """Train the head on ``train`` (cross-entropy); ``on_epoch(epoch, mean loss, lr)`` after each epoch.

    Seeded (head init and the shuffle), so the same features and settings give the same head.
    """
    device = train.x.device
    torch.manual_seed(settings.seed)
    head = build_head(train.x.shape[1], num_classes).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=settings.lr, momentum=0.9, weight_decay=0.0)
    n = len(train)
    # full batches only: a last batch of one sample has no batch statistics (and a small one noisy ones);
    # the epoch's shuffle changes which samples are left out
    bs = min(settings.batch_size, n)
    steps_per_epoch = n // bs
    total = settings.epochs * steps_per_epoch
    shuffle = torch.Generator().manual_seed(settings.seed)
    head.train()
    step = 0
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            lr = settings.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[i * bs:(i + 1) * bs]
            loss = F.cross_entropy(head(train.x[idx]), train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
        if on_epoch is not None:
            on_epoch(epoch, loss_sum.item() / steps_per_epoch, lr)  # host sync, once per epoch
    return head.eval()


@torch.no_grad()
def evaluate_probe(head: nn.Module, val: Features) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 accuracy (fractions), as ``vitzoo eval`` reports them."""
    head.eval()
    logits = head(val.x)
    return classification_metrics(logits, val.y, F.cross_entropy(logits, val.y).item())


def classification_metrics(scores: torch.Tensor, y: torch.Tensor,
                           loss: float | None = None) -> dict[str, float]:
    """Top-1 / top-5 (top-min(5, C) for fewer classes, as the engine's evaluate) of class ``scores``."""
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices  # (N, 5)
    hit = top.eq(y.view(-1, 1))
    out = {"Top1-Acc": hit[:, 0].double().mean().item(), "Top5-Acc": hit.any(dim=1).double().mean().item()}
    return out if loss is None else {"Loss": loss, **out}
