"""Loader worker processes: seeded like torch seeds them, and never outliving the run that forked them."""

from __future__ import annotations

import ctypes
import functools
import os
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_init() -> Callable[[int], None]:
    """The ``worker_init_fn`` of every vitzoo DataLoader: :func:`init_worker` bound to this process's pid."""
    return functools.partial(init_worker, os.getpid())


def init_worker(run_pid: int, worker_id: int) -> None:
    """Seed python ``random`` and numpy from torch's per-worker seed (timm's RandAugment uses ``random``);
    end the worker when the run ends; ignore Ctrl-C.

    torch's own watchdog (``ManagerWatchdog``) looks for a dead parent only between batches, every 5 s; it
    never notices if the parent died while forking the worker (it then records the orphaned pid as its
    parent), nor under a forkserver (Python 3.14's default start method on Linux), whose workers have the
    server as their parent and keep it alive. A ``kill -9`` of the run could leave workers behind for good,
    holding the run's memory and its stdout. On Linux the kernel now kills a worker when its parent dies
    (``PR_SET_PDEATHSIG``, prctl(2)), and a thread waits on the run's process itself (a pidfd, readable
    once the run has exited, zombie or not) and ends the worker then, whoever its parent is. Workers
    ignore Ctrl-C: the terminal sends SIGINT to the whole process group, and the main process stops the
    run itself after the current step (it still needs the workers' batches until then).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _exit_with(run_pid)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _exit_with(run_pid: int) -> None:
    """End this process as soon as process ``run_pid`` has exited (at once if it already has)."""
    try:
        pidfd = os.pidfd_open(run_pid)  # Linux >= 5.3
    except ProcessLookupError:
        os._exit(0)
    except OSError:  # (no pidfd_open here: look every second)
        pidfd = None

    def wait() -> None:
        if pidfd is not None:  # (poll, not select: select refuses descriptors past 1023)
            watch = select.poll()
            watch.register(pidfd, select.POLLIN)
            watch.poll()
        else:
            while is_running(run_pid):
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=wait, name="vitzoo-run-watch", daemon=True).start()


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed run stays one until its parent reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
