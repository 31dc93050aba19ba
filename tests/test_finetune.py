"""The fine-tuning journey: `vitzoo train --config configs/finetune.yaml --pretrained TAG --data_path DIR`,
against a tag served locally (``hub_server``), and the other commands that take weights by name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_image_folder
from hub_server import ARCH, REPO, TAG, TINY, model_fixture, server_fixture  # noqa: F401 (fixtures)

from vitzoo.checkpoint import load_checkpoint
from vitzoo.cli import main as vitzoo
from vitzoo.config import load_config
from vitzoo.engine.build import take_model_from_weights

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def my_images(tmp_path_factory):
    """A user's folder: train/ and val/ with 3 classes of small pictures."""
    return write_image_folder(tmp_path_factory.mktemp("my_images"), ("cat", "dog", "owl"),
                              {"train": 24, "val": 6}, size=40)


def test_finetune_journey_on_a_served_tag(model, server, my_images, tmp_path, capsys):
    out = tmp_path / "run"
    code = vitzoo(["train", "--config", str(ROOT / "configs/finetune.yaml"), "--pretrained", TAG,
                   "--data_path", str(my_images), "--output_dir", str(out), "--input_size", "48",
                   "--epochs", "1", "--warmup_epochs", "0", "--batch_size", "8", "--num_workers", "0",
                   "--device", "cpu", "--amp_level", "O0", "--aa", "none", "--mixup", "0", "--cutmix", "0",
                   "--ckpt_save_every_seconds", "0"])
    assert code == 0
    err = capsys.readouterr().err
    assert "classifier re-initialised for 3 classes" in err  # the folder's classes, a fresh head
    assert "resized pos_embed (1, 65, 32) -> (1, 145, 32)" in err  # 32 px tag, 48 px run
    ckpt = load_checkpoint(max(out.rglob("*.pth")))
    meta = ckpt["meta"]
    assert meta["arch"] == ARCH and meta["model_kwargs"]["embed_dim"] == TINY["embed_dim"]
    assert meta["model_kwargs"]["num_classes"] == 3 and meta["model_kwargs"]["img_size"] == 48


def test_beit_tag_brings_its_layer_decay_and_architecture():
    cfg = load_config(str(ROOT / "configs/finetune.yaml"),
                      ["--pretrained", "beit_base_patch16_224.in22k_ft_in22k_in1k"])
    take_model_from_weights(cfg, __import__("logging").getLogger("vitzoo"))
    assert cfg.model == "beit_base_patch16_224" and cfg.layer_decay == 0.85
    kept = load_config(str(ROOT / "configs/finetune.yaml"),
                       ["--pretrained", "beit_large_patch16_224.in22k", "--layer_decay", "0.7"])
    take_model_from_weights(kept, __import__("logging").getLogger("vitzoo"))
    assert kept.model == "beit_large_patch16_224" and kept.layer_decay == 0.7


def test_eval_knn_and_convert_take_a_tag(model, server, my_images, tmp_path, capsys):
    assert vitzoo(["eval", "--pretrained", TAG, "--data_path", str(my_images), "--num_classes", "10",
                   "--num_workers", "0", "--device", "cpu", "--output_dir", str(tmp_path / "ev")]) == 0
    assert "acc" in capsys.readouterr().out.lower()
    assert vitzoo(["knn", "--pretrained", TAG, "--data_path", str(my_images), "--batch_size", "8",
                   "--num_workers", "0", "--device", "cpu", "--amp_level", "O0"]) == 0
    assert "top1" in capsys.readouterr().out.lower().replace("-", "")
    assert vitzoo(["convert", TAG, str(tmp_path / "tiny.pt")]) == 0
    assert load_checkpoint(tmp_path / "tiny.pt")["meta"]["arch"] == ARCH


def test_teacher_by_hub_repo(model, server):
    """A non-zoo teacher (timm's resnet18 as a stand-in for regnety_160) from a timm-layout hub repo."""
    import timm
    import torch
    from safetensors.torch import save as save_safetensors

    from vitzoo.engine.teacher import build_teacher

    ref = timm.create_model("resnet18", num_classes=3).eval()
    server.repos["test-org/teacher"] = {
        "config.json": json.dumps({"architecture": "resnet18", "num_classes": 3}).encode(),
        "model.safetensors": save_safetensors({k: v.contiguous() for k, v in ref.state_dict().items()})}
    teacher = build_teacher("resnet18", "hf-hub:test-org/teacher", 3)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(teacher(x), ref(x), atol=1e-6)


def test_check_fetches_the_tag_once_before_ranks_start(model, server, my_images, tmp_path, monkeypatch, capsys):
    """`vitzoo train --check` (run by scripts/ before torchrun) fills the cache, so ranks find the file."""
    args = ["train", "--config", str(ROOT / "configs/finetune.yaml"), "--pretrained", TAG,
            "--data_path", str(my_images), "--output_dir", str(tmp_path / "run"), "--check"]
    assert vitzoo(args) == 0 and "ok:" in capsys.readouterr().out
    assert server.requests("GET").count(f"/{REPO}/resolve/main/model.safetensors") == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    server.log.clear()
    assert vitzoo(args) == 0 and server.requests() == []


def test_infer_takes_a_tag(model, server, my_images, tmp_path, capsys):
    image = next((my_images / "val").rglob("*.png"))
    assert vitzoo(["infer", str(image), "--checkpoint", TAG, "--device", "cpu", "--precision", "fp32",
                   "--output", str(tmp_path / "pred.json")]) == 0
    assert json.loads((tmp_path / "pred.json").read_text())
