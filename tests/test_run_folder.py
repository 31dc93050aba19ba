"""One run per output folder (issue 13, item 2).

Re-running ``vitzoo train`` into a folder that held a run overwrote same-named checkpoints and metrics,
added a second TensorBoard file and compared "best" against the earlier run's files. Now such a folder is
refused unless the command continues the run (``--resume auto``; a finished run has nothing to do) or
replaces it (``--overwrite``, which deletes only what ``vitzoo train`` wrote).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from vitzoo.checkpoint import RunFolders
from vitzoo.checkpoint.store import best_name, ckpt_name
from vitzoo.cli import demo
from vitzoo.cli import main as vitzoo
from vitzoo.config import load_config
from vitzoo.data import make_shapes_dataset
from vitzoo.engine.trainer import Trainer
from vitzoo.errors import UserError

TINY = ["--model", "deit_tiny_patch16_224", "--model_overrides", "{patch_size: 8, depth: 1, embed_dim: 24, num_heads: 2}",
        "--input_size", "32", "--num_classes", "5", "--batch_size", "8", "--num_workers", "0", "--amp_level", "O0",
        "--device", "cpu", "--epochs", "1", "--warmup_epochs", "0", "--aa", "none", "--reprob", "0", "--mixup", "0",
        "--cutmix", "0", "--ckpt_save_every_seconds", "0", "--seed", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 16, 5, size=32, progress=False)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", *TINY, "--data_path", str(data), "--output_dir", str(out), *extra]


def earlier_run(out: Path) -> RunFolders:
    """A folder as a finished 2-epoch run leaves it, plus files of the user's that must survive."""
    folders = RunFolders.of(load_config(None, ["--output_dir", str(out)]))
    for path in (folders.checkpoints / ckpt_name(2, 8), folders.best / best_name(0.5, 2, 8),
                 folders.tensorboard / "events.out.tfevents.1.host", out / "metrics.jsonl", out / "metrics.csv",
                 out / "train.log", out / "bad_files.txt", out / "notes.txt", folders.checkpoints / "mine.pth"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return folders


def test_a_folder_holding_a_run_is_refused_in_one_line(tmp_path, capsys):
    folders = earlier_run(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert vitzoo(train_args(Path("/nonexistent"), tmp_path, "--epochs", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"vitzoo train: error: {tmp_path} already holds a run (2 checkpoint(s), metrics.jsonl, "
                   "metrics.csv): continue it with --resume auto, or start again with --overwrite (deletes its "
                   "checkpoints, logs and metrics)")
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing touched
    with pytest.raises(UserError, match="already holds a run"):  # the Python API refuses too
        Trainer(load_config(None, ["--output_dir", str(folders.output)]))


def test_a_log_alone_is_no_run(tmp_path):
    """A run that failed while starting (e.g. a wrong data_path) may simply be started again."""
    (tmp_path / "train.log").write_text("dataset folder not found\n")
    assert RunFolders.of(load_config(None, ["--output_dir", str(tmp_path)])).check_fresh("", False) == []


def test_overwrite_deletes_only_what_vitzoo_train_wrote(tmp_path, data, capsys):
    earlier_run(tmp_path)
    assert vitzoo(train_args(data, tmp_path, "--overwrite")) == 0
    captured = capsys.readouterr()
    assert f"overwrite: deleted the earlier run's 7 file(s) in {tmp_path}" in captured.err
    assert (tmp_path / "notes.txt").read_text() == "x" and (tmp_path / "checkpoints" / "mine.pth").is_file()
    assert not (tmp_path / "bad_files.txt").exists() and "new best top-1" in captured.out
    assert [p.name for p in (tmp_path / "checkpoints").glob("ckpt_*")] == [ckpt_name(1, 2)]
    assert len(list((tmp_path / "best").iterdir())) == 1
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1  # one run, one event file
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_resuming_a_finished_run_has_nothing_to_do(tmp_path, data, capsys):
    assert vitzoo(train_args(data, tmp_path)) == 0
    capsys.readouterr()
    assert vitzoo(train_args(data, tmp_path, "--resume", "auto")) == 0
    out = capsys.readouterr().out.strip()
    assert out == (f"nothing to do: {tmp_path / 'checkpoints' / ckpt_name(1, 2)} already completed 1 epoch(s); "
                   "raise --epochs to train further")


def test_overwrite_guards(tmp_path, capsys):
    assert vitzoo(train_args(tmp_path, tmp_path, "--overwrite", "--resume", "auto")) == 2
    assert "'overwrite' and 'resume' ('auto') exclude each other" in capsys.readouterr().err
    folders = earlier_run(tmp_path)
    with pytest.raises(UserError, match="--overwrite would delete .*best_top1"):
        folders.check_fresh("", True, keep=[str(next(folders.best.iterdir()))])
    assert len(list(folders.best.iterdir())) == 1  # refused before deleting anything


def test_check_reports_inputs_without_training(tmp_path, data, capsys):
    assert vitzoo(train_args(data, tmp_path / "run", "--check")) == 0
    assert capsys.readouterr().out.startswith("ok: deit_tiny_patch16_224 on ")
    assert not (tmp_path / "run").exists()
    assert vitzoo(train_args(data, tmp_path / "run", "--check", "--pretrained", str(tmp_path / "w.pth"))) == 2
    assert f"pretrained: file not found: {tmp_path / 'w.pth'}" in capsys.readouterr().err
    earlier_run(tmp_path / "run")
    assert vitzoo(train_args(data, tmp_path / "run", "--check")) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_make_demo_twice(tmp_path, capsys):
    """`make demo` re-runs into demo_out/run: the second run reuses the data and replaces the run."""
    args = ["--out", str(tmp_path), "--num-train", "16", "--num-val", "5", "--epochs", "1", *TINY[:4],
            "--num_workers", "0", "--batch_size", "8"]
    assert demo.main(args) == 0
    capsys.readouterr()
    assert demo.main(args) == 0
    out = capsys.readouterr().out
    assert "images of 5 shapes in" in out and "(reused)" in out
    assert f"(replacing the earlier run in {tmp_path / 'run'})" in out
