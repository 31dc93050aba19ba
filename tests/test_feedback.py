"""Quiet or missing feedback (issue 13, item 6).

``make-dataset`` said "wrote" when it reused existing data; ``eval --json`` did not say where it wrote;
``infer`` / ``infer-onnx`` left an earlier run's ``predictions.topk.json`` beside a new
``predictions.json``; the "head re-initialised / position table resized" messages were INFO logs a
Python API user never saw; ``atomic_write`` files were 0600 while logs were 0644.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from vitzoo.checkpoint import atomic_write_text, save_checkpoint
from vitzoo.cli import main as vitzoo
from vitzoo.data import make_shapes_dataset
from vitzoo.models import create_model

TINY = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 24, "num_heads": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("feedback")
    ds = make_shapes_dataset(root / "ds", 5, 10, size=32, progress=False)
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", num_classes=5, **TINY)
    ckpt = root / "ck.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "meta": {
        "arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 5,
        "class_names": sorted(p.name for p in (ds / "val").iterdir())}})
    return {"root": root, "ds": ds, "ckpt": ckpt}


def test_make_dataset_says_when_it_reused_the_data(tmp_path, capsys):
    args = ["make-dataset", "shapes", str(tmp_path / "d"), "--num-train", "5", "--num-val", "5"]
    assert vitzoo(args) == 0
    assert capsys.readouterr().out.startswith("wrote 5 train + 5 val images")
    assert vitzoo(args) == 0
    assert capsys.readouterr().out.startswith(f"reused {tmp_path / 'd'}: it already holds the 5 train + 5 val")


def test_eval_json_says_where_it_wrote(setup, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert vitzoo(["eval", "--data_path", str(setup["ds"]), "--pretrained", str(setup["ckpt"]), "--json", str(out),
                   "--num_workers", "0", "--device", "cpu"]) == 0
    assert f"wrote {out} (metrics, per-class accuracy, confusion matrix)" in capsys.readouterr().err


def test_no_stale_topk_file_from_an_earlier_run(setup, tmp_path, capsys):
    onnx = tmp_path / "m.onnx"
    assert vitzoo(["export", "--checkpoint", str(setup["ckpt"]), "--output", str(onnx)]) == 0
    images = str(setup["ds"] / "val" / "circle")
    for command, model in (("infer", ["--checkpoint", str(setup["ckpt"])]), ("infer-onnx", ["--onnx-path", str(onnx)])):
        out = tmp_path / f"{command}.json"
        topk = tmp_path / f"{command}.topk.json"
        assert vitzoo([command, images, *model, "--output", str(out), "--topk", "2"]) == 0
        assert topk.is_file()
        capsys.readouterr()
        assert vitzoo([command, images, *model, "--output", str(out)]) == 0
        assert not topk.exists(), command
        assert f"deleted {topk}: it held an earlier run's top-k" in capsys.readouterr().err


def test_weight_adaptation_reaches_an_api_user_without_logging(setup):
    """A fresh interpreter that configures no logging: the messages still reach stderr."""
    code = (f"import vitzoo; vitzoo.create_model('deit_tiny_patch16_224', num_classes=3, "
            f"pretrained={str(setup['ckpt'])!r}, **{dict(TINY, img_size=48)!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "resized pos_embed (1, 17, 24) -> (1, 37, 24)" in out.stderr
    assert "classifier re-initialised for 3 classes" in out.stderr


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "out.json", "{}")
        with open(tmp_path / "plain.txt", "w") as f:  # what an ordinary file gets
            f.write("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask
