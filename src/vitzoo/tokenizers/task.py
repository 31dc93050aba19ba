"""A tokenizer as a training task for the engine: the forward, the loss and the epoch's token statistics.

The engine's :class:`~vitzoo.engine.loop.TrainStep` calls ``forward(model, x, y)`` then
``criterion(x, outputs, y)``; here ``x`` is a batch of images in [0, 1] and the labels ``y`` are unused.
Loss: per-pixel MSE plus the quantiser's term (vqvae: commitment, beta = 0.25; dvae: KL to the uniform
prior, small weight, because at a few thousand updates a DALL-E-sized weight drives the encoder to uniform
logits before the decoder has learned anything). The forward and the loss also count, on the device and
without a host sync, what :meth:`TokenizerObjective.take_epoch` reports: reconstruction MSE, codebook usage
and perplexity since the last report (an epoch; after a mid-epoch resume, the part of it since the resume,
as the engine's own train_loss).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.engine import dist
from vitzoo.tokenizers.vqvae import StepOutput

MIN_TEMPERATURE = 1 / 16  # dvae: Gumbel-softmax temperature annealed 1 -> 1/16 by cosine (arXiv:2102.12092 A.2)


def temperature(update: int, total: int) -> float:
    """dvae's Gumbel-softmax temperature: cosine from 1 to MIN_TEMPERATURE over the run."""
    t = min(1.0, update / max(1, total))
    return MIN_TEMPERATURE + (1.0 - MIN_TEMPERATURE) * 0.5 * (1.0 + math.cos(math.pi * t))


def code_stats(counts: torch.Tensor) -> tuple[int, float]:
    """(codes used, perplexity = exp(entropy of the token histogram)): perplexity K = all used evenly."""
    p = counts.double() / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return int((counts > 0).sum()), float(entropy.exp())  # host sync


class TokenizerObjective:
    """``forward(model, images, y) -> StepOutput`` and ``criterion(images, out, y) -> loss`` for the engine.

    ``scheduler`` (set once the step is built) gives the update count the dvae temperature follows.
    """

    def __init__(self, vocab_size: int, dvae: bool, total_updates: int, device: torch.device) -> None:
        self.vocab_size, self.dvae, self.total_updates = vocab_size, dvae, total_updates
        self.scheduler: Any = None
        self.tau = 1.0
        self.counts = torch.zeros(vocab_size, dtype=torch.long, device=device)  # tokens chosen per code
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # MSE x images, images (finite losses)

    def forward(self, model: nn.Module, images: torch.Tensor, y: Any) -> StepOutput:
        if self.dvae:
            self.tau = temperature(self.scheduler.num_updates, self.total_updates)
        out = model(images, self.tau)  # TrainedTokenizer.forward: the training forward (through DDP)
        self.counts += torch.bincount(out.ids.flatten(), minlength=self.vocab_size)
        return out

    def criterion(self, images: torch.Tensor, out: StepOutput, y: Any) -> torch.Tensor:
        mse = F.mse_loss(out.recon.float(), images.float())
        loss = mse + out.aux_loss.float()
        # a non-finite loss is a skipped (or stopping) update: its MSE stays out of the epoch's mean
        good = torch.stack([mse.detach().double() * len(images), torch.tensor(float(len(images)), device=mse.device,
                                                                           dtype=torch.float64)])
        self.sums += torch.where(torch.isfinite(loss.detach()), good, torch.zeros_like(good))
        return loss

    def take_epoch(self) -> dict[str, Any]:
        """The statistics gathered since the last call, summed over processes; the counters restart."""
        totals = dist.all_reduce_sum(torch.cat([self.sums, self.counts.double()]))
        mse_sum, seen = totals[:2].tolist()  # host sync
        used, perplexity = code_stats(totals[2:])
        self.sums.zero_()
        self.counts.zero_()
        stats = {"recon_mse": mse_sum / max(1.0, seen), "codebook_usage": used / self.vocab_size, "codes_used": used,
                 "perplexity": perplexity}
        return stats | ({"temperature": self.tau} if self.dvae else {})
