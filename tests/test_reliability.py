"""What is left after a pre-emption, a crash, a full disk or a dead peer: real processes, real signals.

Every run here uses the whole augmentation recipe (RandAugment, random erasing, mixup + cutmix, drop
path) with loader workers, so "identical" means the random streams were carried across the stop too.

Only a run that receives a signal, is killed or loses a peer is a separate process (:func:`start`); the
runs it is compared with, and the resumes that finish it, run in this process (:func:`run`, the command's
``main``): a fresh interpreter costs the import of torch and timm (~5 s of CPU; 10-18 s on the 2-core
machine shared with other jobs) and checks nothing here. Both sides compute with one intra-op thread, so
the same sums are added in the same order.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vitzoo.checkpoint import load_checkpoint
from vitzoo.checkpoint.store import list_checkpoints
from vitzoo.cli import main as cli
from vitzoo.data import make_shapes_dataset
from vitzoo.engine.preempt import EXIT_PREEMPTED

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
TINY = "{patch_size: 8, depth: 2, embed_dim: 48, num_heads: 3}"
RECIPE = ["--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--mixup", "0.8", "--cutmix", "1.0",
          "--drop_path", "0.1", "--smoothing", "0.1"]
# runs of several processes, each importing torch: on a 2-core machine shared with other jobs, minutes
pytestmark = pytest.mark.timeout(400)  # the slow torchrun tests: their own


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 96, 32, size=32, seed=0, num_classes=4,
                               progress=False)


def train_args(data: Path, out: Path, *extra: str, workers: int = 2, epochs: int = 3) -> list[str]:
    return ["train", "--model", "deit_tiny_patch16_224", "--model_overrides", TINY, "--input_size", "32",
            "--num_classes", "4", "--data_path", str(data), "--output_dir", str(out), "--batch_size", "8",
            "--num_workers", str(workers), "--amp_level", "O0", "--device", "cpu", "--epochs", str(epochs),
            "--warmup_epochs", "1", "--lr", "2e-3", "--unscale_lr", "true", "--ckpt_save_every_step", "2",
            "--ckpt_save_every_seconds", "0", "--print_loss_every", "1", "--seed", "0", *RECIPE, *extra]


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vitzoo", *args], env=env or ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(args: list[str]) -> int:
    """The command in this process, with the one intra-op thread its subprocess twins get from ENV."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cli(args)
    finally:
        torch.set_num_threads(threads)


def wait_for_updates(proc: subprocess.Popen, updates: int) -> None:
    """Read the run's progress lines until it has reported ``updates`` optimiser updates."""
    seen = 0
    for line in proc.stdout:
        seen += "(global " in line
        if seen == updates:
            return
    raise AssertionError(f"the run ended after {seen} updates: {proc.stderr.read()[-2000:]}")


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["model"]


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = max((x - y).abs().max().item() for x, y in zip(a.values(), b.values()))
    assert diff == 0.0, f"max |diff| {diff}"


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run (2 workers) every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("reference")
    assert run(train_args(data, out)) == 0
    return final_weights(out)


def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(data, reference, tmp_path):
    out = tmp_path / "run"
    proc = start(train_args(data, out))
    wait_for_updates(proc, 5)  # mid-epoch 1 (12 updates per epoch), between periodic saves
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    assert time.monotonic() - t0 < 30
    assert "resume with: vitzoo train" in err and "--resume auto" in err and "Traceback" not in err
    stopped_at = list_checkpoints(out / "checkpoints")[-1]
    assert load_checkpoint(stopped_at)["meta"]["step_in_epoch"] > 0  # the step it stopped at, not an epoch end
    assert run(train_args(data, out, "--resume", "auto")) == 0
    assert_identical(final_weights(out), reference)


def test_kill9_twice_then_resume_auto_is_exact(data, reference, tmp_path):
    out = tmp_path / "run"
    rng = random.Random(0)
    # first right after epoch 1's last update (validation and the epoch checkpoint are under way),
    # then at a random instant (mid-step or mid-save)
    for updates, delay in ((12, 0.05), (rng.randint(3, 12), rng.uniform(0.0, 0.5))):
        proc = start(train_args(data, out, "--resume", "auto"))
        wait_for_updates(proc, updates)
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=60)
    assert run(train_args(data, out, "--resume", "auto")) == 0
    assert_identical(final_weights(out), reference)


@pytest.mark.parametrize("workers", [0, 1, 4])  # 4: capped at the usable CPUs (2 here)
def test_weights_do_not_depend_on_the_number_of_workers(data, reference, tmp_path, workers):
    assert run(train_args(data, tmp_path / "run", workers=workers)) == 0
    assert_identical(final_weights(tmp_path / "run"), reference)


