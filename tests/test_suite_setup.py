"""How `make test` runs the suite (issue 28, item 6): parallel workers that share the cores, the long
modules first, a time limit per test, and the slowest tests printed. Read from the files that set it up,
so a rename or an edit that drops one of them fails here rather than making the suite slow again."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import tomllib
import torch
from conftest import RUN_FIRST

ROOT = Path(__file__).resolve().parents[1]


def make_target(name: str) -> str:
    """The recipe lines of one Makefile target."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return re.search(rf"^{name}:.*\n((?:\t.*\n)+)", text, flags=re.MULTILINE).group(1)


def test_make_test_runs_parallel_workers_and_prints_the_slowest():
    recipe = make_target("test")
    assert "-m pytest" in recipe and "-n auto" in recipe and "--maxprocesses" in recipe
    # modules whole on one worker (module fixtures built once), handed out in collection order
    assert "--dist loadscope" in recipe and "--no-loadscope-reorder" in recipe
    assert "--durations=15" in recipe
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-m slow" in make_target("test-slow")


def test_pytest_settings_keep_slow_tests_out_and_limit_each_test():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ini = project["tool"]["pytest"]["ini_options"]
    assert "-m 'not slow and not gpu'" in ini["addopts"]
    assert 0 < int(ini["timeout"]) <= 300
    dev = " ".join(project["project"]["optional-dependencies"]["dev"])
    assert "pytest-xdist" in dev and "pytest-timeout" in dev


def test_the_modules_run_first_exist():
    missing = [name for name in RUN_FIRST if not (ROOT / "tests" / name).is_file()]
    assert not missing, f"tests/conftest.py RUN_FIRST names files that are gone: {missing}"


def test_a_worker_uses_its_share_of_the_cores():
    """Under xdist each worker's intra-op threads are the usable CPUs divided by the workers (at least 1),
    and the processes tests start get the same count."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        pytest.skip("not under pytest-xdist (make test runs it)")
    share = max(1, len(os.sched_getaffinity(0)) // int(workers))
    assert torch.get_num_threads() == share and os.environ["OMP_NUM_THREADS"] == str(share)
