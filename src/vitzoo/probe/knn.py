"""Weighted k-nearest-neighbour classification on frozen features (DINO, arXiv:2104.14294 sec. 4.1).

As DINO's ``eval_knn.py``: features L2-normalised, so the dot product is the cosine similarity; each
query takes its ``k`` most similar training images; neighbour ``i`` votes for its class with weight
``exp(sim_i / T)`` (T = 0.07); the classes are ranked by their summed votes. DINO reports k = 20 as its
main number. Top-5 counts a class only if it got a vote (with fewer than five classes voted for, the
remaining "ranks" would be an arbitrary order of zero-vote classes; DINO's code counts those).

Memory stays bounded: queries are processed in chunks so that one chunk's (queries x bank) similarity
matrix holds at most ``max_sims`` numbers (DINO splits the queries into 100 chunks whatever their size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vitzoo.probe.features import Features

MAX_SIMS = 1 << 27  # similarities per chunk: 512 MiB in fp32


@torch.no_grad()
def knn_votes(bank: Features, queries: torch.Tensor, num_classes: int, k: int, t: float,
              max_sims: int = MAX_SIMS) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, C) summed votes of each query's ``k`` nearest bank entries, and (Q, C) which classes got one.

    The weights are ``exp((cos - cos_max) / t)``: DINO's ``exp(cos / t)`` divided by the same number for
    every class of a query, so the ranking is DINO's while a small ``t`` cannot overflow to inf.
    """
    keys = F.normalize(bank.x, dim=1)  # (N, D)
    k = min(k, keys.shape[0])
    chunk = max(1, max_sims // max(1, keys.shape[0]))
    votes, voted = [], []
    for q in F.normalize(queries, dim=1).split(chunk):
        sims, idx = (q @ keys.T).topk(k, dim=1)  # (B, k), most similar first
        labels = bank.y[idx]  # (B, k)
        weights = sims.sub(sims[:, :1]).div(t).exp()
        votes.append(torch.zeros(q.shape[0], num_classes, device=q.device).scatter_add_(1, labels, weights))
        voted.append(torch.zeros_like(votes[-1], dtype=torch.bool).scatter_(1, labels, True))
    if not votes:
        empty = torch.zeros(0, num_classes, device=queries.device)
        return empty, empty.bool()
    return torch.cat(votes), torch.cat(voted)


def knn_classify(bank: Features, val: Features, num_classes: int, k: int, t: float,
                 max_sims: int = MAX_SIMS) -> dict[str, float]:
    """Top-1 / top-5 accuracy (fractions) of the weighted k-NN vote on ``val`` with ``bank`` as memory."""
    votes, voted = knn_votes(bank, val.x, num_classes, k, t, max_sims)
    top = votes.topk(min(5, num_classes), dim=1).indices  # (Q, 5)
    hit = top.eq(val.y.view(-1, 1)) & voted.gather(1, top)  # a class nobody voted for is no hit
    return {"Top1-Acc": hit[:, 0].double().mean().item(), "Top5-Acc": hit.any(dim=1).double().mean().item()}
