"""vitzoo.runtime.host_allocator: with freed memory kept, re-allocating an activation-sized block touches no new
pages; glibc's defaults (the reference, in a second process) fault on every one. Counted, not timed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vitzoo.runtime import host_allocator

PROBE = """
import json, resource, sys
import torch
from vitzoo.runtime.host_allocator import keep_freed_memory
how = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):  # warm-up: the heap grows until a freed block fits the aligned request (~8 blocks)
    x = torch.ones(12 * 2**20)  # 48 MiB: above glibc's largest mmap threshold (32 MiB)
    del x
before = faults()
for _ in range(10):
    x = torch.ones(12 * 2**20)  # written: every page touched
    del x
print(json.dumps({"how": how, "faults_per_block": (faults() - before) / 10}))
"""


def _probe(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(host_allocator.platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_kept_memory_is_reused_without_page_faults():
    default = _probe(VITZOO_MALLOC="default")
    kept = _probe(VITZOO_MALLOC="")
    assert default["how"].startswith("glibc defaults") and "freed memory kept" in kept["how"]
    pages = 48 * 2**20 / 4096
    assert default["faults_per_block"] > 0.5 * pages  # the reference: a fresh mmap, every page faulted
    assert kept["faults_per_block"] < 0.01 * pages


def test_the_cli_configures_it_once(monkeypatch):
    from vitzoo.cli import main as cli

    host_allocator.keep_freed_memory.cache_clear()
    calls = []
    monkeypatch.setattr(host_allocator.ctypes, "CDLL", lambda name: calls.append(name) or _FakeLibc())
    assert cli(["models"]) == 0 and cli(["models"]) == 0
    assert len(calls) == 1  # one configuration per process, whichever commands run
    host_allocator.keep_freed_memory.cache_clear()


class _FakeLibc:
    def mallopt(self, option, value):
        return 1
