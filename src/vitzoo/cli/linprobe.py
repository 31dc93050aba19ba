"""`vitzoo linprobe`: train a linear classifier on a frozen encoder's features, report its val accuracy.

The BEiT / MAE protocol: the encoder (``--pretrained CKPT``: a ``vitzoo pretrain`` / ``train`` checkpoint or
an official file) is frozen; each train and val image is encoded once with the eval transform (feature:
``probe_block``, ``probe_pool``); a ``BatchNorm1d(affine=False)`` + ``Linear`` head is trained on the train
split's labels (``probe_epochs``, ``probe_lr``, ``probe_batch_size``; SGD, cosine) and evaluated on val.
Prints the seeds' line ``eval results: {'Loss': x, 'Top1-Acc': y, 'Top5-Acc': z}``; ``--json FILE`` writes
the metrics, the feature and probe settings, and the encoder used. ``--pretrained ''`` probes a randomly
initialised ``model`` (seeded): the baseline a pre-trained encoder should beat.

Under ``torchrun`` the processes share the encoding; every process then trains the same (cheap) head on
the same gathered features, so none waits on another, and only rank 0 prints and writes.
"""
from __future__ import annotations

import sys
import time

from vitzoo.config import dump_config, parse_args
from vitzoo.engine import dist
from vitzoo.engine.loop import format_eval
from vitzoo.probe import ProbeSettings, evaluate_probe, train_linear_probe
from vitzoo.probe.inputs import check_inputs, probe_inputs, probe_parser, write_json


def build_parser():
    return probe_parser("vitzoo linprobe", __doc__)


class EpochLog:
    """A line on stderr for the first epoch, every tenth of the run and the last (main process only)."""

    def __init__(self, epochs: int):
        self.epochs, self.every = epochs, max(1, epochs // 10)
        self.start = time.perf_counter()
        self.show = dist.is_main()

    def __call__(self, epoch: int, loss: float, lr: float) -> None:
        done = epoch + 1
        if self.show and (done == 1 or done % self.every == 0 or done == self.epochs):
            print(f"probe epoch {done}/{self.epochs} train loss {loss:.4f} lr {lr:.4g} "
                  f"({time.perf_counter() - self.start:.1f} s)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_args(argv, parser=build_parser())
    if ns.dry_run:
        print(dump_config(cfg), end="")
        return 0
    check_inputs(cfg, "linprobe")
    _rank, world, _local, device = dist.init_distributed(cfg.device, cfg.dist_timeout)
    try:
        inputs = probe_inputs(cfg, device, world)
        settings = ProbeSettings(cfg.probe_epochs, cfg.probe_lr, cfg.probe_batch_size, cfg.seed)
        start = time.perf_counter()
        losses: list[float] = []
        log = EpochLog(settings.epochs)

        def on_epoch(epoch: int, loss: float, lr: float) -> None:
            losses.append(loss)
            log(epoch, loss, lr)

        head = train_linear_probe(inputs.train, len(inputs.classes), settings, on_epoch)
        results = evaluate_probe(head, inputs.val)
        if dist.is_main():
            print(format_eval(results), flush=True)
            if ns.json_out:
                probe = {"head": "BatchNorm1d(affine=False, eps=1e-6) + Linear",
                         "optimizer": "SGD momentum 0.9, weight decay 0, cosine to 0 per step",
                         "epochs": settings.epochs, "lr": settings.lr, "batch_size": settings.batch_size,
                         "seed": settings.seed, "train_loss_per_epoch": [round(v, 6) for v in losses],
                         "seconds": round(time.perf_counter() - start, 2)}
                payload = {"command": "linprobe", **results, **inputs.describe(), "probe": probe}
                write_json(ns.json_out, payload)
    finally:
        dist.cleanup()
    return 0
