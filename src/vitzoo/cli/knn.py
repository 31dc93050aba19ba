"""`vitzoo knn`: weighted k-nearest-neighbour accuracy of a frozen encoder's features (DINO's protocol).

The encoder (``--pretrained CKPT``; ``''`` = randomly initialised ``model``, the baseline) encodes each
train and val image once with the eval transform (feature: ``probe_block``, ``probe_pool``); the train
features are the memory, each val image is classified by the ``exp(cosine / knn_t)``-weighted votes of its
``knn_k`` nearest train images (DINO ``eval_knn.py``: k 20, T 0.07). No training, no labels beyond the
train split's. Prints ``eval results: {'Top1-Acc': y, 'Top5-Acc': z}`` (the DeiT seed's line without the
loss, which a vote has none of, as ``vitzoo eval-onnx``); ``--json FILE`` also writes the settings.

Under ``torchrun`` the processes share the encoding; every process then votes on the same gathered features
(seconds), and only rank 0 prints and writes.
"""
from __future__ import annotations

import time

from vitzoo.config import dump_config, parse_args
from vitzoo.engine import dist
from vitzoo.probe import knn_classify
from vitzoo.probe.inputs import check_inputs, probe_inputs, probe_parser, write_json


def build_parser():
    return probe_parser("vitzoo knn", __doc__)


def format_knn(results: dict) -> str:
    """``eval results: {'Top1-Acc': 0.9125, 'Top5-Acc': 1.0}`` (rounded as the seeds' line)."""
    return "eval results: " + str({k: round(float(results[k]), 6) for k in ("Top1-Acc", "Top5-Acc")})


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_args(argv, parser=build_parser())
    if ns.dry_run:
        print(dump_config(cfg), end="")
        return 0
    check_inputs(cfg, "knn")
    _rank, world, _local, device = dist.init_distributed(cfg.device, cfg.dist_timeout)
    try:
        inputs = probe_inputs(cfg, device, world)
        start = time.perf_counter()
        results = knn_classify(inputs.train, inputs.val, len(inputs.classes), cfg.knn_k, cfg.knn_t)
        if dist.is_main():
            print(format_knn(results), flush=True)
            if ns.json_out:
                knn = {"k": cfg.knn_k, "t": cfg.knn_t, "similarity": "cosine (L2-normalised features)",
                       "weights": "exp(cosine / t)", "seconds": round(time.perf_counter() - start, 2)}
                write_json(ns.json_out, {"command": "knn", **results, **inputs.describe(), "knn": knn})
    finally:
        dist.cleanup()
    return 0
