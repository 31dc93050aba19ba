"""Loader worker processes: seeded like torch seeds them, and never outliving the run that forked them."""

from __future__ import annotations

import ctypes
import functools
import os
import random
import signal
import sys
from collections.abc import Callable

import numpy as np
import torch

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_init() -> Callable[[int], None]:
    """The ``worker_init_fn`` of every vitzoo DataLoader: :func:`init_worker` bound to this process's pid."""
    return functools.partial(init_worker, os.getpid())


def init_worker(parent_pid: int, worker_id: int) -> None:
    """Seed python ``random`` and numpy from torch's per-worker seed (timm's RandAugment uses ``random``);
    tie the worker's life to the process that forked it; ignore Ctrl-C.

    torch's own watchdog (``ManagerWatchdog``) notices a dead parent only between batches, every 5 s, and
    never if the parent died while forking the worker (it then records the orphaned pid as its parent): a
    ``kill -9`` of the run at the wrong instant left workers alive for good, holding the run's memory and
    its stdout. On Linux the kernel now kills the worker with its parent (``PR_SET_PDEATHSIG``, prctl(2));
    a worker born after its parent died exits at once. Workers ignore Ctrl-C: the terminal sends SIGINT to
    the whole process group, and the main process stops the run itself after the current step (it still
    needs the workers' batches until then).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl (or while forking this worker)
            os._exit(0)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
