"""Side-by-side throughput of a vitzoo model and its reference, in one process on the same input.

Shared by ``vitzoo bench`` and ``benchmarks/bench_models.py``. The reference is timm's model of the same
name with the *same weights* (its state dict loaded strictly into ours), or, for names timm lacks
(T2T-ViT), the same model running the official implementation's arithmetic during its calls only: the
softmax attention ``softmax((q @ k^T) * scale) @ v`` with the N x N map materialised (models/t2t_vit.py
and token_transformer.py of yitu-opensource/T2T-ViT) for ``F.scaled_dot_product_attention``, the
Token Performer's einsum formulation (token_performer.py) for our fused one, and its Unfold-and-transpose
soft split for our strided one.

Fairness: a warm-up per side, then rounds; each round times ``iters`` steps of each side, alternating
which goes first, so drifting load (turbo, other jobs) hits both alike. Rates are medians over rounds;
the ratio is the median of the per-round ratios ours / reference (paired: a load change between rounds
cancels). ``clock="cpu"`` counts process CPU time instead of wall time (robust to a shared machine; use
one thread, since idle OpenMP threads spin and would be counted).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from vitzoo.engine.optim import kernel_kwargs
from vitzoo.models import create_model, t2t_vit
from vitzoo.models.t2t_vit import TokenPerformer
from vitzoo.runtime.cpu import cpu_bf16_units, cpu_flags, cpu_model
from vitzoo.runtime.packed import Int8Linear, calibrate_int8
from vitzoo.runtime.precision import FP32, Precision

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
FLAGS_SHOWN = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()  # host-device sync: time the kernels, not their launch


def time_iters(fn: Callable, iters: int, device: torch.device, clock: str = "wall") -> float:
    """Seconds for ``iters`` calls of ``fn`` on the given clock."""
    now = CLOCKS[clock]
    sync(device)
    t0 = now()
    for _ in range(iters):
        fn()
    sync(device)
    return now() - t0


def peak_memory(fn: Callable, device: torch.device) -> float | None:
    """Peak memory (MiB) of one call. CUDA: the allocator's peak during the call, weights included. CPU:
    the peak of what the call allocates above what was held before it (activations, gradients,
    workspaces; the weights not included), from torch.profiler's allocation records in time order: each
    op's own allocations less its frees, and the frees that happen between ops."""
    if device.type == "cpu":
        return _cpu_peak_memory(fn)
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def _cpu_peak_memory(fn: Callable) -> float:
    # PyPI's CUDA wheels of torch log each profiler start and stop, and a failed GPU count on a machine
    # without one, to stderr through kineto; level 6 (above its USDT = 5) silences them. Read when the
    # profiler first starts, so it is set before the import.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile  # the profiler is only needed here

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    held = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        held += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak / 2**20


def naive_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The official T2T-ViT attention arithmetic: the (B, heads, N, N) map is materialised."""
    attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if attn_mask is not None:
        attn = attn + attn_mask
    return attn.softmax(dim=-1) @ v


def official_performer_attention(self, x: torch.Tensor) -> torch.Tensor:
    """The official Token Performer's attention arithmetic (yitu-opensource/T2T-ViT,
    models/token_performer.py), as a method of our ``TokenPerformer``: the random features built with a
    repeated |x|^2 / 2 tensor, an einsum and three element-wise passes, then three einsums and a repeated
    normaliser. Same function as ours (``TokenPerformer.attention``), the official operator sequence."""
    def features(t: torch.Tensor) -> torch.Tensor:
        half_sq = (t * t).sum(dim=-1, keepdim=True).repeat(1, 1, self.m) / 2
        return torch.exp(torch.einsum("bti,mi->btm", t.float(), self.w) - half_sq) / math.sqrt(self.m)

    k, q, v = torch.split(self.kqv(x), self.emb, dim=-1)
    kp, qp = features(k), features(q)
    norm = torch.einsum("bti,bi->bt", qp, kp.sum(dim=1)).unsqueeze(dim=2)
    context = torch.einsum("bin,bim->bnm", v.float(), kp)
    y = torch.einsum("bti,bni->btn", qp, context) / (norm.repeat(1, 1, self.emb) + self.eps)
    return v + self.dp(self.proj(y))


def official_soft_split(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """The official soft split (models/t2t_vit.py, T2T_module): tokens back to a channels-first image,
    ``nn.Unfold``, transposed to tokens. Same numbers as :func:`t2t_vit.soft_split`, the official ops."""
    image = x.permute(0, 3, 1, 2).contiguous()  # official: x.transpose(1, 2).reshape(B, C, H, W)
    return F.unfold(image, kernel, stride=stride, padding=padding).transpose(1, 2)


@contextmanager
def official_arithmetic():
    """During the reference's calls only: :func:`naive_sdpa` for ``F.scaled_dot_product_attention``,
    :func:`official_performer_attention` for ``TokenPerformer.attention`` and :func:`official_soft_split`
    for T2T's ``soft_split``."""
    fused, performer, split = F.scaled_dot_product_attention, TokenPerformer.attention, t2t_vit.soft_split
    F.scaled_dot_product_attention, TokenPerformer.attention = naive_sdpa, official_performer_attention
    t2t_vit.soft_split = official_soft_split
    try:
        yield
    finally:
        F.scaled_dot_product_attention, TokenPerformer.attention, t2t_vit.soft_split = fused, performer, split


