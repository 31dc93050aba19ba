"""``vitzoo convert CKPT DIR --to timm`` (models/convert/to_timm.py): timm's hub folder, loaded by timm itself.

timm is a vitzoo dependency, so the check is direct: ``timm.create_model("local-dir:DIR", pretrained=True)``
(timm's own reading of a hub folder: config.json's architecture and model_args, model.safetensors) must give
vitzoo's logits (fp32, max |diff| <= 1e-5), on the random-weight checkpoints of tests/fixtures/convert/hf_out/.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

from vitzoo.cli import main as cli
from vitzoo.models import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "convert" / "hf_out"
ATOL = 1e-5
CASES = {  # fixture -> timm class
    "vit": "VisionTransformer", "deit": "VisionTransformer", "deit_distilled": "VisionTransformerDistilled",
    "beit": "Beit", "beit_shared_abs_token": "Beit",
}

pytestmark = pytest.mark.usefixtures("one_thread")


def fixed_input(size: int = 16) -> torch.Tensor:
    """make_fixtures.fixed_input (a formula, no RNG)."""
    i = np.arange(2 * 3 * size * size, dtype=np.float64)
    return torch.from_numpy((np.sin(i * 0.37) + 0.5 * np.cos(i * 0.011)).reshape(2, 3, size, size).astype(np.float32))


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(fixed_input())


@pytest.mark.parametrize("case", sorted(CASES))
def test_timm_loads_the_folder_and_gives_vitzoos_logits(case, tmp_path, capsys):
    folder = tmp_path / case
    assert cli(["convert", str(FIXTURES / f"{case}.safetensors"), str(folder), "--to", "timm"]) == 0
    assert "target network computes" not in capsys.readouterr().out  # same numerics: nothing to report
    ours, meta = load_model(FIXTURES / f"{case}.safetensors")
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert type(theirs).__name__ == CASES[case]
    torch.testing.assert_close(logits(theirs), logits(ours), atol=ATOL, rtol=0)
    # timm's preprocessing is the model's, and the names travel
    assert tuple(theirs.pretrained_cfg["input_size"]) == tuple(meta["data_config"]["input_size"])
    assert theirs.pretrained_cfg["crop_pct"] == meta["data_config"]["crop_pct"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == meta["arch"] and config["label_names"] == meta["class_names"]
    # vitzoo reads the folder back (timm_hub.py) into the same function
    again, _ = load_model(folder)
    torch.testing.assert_close(logits(again), logits(ours), atol=ATOL, rtol=0)
    front = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    assert front["library_name"] == "timm" and "timm" in front["tags"]


def test_other_numerics_are_written_and_their_change_reported(tmp_path, capsys):
    """timm computes with LayerNorm eps 1e-6 and exact GELU: a model with others is written with the change."""
    folder = tmp_path / "vit"
    assert cli(["convert", str(FIXTURES / "vit_tanh_noqkvbias.safetensors"), str(folder), "--to", "timm"]) == 0
    out = capsys.readouterr().out
    assert "the target network computes with norm_eps=1e-06, gelu_approximate=False" in out
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert theirs.blocks[0].attn.qkv.bias is None  # qkv_bias=False travelled in model_args
    card = (folder / "README.md").read_text()
    assert "LayerNorm eps 1e-06, exact GELU (the checkpoint's model: LayerNorm eps 1e-12, tanh GELU" in card
    ours, _ = load_model(FIXTURES / "vit_tanh_noqkvbias.safetensors", norm_eps=1e-6, gelu_approximate=False)
    torch.testing.assert_close(logits(theirs), logits(ours), atol=ATOL, rtol=0)


def test_what_timm_has_no_model_for_is_refused(tmp_path, capsys):
    assert cli(["convert", str(FIXTURES / "deit_distilled_one_head.safetensors"), str(tmp_path / "o"),
                "--to", "timm"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "dist_head=False is not a timm model" in errors[0]
    assert not Path(tmp_path / "o").exists()