def test_full_disk_names_the_file_and_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):  # the 3rd checkpoint write hits a full disk
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing "
                               "file data/7: file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    out = tmp_path / "run"
    code = run(train_args(data, out, workers=0, epochs=1))
    err = capsys.readouterr().err
    assert code == 2 and "cannot write" in err and "ckpt_e" in err and "Traceback" not in err
    kept = list_checkpoints(out / "checkpoints")
    assert len(kept) == 2 and all(load_checkpoint(p)["meta"]["global_step"] for p in kept)
    assert not list((out / "checkpoints").glob(".*.tmp"))  # no half-written file left behind


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train_args(data, out, workers=0, epochs=1)) == 0
    newest, previous = list_checkpoints(out / "checkpoints")[-1], list_checkpoints(out / "checkpoints")[-2]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a copy cut short
    assert run(train_args(data, out, "--resume", "auto", workers=0, epochs=2)) == 0
    log = (out / "train.log").read_text()
    assert f"skipping {newest}" in log and f"resumed from {previous}" in log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_rank_stops_the_others_with_a_clear_message(data, tmp_path):
    """Two gloo processes (what torchrun starts); kill -9 one; the other ends within seconds, saying why."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": str(rank),
               "LOCAL_RANK": str(rank)}
        procs.append(start(train_args(data, tmp_path / "run", workers=0, epochs=50), env=env))
    wait_for_updates(procs[0], 3)
    procs[1].kill()
    t0 = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    procs[1].communicate()
    assert time.monotonic() - t0 < 60
    assert procs[0].returncode not in (0, None)
    assert "another process of this run stopped or hung" in err and "Traceback" not in err, err[-2000:]


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vitzoo",
            *args]


@pytest.mark.slow
@pytest.mark.timeout(900)  # three torchrun launches
def test_torchrun_signal_to_one_rank_stops_all_and_resumes_exactly(data, tmp_path):
    """SIGTERM to rank 1 only: both ranks stop at the same update, rank 0 writes every rank's RNG state,
    and a resume on the same world size ends identical to an uninterrupted 2-process run."""
    args = train_args(data, tmp_path / "ref", workers=1, epochs=2)
    res = subprocess.run(_torchrun(args), env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    reference = final_weights(tmp_path / "ref")

    out = tmp_path / "run"
    launcher = subprocess.Popen(_torchrun(train_args(data, out, workers=1, epochs=2)), env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_updates(launcher, 3)  # 6 updates per epoch per rank here
    ranks = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True, check=False)
    os.kill(int(ranks.stdout.split()[-1]), signal.SIGTERM)  # the younger child: rank 1
    _, err = launcher.communicate(timeout=180)
    assert launcher.returncode != 0 and err.count("resume with:") == 1, err[-3000:]
    stopped = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert len(stopped["rng"]["per_rank"]) == 2
    res = subprocess.run(_torchrun(train_args(data, out, "--resume", "auto", workers=1, epochs=2)), env=ENV,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert_identical(final_weights(out), reference)


# ------------------------------------------------------------------------------------ pre-training
def pretrain_args(data: Path, out: Path, *extra: str, workers: int = 2) -> list[str]:
    """BEiT masked image modeling (pixels target) with its crop / jitter / flip / block-mask draws."""
    return ["pretrain", "--model", "beit_base_patch16_224", "--model_overrides", TINY,
            "--input_size", "32", "--mim_target", "pixels", "--min_mask_patches", "2", "--mask_ratio", "0.3", "--data_path", str(data),
            "--output_dir", str(out), "--batch_size", "8", "--num_workers", str(workers), "--amp_level", "O0",
            "--device", "cpu", "--epochs", "2", "--warmup_epochs", "1", "--lr", "2e-3", "--unscale_lr", "true",
            "--drop_path", "0.1", "--ckpt_save_every_step", "2", "--ckpt_save_every_seconds", "0",
            "--print_loss_every", "1", "--seed", "0", *extra]


def test_pretrain_sigterm_then_kill9_resume_exactly_and_workers_do_not_matter(data, tmp_path):
    """The reference runs with no loader worker; the interrupted run with 2 workers must end bit-identical."""
    assert run(pretrain_args(data, tmp_path / "ref", workers=0)) == 0
    reference = final_weights(tmp_path / "ref")
    out = tmp_path / "run"
    proc = start(pretrain_args(data, out))
    wait_for_updates(proc, 5)  # mid-epoch 1 (12 updates per epoch)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED and "resume with: vitzoo pretrain" in err, err[-2000:]
    proc = start(pretrain_args(data, out, "--resume", "auto"))
    wait_for_updates(proc, 9)  # into epoch 2
    proc.kill()
    proc.communicate(timeout=60)
    assert run(pretrain_args(data, out, "--resume", "auto")) == 0
    assert_identical(final_weights(out), reference)


@pytest.mark.slow
@pytest.mark.timeout(900)  # three torchrun launches
def test_torchrun_pretrain_two_processes_resume_exactly(data, tmp_path):
    """BEiT pre-training under torchrun (2 processes, gloo): SIGTERM to one rank stops both at one update,
    and the resumed run ends identical to an uninterrupted 2-process run."""
    ref = subprocess.run(_torchrun(pretrain_args(data, tmp_path / "ref", workers=1)), env=ENV,
                         capture_output=True, text=True, timeout=600, check=False)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "run"
    launcher = subprocess.Popen(_torchrun(pretrain_args(data, out, workers=1)), env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    wait_for_updates(launcher, 3)
    ranks = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True, check=False)
    os.kill(int(ranks.stdout.split()[-1]), signal.SIGTERM)
    _, err = launcher.communicate(timeout=180)
    assert launcher.returncode != 0 and err.count("resume with: torchrun ... -m vitzoo pretrain") == 1, err[-3000:]
    res = subprocess.run(_torchrun(pretrain_args(data, out, "--resume", "auto", workers=1)), env=ENV,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert_identical(final_weights(out), final_weights(tmp_path / "ref"))
