"""vitzoo's hand-written CPU kernels against the library paths, side by side in one process (DESIGN rule 15).

For each model and batch, every path runs the same weights on the same input, in alternating rounds
(``vitzoo.bench.measure.interleaved``); medians of img/s, and each ratio is the median of the per-round
ratios with their range (a shared machine: a load change between rounds cancels, a noisy row shows itself).

- ``eager``: vitzoo's model in fp32 (timm's operator sequence, ``nn.Linear``), the baseline of the ratios;
- ``timm``: timm's model of the same name with the same weights, fp32 (the second ratio column);
- ``packed``: vitzoo's pre-packed oneDNN linears, fp32 (``runtime/packed.py``);
- ``compile``: ``torch.compile`` of the eager model with ``torch._inductor.config.freezing = True`` (inductor
  then packs the weights for oneDNN itself and fuses bias / GELU / adds);
- ``bf16`` / ``bf16_packed`` / ``bf16_compile``: the same three in bf16 weights (``--precision bf16``), where
  oneDNN has a bf16 path on this CPU (AVX512-BF16 / AMX; elsewhere left out);
- ``int8`` / ``int8_cal``: vitzoo's int8 linears (``--precision int8``), ranges per call / calibrated;
- ``pt2e_dyn`` / ``pt2e``: PT2E int8 (``torch.export`` -> torchao's ``prepare_pt2e`` with
  ``X86InductorQuantizer`` -> ``convert_pt2e`` -> ``torch.compile`` with freezing), dynamic (per call) and
  static (calibrated) activation ranges; ``reduce_range`` (7-bit activations) where the CPU has no VNNI,
  as the quantizer's documentation asks (the saturating VPMADDUBSW; vitzoo uses 7-bit weights there);
- ``ao_dyn``: torchao's ``quantize_(Int8DynamicActivationInt8WeightConfig())`` then ``torch.compile``.

Both calibrated paths calibrate on the same images (8, or one batch if larger; not the timed ones). Accuracy: each path's logits
against ``eager`` on 32 images (run in chunks of the batch): max |diff| over max |logit|, and top-1
agreement. The weights are timm's random initialisation (no network here): agreement on random weights
is a weaker check than on a trained model (tests/test_precision.py guards int8 on a trained one).
Compile / quantize seconds are printed per path: a one-off cost per process and input shape.

    python benchmarks/bench_kernels.py --model deit_tiny_patch16_224,deit_small_patch16_224 --batch 1,32 --rounds 5
    # as an AVX2-only CPU would run it (oneDNN, ATen and inductor held to 256-bit AVX2, int8 without VNNI):
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_kernels.py --paths \\
        eager,timm,packed,compile,int8,int8_cal,pt2e_dyn,pt2e --model deit_small_patch16_224 --batch 32
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch

from vitzoo.bench import measure as bench
from vitzoo.runtime.cpu import int8_units
from vitzoo.runtime.host_allocator import keep_freed_memory
from vitzoo.runtime.packed import calibrate_int8, pack_linears, packing_available

# each hand-written path beside the library path that does the same job: the "vs library" column
LIBRARY = {"packed": "compile", "bf16_packed": "bf16_compile", "int8": "pt2e_dyn", "int8_cal": "pt2e"}
PATHS = ("eager", "timm", "packed", "compile", "bf16", "bf16_packed", "bf16_compile", "int8", "int8_cal", "pt2e_dyn",
         "pt2e", "ao_dyn")
CHECK_IMAGES = 32
# ONEDNN_MAX_CPU_ISA=AVX2 (with ATEN_CPU_CAPABILITY=avx2): the run stands in for an AVX2-only CPU, as
# tests/test_models_packed.py does: oneDNN's int8 products then saturate like VPMADDUBSW, so both int8
# sides take the no-VNNI settings (7-bit weights; the quantizer's reduce_range)
AS_AVX2 = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="deit_tiny_patch16_224,deit_small_patch16_224")
    p.add_argument("--batch", default="1,32", help="comma list of batch sizes")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {', '.join(PATHS)}")
    args = p.parse_args()
    paths = args.paths.split(",")
    memory = keep_freed_memory()  # before the first tensor, as vitzoo's commands
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights as constants: inductor pre-packs them (oneDNN) and folds
    if AS_AVX2:  # inductor's own kernels in 256-bit vectors too (ATEN_CPU_CAPABILITY=avx2 does ATen's)
        inductor_config.cpp.simdlen = 256
    warnings.filterwarnings("ignore")
    info = bench.machine_info()
    print(f"# {info['cpu']} (flags: {' '.join(info['cpu_flags']) or 'none shown'}; torch {info['torch']}, "
          f"capability {info['cpu_capability']}, threads {info['threads']}"
          f"{'; oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA)' if AS_AVX2 else ''}); {_torchao_version()}; wall clock, "
          f"{args.rounds} alternating rounds; host memory: {memory}", flush=True)
    for name in args.model.split(","):
        for batch in map(int, args.batch.split(",")):
            bench_one(name, batch, paths, args.rounds)


def bench_one(name: str, batch: int, paths: list[str], rounds: int) -> None:
    cpu = torch.device("cpu")
    ours, ref, _ = bench.build_pair(name)
    size = ours.data_config["input_size"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *size, generator=gen)
    calib = torch.randn(max(8, batch), *size, generator=gen).split(batch)  # batches of the exported shape
    check = torch.randn(CHECK_IMAGES, *size, generator=gen)
    models, setup = {}, {}
    for path in paths:
        t0 = time.perf_counter()
        try:
            models[path] = build(path, ours, ref, x, calib)
            with torch.inference_mode():
                models[path](x)  # compiles, where it compiles
        except Exception as e:  # noqa: BLE001 -- a library path that fails here is reported, not fatal
            print(f"# {name} batch {batch}: {path} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                  flush=True)
            models.pop(path, None)
            continue
        setup[path] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.inference_mode():
            models[path](x)
        print(f"# {name} batch {batch}: {path} ready in {setup[path]:.0f} s, a call {time.perf_counter() - t0:.2f} s",
              file=sys.stderr, flush=True)
    fns = {k: _call(m, x) for k, m in models.items()}
    iters = max(1, 32 // batch)
    rates = bench.interleaved(fns, batch=batch, rounds=rounds, iters=iters, warmup=1, device=cpu)
    with torch.inference_mode():
        base = torch.cat([models["eager"](c) for c in check.split(batch)])
    print(f"\n{name}, batch {batch} ({iters} forward(s) per round)\n")
    print("| path | img/s | vs eager fp32 (range) | vs timm fp32 (range) | vs library (range) | setup s "
          "| max\\|diff\\| / max\\|logit\\| | top-1 agree |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for path, m in models.items():
        with torch.inference_mode():
            got = torch.cat([m(c) for c in check.split(batch)]).float()
        diff = (got - base).abs().max().item() / base.abs().max().item()
        agree = (got.argmax(1) == base.argmax(1)).float().mean().item()
        print(f"| {path} | {statistics.median(rates[path]):.1f} | {_ratio(rates, path, 'eager')} | "
              f"{_ratio(rates, path, 'timm')} | {_library(rates, path)} | {setup[path]:.0f} | {diff:.1e} | "
              f"{100 * agree:.0f}% |", flush=True)


def build(path: str, ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor,
          calib: tuple[torch.Tensor, ...]) -> torch.nn.Module:
    """The model that runs ``path`` (a copy: ``ours`` stays the fp32 eager model)."""
    bits = 8 if int8_units() and not AS_AVX2 else 7  # as the precision policy: 7-bit weights without VNNI
    if path == "eager":
        return ours
    if path == "timm":
        return ref
    if path == "packed":
        return pack_linears(copy.deepcopy(ours))
    if path == "compile":
        return torch.compile(copy.deepcopy(ours))
    if path.startswith("bf16"):
        if not packing_available(torch.bfloat16):
            raise RuntimeError("oneDNN has no bf16 path on this CPU")
        model = copy.deepcopy(ours).to(torch.bfloat16)
        model = pack_linears(model) if path == "bf16_packed" else model
        return _BF16Input(torch.compile(model) if path == "bf16_compile" else model)
    if path in ("int8", "int8_cal"):
        model = pack_linears(copy.deepcopy(ours), int8_weight_bits=bits)
        if path == "int8_cal":
            calibrate_int8(model, calib)
        return model
    if path in ("pt2e", "pt2e_dyn"):
        return torch.compile(_pt2e(copy.deepcopy(ours), x, calib, dynamic=path == "pt2e_dyn"))
    if path == "ao_dyn":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        model = copy.deepcopy(ours)
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return torch.compile(model)
    raise ValueError(f"unknown path {path!r}; one of {', '.join(PATHS)}")


def _pt2e(model: torch.nn.Module, x: torch.Tensor, calib: tuple[torch.Tensor, ...], dynamic: bool) -> torch.nn.Module:
    """torchao's PT2E flow for x86 (torch's own ``torch.ao.quantization.quantize_pt2e`` moved to torchao)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    config = xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic, reduce_range=AS_AVX2 or not int8_units())
    with torch.no_grad():
        exported = torch.export.export(model, (x,)).module()
        prepared = prepare_pt2e(exported, xiq.X86InductorQuantizer().set_global(config))
        for images in calib:  # observers: the static ranges (dynamic: only the weights' observers matter)
            prepared(images)
        return convert_pt2e(prepared)


class _BF16Input(torch.nn.Module):
    """A bf16-weights model taking the fp32 input (cast outside the compiled graph, as ``Precision.cast_input``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.bfloat16)).float()


def _call(model: torch.nn.Module, x: torch.Tensor) -> Callable:
    def run():
        with torch.inference_mode():
            return model(x)

    return run


def _ratio(rates: dict[str, list[float]], a: str, b: str) -> str:
    if b not in rates:
        return "-"
    ratios = [p / q for p, q in zip(rates[a], rates[b])]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _library(rates: dict[str, list[float]], path: str) -> str:
    library = LIBRARY.get(path)
    return f"{_ratio(rates, path, library)} vs {library}" if library in rates else "-"


def _torchao_version() -> str:
    try:
        import torchao
    except ImportError:
        return "torchao not installed"
    return f"torchao {torchao.__version__}"


if __name__ == "__main__":
    main()
