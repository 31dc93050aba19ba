"""Timing a model in bf16 against fp32, for the precision policy (:mod:`vitzoo.runtime.precision`): one forward
(bf16 weights) or one training step (bf16 autocast), on one thread by CPU time. The policy decides and
remembers; this module only measures.
"""
from __future__ import annotations

import copy
import functools
import time
from contextlib import nullcontext

import torch


def measure_bf16_speedup(model: torch.nn.Module, device: torch.device, batch: int = 2, rounds: int = 3,
                         train: bool = False) -> float:
    """fp32 time / bf16 time of one forward of ``batch`` random images -- bf16 weights against fp32 --
    or, ``train``, of one training step (forward and backward of a copy of the model, bf16 autocast against
    fp32, batch 1): the best of ``rounds`` alternating runs each, after a warm-up. On a CPU: one thread,
    timed by this process's CPU time, so other jobs on a shared machine (time spent waiting for a core) do
    not sway the choice; on a GPU wall-clock. A one-off cost, paid once per process and model (and
    remembered between runs). The random state is left as it was: training draws from it next."""
    size = getattr(model, "data_config", {}).get("input_size", (3, 224, 224))
    clock = time.process_time if device.type == "cpu" else time.perf_counter

    def seconds(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # host-device sync: time the kernels
        return clock() - t0

    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU time of one thread: spinning OpenMP threads would be counted too
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            fp32_step, bf16_step = (_training_steps(model, device, size) if train
                                    else _forward_steps(model, device, size, batch))
            fp32_step(), bf16_step()  # warm-up: allocator, oneDNN kernel selection
            fp32, bf16 = zip(*((seconds(fp32_step), seconds(bf16_step)) for _ in range(rounds)))
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return min(fp32) / max(min(bf16), 1e-9)


def _forward_steps(model: torch.nn.Module, device: torch.device, size, batch: int):
    x = torch.randn(batch, *size, device=device)
    low = copy.deepcopy(model).to(torch.bfloat16).eval()
    xb = x.to(torch.bfloat16)
    model.eval()

    def forward(net, inp):
        with torch.inference_mode():
            net(inp)

    return functools.partial(forward, model, x), functools.partial(forward, low, xb)


def _training_steps(model: torch.nn.Module, device: torch.device, size):
    """Forward and backward of a copy of ``model`` in train mode (dropout, drop-path), fp32 and under bf16
    autocast. Outputs of any shape count (a distilled model's two heads, masked-image-modeling logits)."""
    net = copy.deepcopy(model).train()
    x = torch.randn(1, *size, device=device)

    def step(autocast: torch.dtype | None):
        with torch.autocast(device.type, dtype=autocast) if autocast else nullcontext():
            out = net(x)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        sum(o.float().sum() for o in outs).backward()
        net.zero_grad(set_to_none=True)

    return functools.partial(step, None), functools.partial(step, torch.bfloat16)