def build_pair(name: str, reference: str = "auto", **overrides) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(ours, reference, label): timm's model with its weights copied into ours (``timm``), or for names
    timm lacks (or ``official``) a copy of ours that runs the official arithmetic (:func:`official_arithmetic`)."""
    import timm  # optional for the rest of vitzoo, and slow to import

    torch.manual_seed(0)
    if reference == "timm" or (reference == "auto" and timm.is_model(name)):
        ref = timm.create_model(name, pretrained=False, **overrides).eval()
        ours = create_model(name, **overrides).eval()
        missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
        # non-persistent buffers of ours (e.g. BEiT's relative_position_index) are derived, not loaded
        unexpected = [k for k in unexpected if not k.endswith("relative_position_index")]
        if missing or unexpected:
            raise ValueError(f"{name}: timm weights do not map onto ours: missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}")
        return ours, ref, "timm"
    ours = create_model(name, **overrides).eval()
    return ours, copy.deepcopy(ours), "official"


def machine_info() -> dict:
    """What the figures depend on: CPU model and its relevant flags, threads, torch/timm versions."""
    flags = cpu_flags()
    info = {"cpu": cpu_model() or platform.processor() or platform.machine(),
            "cpu_flags": [f for f in FLAGS_SHOWN if f in flags], "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def count_gflops(model: torch.nn.Module, input_size, device: torch.device) -> float:
    """GFLOPs of one image's forward, counted by torch's FLOP counter on the model (not a table).

    Attention runs through SDPA's math backend while counting: the counter has no formula for the CPU
    flash kernel, so its two matmuls would go uncounted there (deit_small: 8.48 instead of 9.20 GFLOPs,
    the figure CUDA's kernels give)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    return counter.get_total_flops() / 1e9


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int | None = None, iters: int = 3,
                clock: str = "wall") -> float:
    """This machine's measured matmul rate (GFLOP/s) for ``dtype``: best of ``iters`` n x n products, on
    the clock (and with the threads) the models are timed with. n defaults to 2048 on a CPU and 8192 on a
    GPU (a 2048^3 product is too small to keep a large GPU busy). int8 (CPU): the product int8 layers run
    (oneDNN's, :class:`Int8Linear`), its input quantized once beforehand."""
    n = n or (8192 if device.type == "cuda" else 2048)
    if dtype == torch.int8:
        layer = Int8Linear.from_linear(torch.nn.Linear(n, n, bias=False))
        operands = layer.operands(torch.randn(n, n))

        def product():
            return torch.ops.onednn.qlinear_pointwise(*operands, None, 1.0, 0, torch.float32, "none", [], "")
    else:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)

        def product():
            return a @ b
    product()  # warm-up
    best = min(time_iters(product, 1, device, clock) for _ in range(iters))
    return 2 * n**3 / best / 1e9


def peak_dtypes(device: torch.device) -> tuple[torch.dtype, ...]:
    """The dtypes whose matmul peak a bench measures before its rows: fp32, and bf16 where the device has
    bf16 units. On a CPU without them bf16 products run in a scalar fallback (1.3 GFLOP/s on a 2-core
    AVX2 EPYC, 13 s per 2048^3 product): its peak is measured only after the rows, if a row ran bf16."""
    has_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else bool(cpu_bf16_units())
    return (torch.float32, torch.bfloat16) if has_bf16 else (torch.float32,)


def add_peak_fractions(rows: list[dict], peaks: dict[torch.dtype, float]) -> None:
    """Each row's achieved FLOP/s over the matmul peak of its dtype (on a GPU: model FLOPs utilisation
    against the *measured* peak, not the datasheet's). ``peaks`` should be the best of measurements taken
    before and after the rows: one taken while other jobs load a shared CPU comes out low, and a fraction
    over it would read above 100%."""
    for row in rows:
        peak = peaks.get(row.pop("_peak_dtype", torch.float32))
        row["peak_fraction"] = row["step_gflops"] * row["ours_img_s"] / peak if peak else None


def infer_fn(model, x, precision: Precision, device, official: bool = False) -> Callable:
    x = precision.cast_input(x)

    def run():
        with torch.inference_mode(), precision.context(device), (official_arithmetic() if official else nullcontext()):
            return model(x)

    return run


