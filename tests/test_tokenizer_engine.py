"""`vitzoo train-tokenizer` is an engine task: the run folder rule, exact resume after a SIGTERM, checkpoint
rotation, metrics / TensorBoard files and curves come from the training engine, as for `vitzoo pretrain`.

In-process runs of a tiny tokenizer (32 images of 32 px, width 8, 4 updates per epoch): seconds each.
"""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from vitzoo.checkpoint import RunState, load_checkpoint, save_checkpoint
from vitzoo.checkpoint.store import ckpt_name, list_checkpoints
from vitzoo.cli import main as vitzoo_main
from vitzoo.cli.train_tokenizer import main as train_tokenizer_main
from vitzoo.config import load_config
from vitzoo.data import make_shapes_dataset
from vitzoo.engine.preempt import EXIT_PREEMPTED, Preempted
from vitzoo.errors import UserError
from vitzoo.tokenizers.task import TokenizerObjective
from vitzoo.tokenizers.train import TokenizerTrainer
from vitzoo.tokenizers.vqvae import load_trained_tokenizer

TINY = ["--input_size", "32", "--tokenizer_width", "8", "--codebook_size", "32", "--batch_size", "8",
        "--train_num_samples", "32", "--num_workers", "0", "--device", "cpu", "--lr", "3e-3", "--warmup_epochs", "0",
        "--min_crop", "0.5", "--ckpt_save_every_seconds", "0", "--print_loss_every", "1"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    torch.set_num_threads(1)  # tiny convs on a shared 2-core machine: one thread is faster
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", 64, 5, size=32, progress=False)


def args(shapes, out, *extra):
    return ["--data_path", str(shapes), "--output_dir", str(out), *TINY, *extra]


def rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def newest(out):
    return load_checkpoint(list_checkpoints(out / "checkpoints")[-1])


def test_a_folder_holding_a_run_is_refused_and_overwrite_starts_again(shapes, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tokenizer_main(args(shapes, out, "--epochs", "2")) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert vitzoo_main(["train-tokenizer", *args(shapes, out, "--epochs", "3")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"vitzoo train-tokenizer: error: {out} already holds a run (2 checkpoint(s), metrics.jsonl, "
                   "metrics.csv): continue it with --resume auto, or start again with --overwrite (deletes its "
                   "checkpoints, logs and metrics)")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    cfg = load_config(None, args(shapes, out, "--epochs", "3"))
    with pytest.raises(UserError, match="already holds a run"):  # the Python API refuses too
        TokenizerTrainer(cfg)
    # --overwrite: the earlier run's files go, this task's pictures and tokenizer file among them
    assert train_tokenizer_main(args(shapes, out, "--epochs", "1", "--overwrite")) == 0
    assert [r["epoch"] for r in rows(out)] == [1]
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [ckpt_name(1, 4)]
    assert [p.name for p in (out / "reconstructions").iterdir()] == ["epoch_001.png"]
    assert len(list((out / "tensorboard").iterdir())) == 1


@pytest.mark.parametrize("kind", ["dvae", "vqvae"])
def test_sigterm_mid_epoch_then_resume_auto_is_exact(shapes, tmp_path, monkeypatch, kind):
    """SIGTERM at update 6 of 8 (epoch 2): a checkpoint at that update, exit 75 with the command that
    continues; the continued run ends bit-identical to an uninterrupted one (weights, codebook, optimizer)."""
    run = [*args(shapes, tmp_path / "ref", "--epochs", "2", "--tokenizer_type", kind)]
    assert train_tokenizer_main(run) == 0
    out = tmp_path / "run"
    run = [*args(shapes, out, "--epochs", "2", "--tokenizer_type", kind)]
    forward, calls = TokenizerObjective.forward, []

    def forward_then_sigterm(self, model, images, y):
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # the engine's handler: stop after this update
        return forward(self, model, images, y)

    monkeypatch.setattr(TokenizerObjective, "forward", forward_then_sigterm)
    with pytest.raises(Preempted) as stopped:
        train_tokenizer_main(run)
    monkeypatch.setattr(TokenizerObjective, "forward", forward)
    assert stopped.value.exit_code == EXIT_PREEMPTED
    assert "resume with: vitzoo train-tokenizer" in str(stopped.value) and str(stopped.value).endswith("--resume auto")
    assert list_checkpoints(out / "checkpoints")[-1].name == ckpt_name(1, 6)
    assert newest(out)["meta"]["step_in_epoch"] == 2
    assert train_tokenizer_main([*run, "--resume", "auto"]) == 0
    ref, got = newest(tmp_path / "ref"), newest(out)
    assert got["meta"]["global_step"] == 8 and got["model"].keys() == ref["model"].keys()
    for name, value in ref["model"].items():
        assert torch.equal(value, got["model"][name]), name
    for a, b in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    a, b = (load_trained_tokenizer(d / "tokenizer.safetensors") for d in (tmp_path / "ref", out))
    images = torch.rand(4, 3, 32, 32)
    assert torch.equal(a.tokenize(images), b.tokenize(images))
    timing = ("time", "img_per_sec", "data_wait")
    same = [{k: v for k, v in r.items() if k not in timing} for r in (rows(out)[0], rows(tmp_path / "ref")[0])]
    assert same[0] == same[1]  # the epoch before the stop: the same row (its clock readings aside)


def test_checkpoints_rotate_and_the_run_reports_like_pretrain(shapes, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tokenizer_main(args(shapes, out, "--epochs", "2", "--ckpt_keep_num", "2",
                                     "--ckpt_save_every_step", "3")) == 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [ckpt_name(1, 6), ckpt_name(2, 8)]
    ckpt = newest(out)
    meta = ckpt["meta"]
    assert meta["task"] == "tokenizer" and meta["kind"] == "train" and meta["epoch"] == 2
    assert meta["tokenizer"]["spec"]["codebook_size"] == 32 and meta["config"]["tokenizer_type"] == "vqvae"
    assert ckpt["model"].keys() == load_trained_tokenizer(out / "tokenizer.safetensors").state_dict().keys()
    assert not (out / "best").exists()  # best_ckpt_num 0 for a tokenizer
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "lr", "recon_mse", "codebook_usage", "perplexity", "picture_mse"} <= set(header)
    (events,) = (out / "tensorboard").iterdir()
    assert b"tokenizer/recon_mse" in events.read_bytes() and b"train/loss" in events.read_bytes()
    # resume continues the curves; `vitzoo plot` draws the tokenizer's keys
    assert train_tokenizer_main(args(shapes, out, "--epochs", "3", "--ckpt_keep_num", "2", "--resume", "auto")) == 0
    assert [r["epoch"] for r in rows(out)] == [1, 2, 3] and all(r["recon_mse"] > 0 for r in rows(out))
    log = (out / "train.log").read_text()
    assert "resumed from" in log and log.count("recon_mse") == 3
    assert "tokenizer: " in capsys.readouterr().out
    assert vitzoo_main(["plot", str(out), "--keys", "recon_mse", "perplexity", "--output",
                        str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_resuming_another_tokenizer_or_another_task_is_one_line(shapes, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tokenizer_main(args(shapes, out, "--epochs", "1")) == 0
    assert vitzoo_main(["train-tokenizer", *args(shapes, out, "--epochs", "2", "--resume", "auto",
                                                 "--codebook_size", "64")]) == 2
    err = capsys.readouterr().err.strip()
    assert "was trained with" in err and "codebook_size" in err and len(err.splitlines()) == 1
    other = tmp_path / "classify.pth"  # a `vitzoo train` checkpoint: resumable, but not a tokenizer
    save_checkpoint(other, RunState(model={"w": torch.zeros(1)}, meta={"task": "classify"}, optimizer={},
                                    scheduler={}, epoch=1, global_step=1))
    assert vitzoo_main(["train-tokenizer", *args(shapes, out, "--epochs", "2", "--resume", str(other))]) == 2
    assert "not a train-tokenizer checkpoint (task classify)" in capsys.readouterr().err
