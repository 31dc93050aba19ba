"""Loader workers die with the run that forked them (vitzoo.data.workers), checked with real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

# A run whose two workers block inside a sample for ten minutes: torch's own watchdog, which looks for a dead
# parent only between samples, cannot end them; only the kernel can.
STUCK_RUN = """
import os, sys, time
import torch
from vitzoo.data.workers import worker_init

class Stuck(torch.utils.data.Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
        time.sleep(600)
        return i

for batch in torch.utils.data.DataLoader(Stuck(), num_workers=2, worker_init_fn=worker_init()):
    pass
"""


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, waiting for init to reap it) counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_workers_die_when_the_run_is_killed(tmp_path):
    run = subprocess.Popen([sys.executable, "-c", STUCK_RUN, str(tmp_path)], env=ENV, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.iterdir())) < 2:
        assert run.poll() is None, run.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    workers = [int(p.name) for p in tmp_path.iterdir()]
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:  # do not leave them behind for ten minutes when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed run"


def test_a_worker_forked_by_a_run_already_dead_exits_at_once():
    # the parent pid bound when the loader was built is not this process's parent any more
    code = "from vitzoo.data.workers import init_worker; init_worker(os.getppid() + 1, 0); print('kept running')"
    res = subprocess.run([sys.executable, "-c", "import os; " + code], env=ENV, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "kept running" not in res.stdout


def test_a_worker_of_a_live_run_is_seeded_and_keeps_running():
    code = ("import os, random, torch; from vitzoo.data.workers import init_worker; torch.manual_seed(7); "
            "init_worker(os.getppid(), 0); a = random.random(); random.seed(7); print(a == random.random())")
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.stdout.strip() == "True", res.stderr[-2000:]
