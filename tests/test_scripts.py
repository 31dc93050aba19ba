"""The torchrun wrappers in scripts/ (issue 13, item 3): check once, say what runs where, one-line errors.

``PYTHON`` points the scripts at a stand-in that records its arguments (or at the real interpreter), and a
fake ``nvidia-smi`` on ``PATH`` plays a machine with GPUs; without it the machine has none.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
BASE_PATH = "/usr/bin:/bin"


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[Path, Path]:
    """(interpreter stand-in, its log): each call appends one line with its arguments, prints nothing."""
    log = tmp_path / "calls.log"
    exe = tmp_path / "fake_python"
    exe.write_text(f'#!/bin/bash\necho "$*" >> "{log}"\n')
    exe.chmod(0o755)
    return exe, log


def gpus(tmp_path: Path, count: int) -> str:
    """PATH for a machine with ``count`` GPUs: a fake ``nvidia-smi`` first (with 0, it fails as it does
    without a driver), so a real one elsewhere on PATH does not count."""
    folder = tmp_path / f"gpu_bin{count}"
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    lines = "".join(f"echo 'GPU {i}: Fake GPU (UUID: GPU-{i})'\n" for i in range(count)) or "exit 9\n"
    smi.write_text(f"#!/bin/bash\n{lines}")
    smi.chmod(0o755)
    return f"{folder}:{BASE_PATH}"


def run_script(name: str, *args: str, python: Path | str, path: str) -> subprocess.CompletedProcess:
    env = {"PYTHON": str(python), "PATH": path, "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, env=env,
                          check=False, timeout=120)


def config(tmp_path: Path, text: str = "batch_size: 4\n") -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_train_script_checks_then_launches_on_the_gpus(tmp_path, fake_python):
    exe, log = fake_python
    cfg = config(tmp_path)
    out = run_script("run_distribute_train_gpu.sh", cfg, "--device_ids", "0,1", "--checkpoint", "auto",
                     "--extra", "--batch_size", "8", python=exe, path=gpus(tmp_path, 4))
    assert out.returncode == 0, out.stderr
    check, launch = log.read_text().splitlines()
    assert check.split() == ["-m", "vitzoo", "train", "--check", "--config", cfg, "--resume", "auto",
                             "--batch_size", "8"]
    assert launch.split() == ["-m", "vitzoo.cli.launch", "--standalone", "--nproc_per_node", "2", "-m", "vitzoo",
                              "train", "--config", cfg, "--resume", "auto", "--batch_size", "8"]
    assert "training on 2 GPU(s) of 0,1, one process each" in out.stderr


def test_no_gpu_means_one_cpu_process_and_says_so(tmp_path, fake_python):
    exe, log = fake_python
    out = run_script("run_distribute_train_gpu.sh", config(tmp_path), "--device_ids", "0,1,2,3", python=exe,
                     path=gpus(tmp_path, 0))
    assert out.returncode == 0, out.stderr
    assert "no GPU found" in out.stderr and "1 CPU process instead of 4" in out.stderr
    assert "--nproc_per_node 1 " in log.read_text().splitlines()[-1]


def test_gpu_ids_the_machine_lacks_are_one_line(tmp_path, fake_python):
    exe, log = fake_python
    out = run_script("run_distribute_train_gpu.sh", config(tmp_path), "--device_ids", "0,1,2,3", python=exe,
                     path=gpus(tmp_path, 2))
    assert out.returncode == 1 and out.stderr.strip() == "--device_ids 0,1,2,3: only 2 GPU(s) found (ids 0 to 1)"
    assert "vitzoo.cli.launch" not in log.read_text()


@pytest.mark.parametrize(("script", "what"), [("run_standalone_train_gpu.sh", "training in 1 process"),
                                              ("run_eval_gpu.sh", "evaluating")])
def test_one_device_scripts_say_where_they_run(tmp_path, fake_python, script, what):
    exe, _ = fake_python
    out = run_script(script, config(tmp_path), "--device", "1", python=exe, path=gpus(tmp_path, 0))
    assert out.returncode == 0 and f"no GPU found (nvidia-smi lists none): {what} on the CPU" in out.stderr
    out = run_script(script, config(tmp_path), "--device", "1", python=exe, path=gpus(tmp_path, 2))
    assert out.returncode == 0 and f"{what} on GPU 1" in out.stderr
    out = run_script(script, config(tmp_path), "--device", "2", python=exe, path=gpus(tmp_path, 2))
    assert out.returncode == 1 and "--device 2: only 2 GPU(s) found" in out.stderr


def test_a_config_error_is_reported_once_before_torchrun(tmp_path):
    """The issue's case: a wrong data_path printed the error, then ~30 lines of ChildFailedError (once per
    process with --device_ids 0,1,2,3). Now `vitzoo train --check` reports it, once, and nothing starts."""
    out = run_script("run_distribute_train_gpu.sh", config(tmp_path), "--device_ids", "0,1,2,3", "--extra",
                     "--data_path", str(tmp_path / "imagenet"), python=sys.executable, path=gpus(tmp_path, 0))
    train = tmp_path / "imagenet" / "train"
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"vitzoo train: error: dataset folder not found: {train} (expected {train}/<class>/<images>)"]


@pytest.mark.slow  # ~10 s: torchrun starts a process
def test_launch_reports_a_failed_process_in_one_line(tmp_path):
    """Past the check (here: skipped), a process that fails under torchrun is its own line plus one line
    from the launcher, not torchrun's ChildFailedError traceback and failure table."""
    bad = config(tmp_path, "learning_rate: 0.1\n")
    out = subprocess.run([sys.executable, "-m", "vitzoo.cli.launch", "--standalone", "--nproc_per_node", "1",
                          "-m", "vitzoo", "train", "--config", bad], capture_output=True, text=True, check=False,
                         timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "ChildFailedError" not in out.stderr
    assert f"vitzoo train: error: unknown config key 'learning_rate' ({bad}) (did you mean: lr?)" in out.stderr
    assert out.stderr.strip().splitlines()[-1] == \
        "torchrun: the run stopped: rank 0 ended with exit status 2 (the error is reported above)"
