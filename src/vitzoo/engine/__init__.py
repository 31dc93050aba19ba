"""Training engine: optimiser groups, LR schedules, losses, EMA, the train/eval loops and the run.

The modules are small and import nothing heavy at package import time; use them directly::

    from vitzoo.engine.optim import build_optimizer        # param groups, layer decay, fused kernels
    from vitzoo.engine.schedule import LRScheduler          # per-step warmup + cosine/step/exp/plateau
    from vitzoo.engine.losses import build_criterion, DistillationLoss
    from vitzoo.engine.ema import ModelEma
    from vitzoo.engine.loop import train_one_epoch, evaluate
    from vitzoo.engine.trainer import Trainer, train       # the whole run from a RunConfig
"""
from __future__ import annotations

__all__ = ["dist", "ema", "loop", "losses", "optim", "schedule", "teacher", "trainer"]