def train_step(model, precision: Precision, device, official: bool = False, ours: bool = True) -> Callable:
    """``step(x, y)``: forward, CE loss, backward, AdamW step. Ours builds AdamW as vitzoo's trainer does
    (fused kernels where torch has them: CUDA, and CPU since torch 2.4); the reference as a plain timm
    script does, ``AdamW(model.parameters())`` with torch's defaults (foreach on CUDA, a per-tensor loop on
    a CPU)."""
    model.train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, **(kernel_kwargs(torch.optim.AdamW, params) if ours else {}))

    def step(x, y):
        with precision.context(device), (official_arithmetic() if official else nullcontext()):
            out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def train_fn(model, x, y, precision: Precision, device, official: bool = False, ours: bool = True) -> Callable:
    """One :func:`train_step` on a fixed batch."""
    step = train_step(model, precision, device, official, ours)
    return lambda: step(x, y)


def interleaved(fns: dict[str, Callable], *, batch: int, rounds: int, iters: int, warmup: int,
                device: torch.device, clock: str = "wall") -> dict[str, list[float]]:
    """Per-round img/s of each function, the order alternating between rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    keys = list(fns)
    rates: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for key in (keys if r % 2 == 0 else keys[::-1]):
            rates[key].append(batch * iters / time_iters(fns[key], iters, device, clock))
    return rates


def bench_model(name: str, *, mode: str = "infer", batch: int = 8, img_size: int | None = None,
                ours_precision: Precision = FP32, ref_precision: Precision = FP32, against: str = "auto",
                device: torch.device | str = "cpu", rounds: int = 5, iters: int = 1, warmup: int = 1,
                clock: str = "wall", compile: bool = False,
                decide: Callable[[torch.nn.Module], Precision] | None = None, calibrated: bool = False) -> dict:
    """One row: params, GFLOPs/image, img/s and ms/step of ours (and of the reference with the ratio).

    ``decide``: called with our fp32 model to pick its precision (the policy measures the model), else
    ``ours_precision``. The fraction of peak is added afterwards by :func:`add_peak_fractions`.
    """
    device = torch.device(device)
    overrides = {"img_size": img_size} if img_size else {}
    if against == "none":
        torch.manual_seed(0)
        ours, ref, label = create_model(name, **overrides).eval(), None, None
    else:
        ours, ref, label = build_pair(name, against, **overrides)
    ours = ours.to(device)
    size = tuple(ours.data_config["input_size"])
    torch.manual_seed(1)
    x = torch.randn(batch, *size, device=device)
    y = torch.randint(0, ours.num_classes, (batch,), device=device)
    official = label == "official"
    diff = None
    if ref is not None:
        ref = ref.to(device)
        with torch.inference_mode():  # fp32: the same function? (official arithmetic for the reference only)
            with official_arithmetic() if official else nullcontext():
                ref_out = ref(x[:2]).float()
            diff = (ours(x[:2]).float() - ref_out).abs().max().item()
    gflops = count_gflops(ours, size, device)
    params = sum(p.numel() for p in ours.parameters())
    if decide is not None:
        ours_precision = decide(ours)
    if mode == "infer":
        if compile:  # inductor packs the linears itself (the same oneDNN ops, models/packed.py)
            ours_precision = dataclasses.replace(ours_precision, pack=False)
        ours = ours_precision.cast_model(ours)
        if calibrated and ours_precision.int8_weight_bits:  # fixed int8 ranges, from the timed input itself
            calibrate_int8(ours, [x])
            ours_precision = dataclasses.replace(ours_precision, calibrated=True)
        ref = ref_precision.cast_model(ref) if ref is not None else None
    if compile:
        ours = torch.compile(ours)
        ref = torch.compile(ref) if ref is not None else None
    make = infer_fn if mode == "infer" else (
        lambda m, x, p, d, official=False: train_fn(m, x, y, p, d, official, ours=m is ours))
    fns = {"ours": make(ours, x, ours_precision, device)}
    if ref is not None:
        fns["ref"] = make(ref, x, ref_precision, device, official)
    rates = interleaved(fns, batch=batch, rounds=rounds, iters=iters, warmup=warmup, device=device, clock=clock)
    ours_rate = statistics.median(rates["ours"])
    dtype = ours_precision.weights or ours_precision.autocast or (
        torch.int8 if ours_precision.int8_weight_bits else torch.float32)
    row = {"name": name, "mode": mode, "batch": batch, "img_size": size[-1], "device": str(device),
           "params_m": params / 1e6, "gflops": gflops, "ours_precision": ours_precision.label,
           "ours_precision_why": ours_precision.describe(),
           "ours_img_s": ours_rate, "ours_ms_step": 1000 * batch / ours_rate,
           "step_gflops": gflops * (1 if mode == "infer" else 3), "_peak_dtype": dtype,  # backward ~ 2x forward
           "ours_peak_mib": peak_memory(fns["ours"], device), "ours_rounds": rates["ours"], "compile": compile}
    if ref is not None:
        row.update({"reference": label, "ref_precision": ref_precision.label,
                    "ref_img_s": statistics.median(rates["ref"]), "ref_rounds": rates["ref"],
                    "ratio": statistics.median(o / r for o, r in zip(rates["ours"], rates["ref"])),
                    "max_abs_diff_fp32": diff, "ref_peak_mib": peak_memory(fns["ref"], device)})
    return row
