"""Host memory: keep freed memory in the process instead of giving it back to the OS after every op.

Why: PyTorch's CPU tensors come from glibc's malloc. glibc serves blocks above a threshold (at most 32 MiB)
with a fresh ``mmap`` and unmaps them on free, and trims the heap top above another; a ViT's activations
(deit_small, batch 32, bf16: 19 MiB per MLP hidden state) are allocated and freed every layer, so every
forward touches new pages and pays a page fault per 4 KiB. Measured on a 2-core Intel Xeon with AMX
(deit_small, bf16 weights, 10 forwards, ``resource.getrusage``): batch 32 took 80,589 minor faults per
forward and ran 77 img/s; with glibc told to keep its memory, 118 faults and 104 img/s; batch 64: 69 ->
102 img/s; a deit_small bf16-autocast training step at batch 64: 336,602 faults, 15.5 -> 22.3 img/s. This
is what Intel's and PyTorch's CPU tuning guides get by preloading jemalloc / tcmalloc; here it is two
``mallopt`` calls, no library to install.

``M_MMAP_MAX = 0``: no block is served by mmap (threads' arenas still fall back to it when they must);
``M_TRIM_THRESHOLD``: the heap top is returned to the OS only above 2 GiB free. The process's resident
memory then stays at its high-water mark, plus what fragmentation costs until freed blocks fit the
requests (torch's 64-byte-aligned allocations need a few blocks of each size first): the training run above
peaked at 4,345 MiB resident instead of 4,208 (+3%), stable over batch sizes 64, 32, 48, 64 with evals
in between.

Only on glibc (Linux); elsewhere, or with ``VITZOO_MALLOC=default``, nothing changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_MAX = -4
KEEP_BELOW = 2**31 - 1  # bytes of free heap top kept (mallopt takes a C int)
ENV = "VITZOO_MALLOC"


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> str:
    """Configure glibc's malloc once per process; returns what was done, for ``vitzoo bench`` to print."""
    if os.environ.get(ENV, "").lower() == "default":
        return f"glibc defaults ({ENV}=default)"
    libc_name, _ = platform.libc_ver()
    if libc_name != "glibc":
        return "the system allocator (not glibc: left as it is)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BELOW) == 1
    except (OSError, AttributeError):
        done = False
    if not done:
        return "glibc defaults (mallopt refused)"
    return f"glibc, freed memory kept in the process (no mmap per block; {ENV}=default to turn off)"
