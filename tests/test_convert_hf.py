"""Hugging Face ``transformers`` folders and timm hub folders (models/convert/hf.py, timm_hub.py).

The fixtures under tests/fixtures/convert/ were written by transformers 5.23.0 and timm 1.0.31 themselves
(tests/fixtures/convert/make_fixtures.py, run outside CI), with random weights, together with the logits
those libraries computed on a fixed input. vitzoo must give the same logits (fp32, max |diff| <= 1e-5).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vitzoo.cli import main as cli
from vitzoo.errors import UserError
from vitzoo.models import create_model, load_model
from vitzoo.models.convert import detect, hf, read_weights, timm_hub

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
ATOL = 1e-5


def fixed_input(size: int = 16) -> torch.Tensor:
    """The input the fixtures were run on (make_fixtures.fixed_input: the same formula)."""
    i = np.arange(2 * 3 * size * size, dtype=np.float64)
    return torch.from_numpy((np.sin(i * 0.37) + 0.5 * np.cos(i * 0.011)).reshape(2, 3, size, size).astype(np.float32))


def expected(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(FIXTURES / name / "logits.npy"))


def output(model: torch.nn.Module, name: str) -> torch.Tensor:
    with torch.no_grad():
        x = fixed_input()
        if name == "hf_vit_model":  # headless: the last hidden state (after the final LayerNorm)
            return model.forward_features(x)
        if name == "hf_beit_model":  # headless: the pooler output, LayerNorm of the mean patch token
            return model.forward_head(model.forward_features(x), pre_logits=True)
        return model(x)


CASES = {  # fixture -> (arch the file records, its numerics)
    "hf_vit": ("vit_base_patch16_224", {"norm_eps": 1e-12, "gelu_approximate": False}),
    "hf_vit_bin": ("deit_base_patch16_224", {"norm_eps": 1e-12, "gelu_approximate": True}),
    "hf_vit_model": ("vit_base_patch16_224", {"norm_eps": 1e-12, "gelu_approximate": False}),
    "hf_deit": ("deit_base_distilled_patch16_224", {"norm_eps": 1e-12, "gelu_approximate": False}),
    "hf_deit_teacher": ("deit_base_distilled_patch16_224", {"norm_eps": 1e-12, "gelu_approximate": False}),
    "hf_beit": ("beit_base_patch16_224", {"norm_eps": 1e-12, "gelu_approximate": False}),
    "hf_beit_model": ("beit_base_patch16_224", {"norm_eps": 1e-12, "gelu_approximate": False}),
    "timm_hub_deit": ("deit_tiny_distilled_patch16_224", {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_logits_match_the_source(name):
    weights = read_weights(FIXTURES / name)
    arch, numerics = CASES[name]
    assert weights.arch == arch and weights.numerics == numerics
    model, _ = load_model(FIXTURES / name)
    torch.testing.assert_close(output(model, name), expected(name), atol=ATOL, rtol=0)


def test_layouts_and_paths():
    for name in ("hf_vit", "hf_deit", "hf_beit"):
        folder = FIXTURES / name
        assert detect(None, str(folder)) is hf
        # the folder, its config.json or its weight file name the same checkpoint
        for path in (folder, folder / "config.json", folder / "model.safetensors"):
            assert read_weights(path).layout.startswith(hf.NAME)
    assert detect(None, str(FIXTURES / "timm_hub_deit")) is timm_hub
    w = read_weights(FIXTURES / "hf_vit_bin")
    assert "pytorch_model.bin" in w.layout
    assert read_weights(FIXTURES / "hf_deit").model_kwargs["dist_head"] is False
    assert read_weights(FIXTURES / "hf_deit_teacher").model_kwargs["dist_head"] is True


@pytest.mark.parametrize("name", ["hf_deit_teacher", "hf_beit", "timm_hub_deit"])
def test_convert_cli_needs_no_arch(tmp_path, name, capsys):
    dst = tmp_path / "out.safetensors"
    assert cli(["convert", str(FIXTURES / name), str(dst)]) == 0
    assert "max |diff|" in capsys.readouterr().out
    model, meta = load_model(dst)
    assert meta["arch"] == CASES[name][0] and meta["source_layout"]
    torch.testing.assert_close(output(model, name), expected(name), atol=ATOL, rtol=0)


def test_create_model_from_a_folder_and_finetuning():
    model = create_model("deit_base_distilled_patch16_224", num_classes=5, img_size=16,
                         pretrained=FIXTURES / "hf_deit_teacher")
    torch.testing.assert_close(output(model, ""), expected("hf_deit_teacher"), atol=ATOL, rtol=0)
    # a new class count for fine-tuning: the backbone is the file's, the heads fresh
    tuned = create_model("deit_base_distilled_patch16_224", num_classes=3, img_size=16,
                         pretrained=FIXTURES / "hf_deit_teacher")
    assert tuned.head.out_features == 3
    torch.testing.assert_close(tuned.forward_features(fixed_input()), model.forward_features(fixed_input()))
    # the headless ViTModel: the backbone is the file's, the classifier initialised
    headless = create_model("vit_base_patch16_224", num_classes=7, img_size=16, pretrained=FIXTURES / "hf_vit_model")
    with torch.no_grad():
        torch.testing.assert_close(headless.forward_features(fixed_input()), expected("hf_vit_model"), atol=ATOL, rtol=0)


def test_reference_numerics_states_the_change(tmp_path, capsys):
    dst = tmp_path / "ref.pt"
    assert cli(["convert", str(FIXTURES / "hf_vit_bin"), str(dst), "--reference-numerics"]) == 0
    out = capsys.readouterr().out
    assert "reference numerics" in out and "gelu_approximate" in out
    model, _ = load_model(dst)
    assert model.cfg.gelu_approximate is False and model.cfg.norm_eps == 1e-6


def test_bad_folders(tmp_path, capsys):
    folder = tmp_path / "vit"
    shutil.copytree(FIXTURES / "hf_vit", folder)
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")  # truncated
    with pytest.raises(UserError, match="not a readable safetensors"):
        read_weights(folder)
    (folder / "model.safetensors").unlink()
    assert cli(["convert", str(folder), str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert "no model.safetensors or pytorch_model.bin" in err and len(err.strip().splitlines()) == 1
    config = json.loads((FIXTURES / "hf_vit" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    shutil.copy(FIXTURES / "hf_vit" / "model.safetensors", folder)
    with pytest.raises(UserError, match="hidden_act 'relu'"):
        read_weights(folder)
