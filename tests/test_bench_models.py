"""`make bench` (benchmarks/bench_models.py): a quick default with progress, the full set behind a flag
(issue 13, item 7: it ran over 5 minutes with no count and no expected duration)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_models", ROOT / "benchmarks" / "bench_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_row(name: str, args) -> dict:
    return {"name": name, "batch": args.batch, "dtype": args.dtype, "device": "cpu", "reference": "timm",
            "ours_img_s": 10.0, "ref_img_s": 10.0, "ratio": 1.0, "max_abs_diff_fp32": 0.0, "ours_peak_mib": None,
            "ref_peak_mib": None}


@pytest.mark.parametrize(("flags", "preset"), [([], "quick"), (["--full"], "full")])
def test_quick_by_default_full_behind_a_flag_with_progress(bench, monkeypatch, capsys, flags, preset):
    seen = []

    def fake_bench_one(name, args, device, dtype):
        seen.append((name, args.batch, args.iters, args.rounds))
        return fake_row(name, args)

    monkeypatch.setattr(bench, "bench_one", fake_bench_one)
    assert bench.main(flags) == 0
    want = bench.PRESETS[preset]
    assert seen == [(n, want["batch"], want["iters"], want["rounds"]) for n in want["names"]]
    assert len(seen) == (2 if preset == "quick" else 7)
    out = capsys.readouterr().out
    n = len(seen)
    for i, name in enumerate(want["names"], 1):
        assert f"# [{i}/{n}] {name} ..." in out
    assert re.search(rf"# \[1/{n}\] {want['names'][0]}: .* \d+:\d\d so far, about \d+:\d\d left", out)
    assert re.search(rf"# \[{n}/{n}\] .* \d+:\d\d so far, done", out)


def test_explicit_flags_win_over_the_preset(bench, monkeypatch):
    seen = []
    monkeypatch.setattr(bench, "bench_one", lambda name, args, device, dtype: seen.append(args) or fake_row(name, args))
    assert bench.main(["--names", "deit_tiny_patch16_224", "--batch", "2", "--rounds", "1"]) == 0
    assert (seen[0].names, seen[0].batch, seen[0].rounds, seen[0].iters) == (["deit_tiny_patch16_224"], 2, 1, 1)


def test_make_bench_runs_the_quick_set_and_full_with_a_flag():
    def command(*args: str) -> str:
        # under `make test` this make is a sub-make: no "Leaving directory" lines, no inherited flags
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        out = subprocess.run(["make", "--no-print-directory", "-n", "bench", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    assert command().split()[-1] == "benchmarks/bench_models.py"
    assert command("FULL=1").endswith("benchmarks/bench_models.py --full")
