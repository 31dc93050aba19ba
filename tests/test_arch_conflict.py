"""A given architecture that the checkpoint records otherwise is a one-line error, exit 2, in every command
that takes one (issue 30, item 4): infer / export / attention / convert (``--arch``), eval / train
(``--model`` on the command line). Another name for the same network is not a conflict."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from vitzoo.checkpoint import model_meta, save_checkpoint
from vitzoo.cli import main as cli
from vitzoo.errors import UserError
from vitzoo.models import create_model, load_model

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def deit_checkpoint(tmp_path_factory):
    """A vitzoo checkpoint of a (scaled) deit_tiny_distilled, and a folder with one image per class."""
    root = tmp_path_factory.mktemp("conflict")
    torch.manual_seed(0)
    model = create_model("deit_tiny_distilled_patch16_224", num_classes=2, **TINY)
    path = save_checkpoint(root / "deit.pt", {"model": model.state_dict(),
                                              "meta": model_meta(model, class_names=["a", "b"])})
    for name in ("a", "b"):
        (root / "val" / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), (200, 30, 30) if name == "a" else (30, 30, 200)).save(root / "val" / name / "x.png")
    return path, root


def commands(path, root, arch):
    return {
        "infer": ["infer", str(root / "val"), "--recursive", "--checkpoint", str(path), "--arch", arch],
        "export": ["export", "--checkpoint", str(path), "--arch", arch, "--output", str(root / "m.onnx")],
        "attention": ["attention", str(root / "val" / "a" / "x.png"), "--checkpoint", str(path), "--arch", arch,
                      "--output", str(root / "attn.png")],
        "convert": ["convert", str(path), str(root / "out.pt"), "--arch", arch],
        "eval": ["eval", "--pretrained", str(path), "--model", arch, "--data_path", str(root), "--device", "cpu",
                 "--num_workers", "0"],
        "train": ["train", "--model", arch, "--pretrained", str(path), "--data_path", str(root),
                  "--output_dir", str(root / "run"), "--epochs", "1", "--device", "cpu", "--num_workers", "0"],
    }


@pytest.mark.parametrize("command", ["infer", "export", "attention", "convert", "eval", "train"])
def test_conflicting_arch_is_one_line_and_exit_2(deit_checkpoint, command, capsys):
    path, root = deit_checkpoint
    assert cli(commands(path, root, "vit_base_patch16_224")[command]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "records a deit_tiny_distilled_patch16_224, not a vit_base_patch16_224" in err[0]
    assert "distilled" in err[0]  # what differs is named


def test_the_recorded_arch_or_another_name_for_it_is_no_conflict(deit_checkpoint, tmp_path, monkeypatch):
    path, root = deit_checkpoint
    monkeypatch.chdir(tmp_path)  # infer writes predictions.json here
    assert cli(commands(path, root, "deit_tiny_distilled_patch16_224")["infer"]) == 0
    model, meta = load_model(path, arch="deit_tiny_distilled_patch16_224")
    assert model.arch == meta["arch"]
    with pytest.raises(UserError, match="records a deit_tiny_distilled_patch16_224, not a deit_tiny_patch16_224"):
        load_model(path, arch="deit_tiny_patch16_224")
    with pytest.raises(UserError, match="not a t2t_vit_7 .another model family"):
        create_model("t2t_vit_7", pretrained=str(path))
    # ViT-B and DeiT-B are one network: a vitzoo file of one loads as the other, and says so
    vit = create_model("vit_base_patch16_224", num_classes=2, img_size=32, depth=1, num_heads=2, embed_dim=32)
    vit_path = save_checkpoint(root / "vit.pt", {"model": vit.state_dict(), "meta": model_meta(vit)})
    as_deit, _ = load_model(vit_path, arch="deit_base_patch16_224")
    assert as_deit.arch == "deit_base_patch16_224" and as_deit.cfg.embed_dim == 32
