"""`vitzoo bench` runs, prints the machine and a ratio, and writes JSON (correctness only: no speed claims)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from vitzoo.bench import measure as bench
from vitzoo.bench.measure import naive_sdpa, official_arithmetic
from vitzoo.cli import main as cli
from vitzoo.runtime.cpu import cpu_bf16_units
from vitzoo.runtime.int8 import int8_available


def test_bench_infer_against_timm_prints_ratio(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli(["bench", "--model", "deit_tiny_patch16_224", "--img-size", "64", "--batch-size", "1",
                "--rounds", "2", "--warmup", "0", "--precision", "fp32", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# ") and "torch " in text and "matmul peak" in text
    row = json.loads(out.read_text())["results"][0]
    assert row["reference"] == "timm" and row["ratio"] > 0 and row["max_abs_diff_fp32"] < 1e-4
    assert row["gflops"] > 0 and len(row["ours_rounds"]) == len(row["ref_rounds"]) == 2
    assert "| deit_tiny_patch16_224 | infer |" in text
    ratios = [o / r for o, r in zip(row["ours_rounds"], row["ref_rounds"])]  # the median, and the rounds' range
    assert f"| {row['ratio']:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |" in text


@pytest.mark.skipif(not int8_available(), reason="torch without oneDNN's int8 ops, or not an x86 CPU")
def test_bench_int8_rows_per_call_and_calibrated(tmp_path, capsys):
    """--precision int8 rows, with --calibrated the ranges fixed first (every int8 layer calibrated); the
    int8 product's peak is measured for their % peak; --calibrated alone is one line."""
    out = tmp_path / "b.json"
    base = ["bench", "--model", "deit_tiny_patch16_224", "--img-size", "64", "--batch-size", "2", "--rounds", "1",
            "--warmup", "0", "--threads", "1", "--against", "none", "--precision", "int8"]
    calls, int8_peak_sizes = [], []
    real, real_peak = bench.calibrate_int8, bench.matmul_peak

    def peak(dtype, device, n=None, **kw):
        if dtype == torch.int8:
            int8_peak_sizes.append(n)
        return real_peak(dtype, device, n=n if dtype != torch.int8 else 256, **kw)  # small: a test

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "calibrate_int8", lambda model, batches: calls.append(real(model, batches)) or calls[-1])
        mp.setattr(bench, "matmul_peak", peak)
        assert cli(base + ["--json", str(out)]) == 0 and not calls
        assert cli(base + ["--calibrated", "--json", str(out)]) == 0 and calls == [48]  # 4 layers x 12 blocks
    text = capsys.readouterr().out
    row = json.loads(out.read_text())["results"][0]
    assert row["ours_precision"] == "int8 calibrated" and "| int8 calibrated |" in text
    assert row["ours_precision_why"].startswith("int8 calibrated (asked for")
    for line in ("matmul peak here:", "matmul peak again after the rows:"):  # before and after the rows
        assert "int8" in text.split(line)[1].splitlines()[0]
    assert int8_peak_sizes == [None] * 4  # full size (not the 512^3 of a dtype without units), two runs
    assert cli(["bench", "--model", "deit_tiny_patch16_224", "--calibrated"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precision int8" in err[0]


def test_bench_train_mode_and_official_reference(tmp_path, capsys):
    # bf16 autocast where the CPU has bf16 units; elsewhere (AVX2) its scalar fallback took 4.5 min: fp32
    amp = "bf16" if cpu_bf16_units() else "fp32"
    out = tmp_path / "train.json"
    assert cli(["bench", "--model", "t2t_vit_t_14", "--img-size", "64", "--batch-size", "2", "--mode", "train",
                "--rounds", "1", "--warmup", "0", "--precision", amp, "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| t2t_vit_t_14 | train |" in text and "official fp32" in text
    assert ("bf16 autocast" if amp == "bf16" else "| fp32 |") in text
    row = json.loads(out.read_text())["results"][0]
    assert 0 < row["max_abs_diff_fp32"] < 1e-4  # fused vs naive attention: close, not equal
    # on a CPU too: what the training step allocates above the weights (activations, gradients)
    assert row["ours_peak_mib"] > 0 and row["ref_peak_mib"] > 0
    assert f"| {row['ours_peak_mib']:.0f} |" in text


def test_bench_scaling_lists_and_plot(tmp_path, capsys):
    png = tmp_path / "b.png"
    assert cli(["bench", "--model", "deit_tiny_patch16_224", "--img-size", "32,48", "--batch-size", "1,2",
                "--against", "none", "--rounds", "1", "--warmup", "0", "--precision", "fp32", "--threads", "1",
                "--plot", str(png)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| deit_tiny")]
    assert [r.split(" | ")[2:4] for r in rows] == [["1", "32"], ["2", "32"], ["1", "48"], ["2", "48"]]
    assert png.stat().st_size > 1000


def test_bench_measures_the_bf16_peak_only_where_it_is_used(tmp_path, capsys, monkeypatch):
    """On a CPU without bf16 units a 2048^3 bf16 product takes seconds: an fp32 bench skips it, a bf16 row
    still gets its peak (measured after the rows)."""
    from vitzoo.bench import measure as bench
    from vitzoo.runtime import cpu

    measured = []
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, *a, **k: measured.append(dtype) or 100.0)
    assert bench.peak_dtypes(torch.device("cpu")) == (torch.float32,)
    out = tmp_path / "b.json"
    base = ["bench", "--model", "deit_tiny_patch16_224", "--img-size", "32", "--batch-size", "1", "--against",
            "none", "--rounds", "1", "--warmup", "0", "--threads", "1", "--json", str(out)]
    assert cli(base + ["--precision", "fp32"]) == 0
    assert measured == [torch.float32] * 2 and list(json.loads(out.read_text())["matmul_peak_gflops"]) == ["torch.float32"]
    measured.clear()
    assert cli(base + ["--precision", "bf16"]) == 0
    assert measured == [torch.float32, torch.bfloat16, torch.float32]  # bf16 after the rows, a 512^3 product
    assert json.loads(out.read_text())["results"][0]["peak_fraction"] is not None
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert bench.peak_dtypes(torch.device("cpu")) == (torch.float32, torch.bfloat16)


def test_bench_rejects_unknown_model(capsys):
    assert cli(["bench", "--model", "deit_tiny_patch16_224,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli(["bench", "--model", "deit_tiny_patch16_224", "--batch-size", "8,x"]) == 2


def test_cpu_peak_memory_follows_allocations_in_time_order():
    from vitzoo.bench.measure import peak_memory

    def call():
        a = torch.ones(2 * 2**20)  # 8 MiB
        b = torch.ones(2**20)  # + 4 MiB: 12 MiB held, the peak
        del a
        c = torch.ones(2**20)  # 8 MiB held
        return b.sum() + c.sum()

    assert peak_memory(call, torch.device("cpu")) == pytest.approx(12.0, abs=0.1)
    assert peak_memory(call, torch.device("meta")) is None


def test_cpu_peak_memory_keeps_the_profiler_quiet():
    # a fresh process: kineto reads its log level when the profiler first starts
    code = ("import torch; from vitzoo.bench.measure import peak_memory; "
            "print(peak_memory(lambda: torch.ones(2**20), torch.device('cpu')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         env={k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"})
    assert run.returncode == 0 and float(run.stdout) == pytest.approx(4.0, abs=0.1)
    assert run.stderr == ""


def test_official_arithmetic_matches_fused():
    q, k, v = torch.randn(3, 2, 2, 5, 8).unbind(0)
    fused = F.scaled_dot_product_attention(q, k, v)
    with official_arithmetic():
        assert F.scaled_dot_product_attention is naive_sdpa
        torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v), fused)
    assert F.scaled_dot_product_attention is not naive_sdpa



def test_official_performer_arithmetic_is_the_same_function():
    from vitzoo.bench.measure import official_arithmetic
    from vitzoo.models.t2t_vit import TokenPerformer

    torch.manual_seed(0)
    layer = TokenPerformer(dim=27, in_dim=16).eval()
    x = torch.randn(2, 50, 27)
    ours = layer(x)
    fused = TokenPerformer.attention
    with official_arithmetic():
        assert TokenPerformer.attention is not fused
        official = layer(x)
    assert TokenPerformer.attention is fused  # restored after the reference's calls
    torch.testing.assert_close(official, ours, rtol=1e-5, atol=1e-5)


def test_official_soft_split_is_the_same_function():
    from vitzoo.bench.measure import official_arithmetic, official_soft_split
    from vitzoo.models import create_model, t2t_vit

    torch.manual_seed(0)
    model = create_model("t2t_vit_14", img_size=32, embed_dim=64, depth=1, num_heads=2, token_dim=16).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model(x)
        with official_arithmetic():
            assert t2t_vit.soft_split is official_soft_split
            official = model(x)
    assert t2t_vit.soft_split is not official_soft_split  # restored
    torch.testing.assert_close(official, ours, rtol=1e-5, atol=1e-5)


def test_gflops_count_the_attention_matmuls():
    from vitzoo.bench.measure import count_gflops
    from vitzoo.models import create_model

    model = create_model("deit_tiny_patch16_224", img_size=32).eval()
    tokens, dim, depth = (32 // 16) ** 2 + 1, 192, 12
    attention = depth * 2 * (2 * tokens * tokens * dim)  # q @ k^T and attn @ v, 2 FLOPs per multiply-add
    linear = 2 * sum(m.in_features * m.out_features for m in model.modules()
                     if isinstance(m, torch.nn.Linear)) * tokens  # the head sees one token, not all
    head = model.head
    expected = (linear - 2 * head.in_features * head.out_features * (tokens - 1)) + attention
    conv = 2 * 3 * 16 * 16 * dim * (tokens - 1)  # the patch embedding
    assert abs(count_gflops(model, (3, 32, 32), torch.device("cpu")) * 1e9 - (expected + conv)) < 1e3
