"""Fixtures shared by the test modules."""
from __future__ import annotations

import pytest
import torch


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
