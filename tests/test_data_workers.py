"""Loader workers end with their run (vitzoo.data.workers), under each start method, with real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitzoo.data.workers import is_running

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and pidfd are Linux's"),
              pytest.mark.timeout(400)]  # above the subprocesses' own limits (up to 300 s)

# A run whose two workers block inside a sample for ten minutes: torch's own watchdog, which looks for a dead
# parent only between samples (and under a forkserver never sees the run die), cannot end them.
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

if __name__ == "__main__":
    loader = torch.utils.data.DataLoader(Stuck(), num_workers=2, worker_init_fn=worker_init(),
                                         multiprocessing_context=sys.argv[2])
    for batch in loader:
        pass
"""
# fork: Linux's default up to Python 3.13 (the worker's parent is the run); forkserver: 3.14's default (the
# parent is a server that the workers themselves keep alive); spawn: macOS's (the parent is the run, fresh)


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_workers_die_when_the_run_is_killed(tmp_path, start_method):
    script = tmp_path / "run.py"  # a file, not -c: spawn and forkserver re-import the main module
    script.write_text(STUCK_RUN)
    marks = tmp_path / "workers"
    marks.mkdir()
    run = subprocess.Popen([sys.executable, str(script), str(marks), start_method], env=ENV,
                           stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(marks.iterdir())) < 2:
        assert run.poll() is None, run.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    workers = [int(p.name) for p in marks.iterdir()]
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 30
    while any(is_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if is_running(pid)]
    for pid in left:  # do not leave them behind for ten minutes when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed run"


def test_a_worker_forked_by_a_run_already_dead_exits_at_once():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=120, check=True)  # a run that has ended (and been reaped)
    code = f"from vitzoo.data.workers import init_worker; init_worker({int(dead.stdout)}, 0); print('kept running')"
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "kept running" not in res.stdout


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])  # (fork: every other loader test)
def test_workers_of_a_live_run_deliver_every_batch(start_method):
    code = ("import torch\nfrom vitzoo.data.workers import worker_init\nif __name__ == '__main__':\n"
            "    loader = torch.utils.data.DataLoader(list(range(8)), num_workers=2, worker_init_fn=worker_init(), "
            f"multiprocessing_context={start_method!r}, timeout=120)\n"
            "    print(sorted(int(b) for b in loader))")
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.stdout.strip() == str(list(range(8))), res.stderr[-2000:]


def test_a_worker_of_a_live_run_is_seeded_and_keeps_running():
    code = ("import os, random, torch; from vitzoo.data.workers import init_worker; torch.manual_seed(7); "
            "init_worker(os.getppid(), 0); a = random.random(); random.seed(7); print(a == random.random())")
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.stdout.strip() == "True", res.stderr[-2000:]
