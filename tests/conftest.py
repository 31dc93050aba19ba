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


def pytest_collection_modifyitems(config, items):
    """A slow test (minutes, several processes) gets 15 minutes unless it names its own limit; the default
    (pyproject's ``timeout``) is for the quick ones."""
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
