"""Fixtures shared by the test modules, and the intra-op thread count of `make test`'s parallel workers."""
from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``), each worker gets its share of the CPUs as intra-op
    threads: two workers of two OpenMP threads each on a 2-core machine spin against each other and run tiny
    models several times slower (see :func:`one_thread`). OMP_NUM_THREADS carries the share to the processes
    tests start; a test that starts one with its own environment sets its own count."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    share = max(1, len(os.sched_getaffinity(0)) // int(workers)) if hasattr(os, "sched_getaffinity") else 1
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch.set_num_threads(share)


# The modules that take longest (each starts many processes; worker wall time of `make test` with --durations,
# 2026-12-07, on the shared 2-core EPYC: data_workers 136 s, reliability 132 s, imports 73 s, bench 60 s,
# models 45 s of ~370 s per worker). They run first, so the two workers' last modules are short ones and
# neither waits long for the other at the end (the Makefile keeps this order: --no-loadscope-reorder).
RUN_FIRST = ("test_data_workers.py", "test_reliability.py", "test_imports.py", "test_bench.py",
             "test_models.py")


def pytest_collection_modifyitems(config, items):
    """The long modules first (:data:`RUN_FIRST`); a test's order within its module is kept. A slow test
    (minutes, several processes) gets 15 minutes unless it names its own limit; the default (pyproject's
    ``timeout``) is for the quick ones."""
    rank = {name: i for i, name in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(RUN_FIRST)))
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run ~5x faster with one intra-op thread (no spin contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test (and the commands it starts) keeps vitzoo's cache of measurements in its own folder: none
    is read from, or left in, the home directory, and no test sees another's measurement."""
    monkeypatch.setenv("VITZOO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def write_image_folder(root, classes, counts, size, seed=0):
    """An ImageNet-style folder of random-pixel PNGs: ``root/<split>/<class>/<i>.png``, image ``i`` of a
    split in ``classes[i % len(classes)]``; ``counts`` maps a split to its image count. Returns ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for i in range(n):
            folder = root / split / classes[i % len(classes)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root
