"""Per-step learning-rate schedule: linear warmup, then cosine / step / exponential / plateau / constant.

Time is measured in (fractional) epochs ``t = update / updates_per_epoch`` and the lr is set before every
optimiser update, as timm's schedulers do with ``--sched-on-updates`` (timm/scheduler/*.py):

* warmup (``t < warmup_epochs``): ``warmup_lr + (lr - warmup_lr) * t / warmup_epochs``;
* cosine: ``min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2`` with ``T = epochs - cooldown_epochs``
  (timm's non-prefix warmup: the cosine clock starts at 0, warmup overrides its start);
* step: ``lr * decay_rate ** floor(t / decay_epochs)`` (``lr_adjust`` / ``lr_gamma`` in the T2T seed);
* exponential: ``lr * decay_rate ** t`` (equal to per-epoch decay at epoch boundaries);
* plateau: ``lr * decay_rate ** k`` where ``k`` grows each time val top-1 has not improved for more than
  ``patience_epochs`` evaluations (as torch's ReduceLROnPlateau, mode 'max');
* constant: ``lr``.

The decaying schedules never go below ``min_lr``; the last ``cooldown_epochs`` of ``epochs`` run at
``min_lr`` (timm instead appends cooldown after ``epochs``; here ``epochs`` is always the run's length).
Each param group's lr is ``lr * group['lr_scale']`` (layer-wise decay, see :mod:`vitzoo.engine.optim`).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from vitzoo.config import RunConfig
from vitzoo.errors import UserError

SCHEDULES = ("cosine", "step", "exponential", "plateau", "constant")


class LRScheduler:
    """Sets ``optimizer``'s lrs for update ``num_updates``; call :meth:`step` after every update."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | None,
        *,
        sched: str = "cosine",
        lr: float,
        epochs: float,
        updates_per_epoch: int,
        warmup_epochs: float = 0.0,
        warmup_lr: float = 0.0,
        min_lr: float = 0.0,
        decay_epochs: float = 30.0,
        decay_rate: float = 0.1,
        patience_epochs: int = 10,
        cooldown_epochs: float = 0.0,
    ) -> None:
        if sched not in SCHEDULES:  # a programming error: RunConfig admits only these
            raise ValueError(f"unknown schedule {sched!r}; one of {', '.join(SCHEDULES)}")
        if updates_per_epoch < 1:
            raise UserError("the training set gives no full batch per epoch: lower batch_size / update_freq or add data")
        self.optimizer = optimizer
        self.sched, self.base_lr, self.epochs = sched, float(lr), float(epochs)
        self.updates_per_epoch = int(updates_per_epoch)
        self.warmup_epochs, self.warmup_lr = float(warmup_epochs or 0), float(warmup_lr or 0)
        self.min_lr = float(min_lr or 0)
        self.decay_epochs, self.decay_rate = float(decay_epochs), float(decay_rate)
        self.patience_epochs, self.cooldown_epochs = int(patience_epochs), float(cooldown_epochs or 0)
        self.num_updates = 0
        # plateau state
        self.best: float | None = None
        self.bad_epochs = 0
        self.num_reductions = 0
        self.apply()

    # ----------------------------------------------------------------------------- the formula
    def lr_at(self, update: int) -> float:
        """The base lr (before ``lr_scale``) for optimiser update number ``update`` (0-based)."""
        t = update / self.updates_per_epoch
        if t < self.warmup_epochs:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * t / self.warmup_epochs
        if self.sched == "constant":
            return self.base_lr
        end = self.epochs - self.cooldown_epochs  # decay horizon; cooldown at min_lr afterwards
        if self.cooldown_epochs > 0 and t >= end:
            return self.min_lr
        if self.sched == "cosine":
            if end <= 0 or t >= end:
                return self.min_lr
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t / end))
        if self.sched == "step":
            lr = self.base_lr * self.decay_rate ** math.floor(t / self.decay_epochs)
        elif self.sched == "exponential":
            lr = self.base_lr * self.decay_rate ** t
        else:  # plateau
            lr = self.base_lr * self.decay_rate ** self.num_reductions
        return max(lr, self.min_lr)

    def apply(self) -> float:
        """Write the lr of the current update into every param group; return the base lr."""
        lr = self.lr_at(self.num_updates)
        if self.optimizer is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr

    def get_lr(self) -> float:
        return self.lr_at(self.num_updates)

    # ------------------------------------------------------------------------------- stepping
    def step(self) -> float:
        """Advance one optimiser update (skipped updates count too) and set the next lr."""
        self.num_updates += 1
        return self.apply()

    def step_epoch(self, metric: float | None = None) -> None:
        """End-of-evaluation hook: the plateau schedule watches val top-1 (higher is better)."""
        if self.sched != "plateau" or metric is None:
            return
        if self.num_updates / self.updates_per_epoch < self.warmup_epochs:
            return
        if self.best is None or metric > self.best * (1 + 1e-4):  # rel threshold, as ReduceLROnPlateau
            self.best, self.bad_epochs = float(metric), 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience_epochs:
                self.num_reductions += 1
                self.bad_epochs = 0
        self.apply()

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "best": self.best, "bad_epochs": self.bad_epochs,
                "num_reductions": self.num_reductions, "sched": self.sched}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self.best = state.get("best")
        self.bad_epochs = int(state.get("bad_epochs", 0))
        self.num_reductions = int(state.get("num_reductions", 0))
        self.apply()


def build_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer, lr: float, updates_per_epoch: int) -> LRScheduler:
    """:class:`LRScheduler` from a RunConfig's canonical keys."""
    return LRScheduler(
        optimizer, sched=cfg.sched, lr=lr, epochs=cfg.epochs, updates_per_epoch=updates_per_epoch,
        warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr,
        decay_epochs=cfg.decay_epochs, decay_rate=cfg.decay_rate, patience_epochs=cfg.patience_epochs,
        cooldown_epochs=cfg.cooldown_epochs,
    )
