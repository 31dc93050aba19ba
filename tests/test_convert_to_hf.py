"""``vitzoo convert CKPT DIR --to hf`` (models/convert/to_hf.py, hub_out.py, model_card.py).

The fixtures under tests/fixtures/convert/hf_out/ (make_hf_out_fixtures.py, run outside CI) are tiny vitzoo
checkpoints with random weights, and what transformers 5.25.0 did with their ``--to hf`` folders: the
config.json and tensors it loaded (no missing or unexpected key) and the logits it computed. Here the same
checkpoints are converted again: the folder must be the one transformers accepted, tensor for tensor, and
vitzoo's logits must equal transformers' (fp32, max |diff| <= 1e-5). Where transformers happens to be
importable, the folder is also loaded with it directly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from vitzoo.cli import main as cli
from vitzoo.errors import UserError
from vitzoo.models import create_model, load_model
from vitzoo.version import __version__

FIXTURES = Path(__file__).parent / "fixtures" / "convert" / "hf_out"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


def fixed_input(size: int = 16) -> torch.Tensor:
    """make_fixtures.fixed_input: the input the fixtures' logits were computed on (a formula, no RNG)."""
    i = np.arange(2 * 3 * size * size, dtype=np.float64)
    return torch.from_numpy((np.sin(i * 0.37) + 0.5 * np.cos(i * 0.011)).reshape(2, 3, size, size).astype(np.float32))


def convert(case: str, out: Path, *extra: str) -> Path:
    assert cli(["convert", str(FIXTURES / f"{case}.safetensors"), str(out), "--to", "hf", *extra]) == 0
    return out


def tensor_record(path: Path) -> dict[str, list]:
    import hashlib

    return {k: [list(v.shape), hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()]
            for k, v in sorted(load_file(str(path)).items())}


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(fixed_input())


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_the_folder_is_what_transformers_loaded_and_gives_its_logits(case, tmp_path):
    expected = EXPECTED[case]
    folder = convert(case, tmp_path / case)
    assert json.loads((folder / "config.json").read_text()) == expected["config"]
    assert tensor_record(folder / "model.safetensors") == expected["tensors"]  # names, shapes and bytes
    reference = torch.tensor(expected["logits"])
    model, _ = load_model(FIXTURES / f"{case}.safetensors")
    torch.testing.assert_close(logits(model), reference, atol=ATOL, rtol=0)
    # and vitzoo reads the folder back into the same function
    again, _ = load_model(folder)
    torch.testing.assert_close(logits(again), reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_transformers_itself_when_installed(case, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("USE_HUB_KERNELS", "0")  # transformers 5 would ask for the `kernels` package
    folder = convert(case, tmp_path / case)
    model, info = getattr(transformers, EXPECTED[case]["class"]).from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        out = model.eval()(pixel_values=fixed_input()).logits
    vitzoo_model, _ = load_model(FIXTURES / f"{case}.safetensors")
    torch.testing.assert_close(out, logits(vitzoo_model), atol=ATOL, rtol=0)


def test_the_card_is_generated_from_the_checkpoint(tmp_path, capsys):
    folder = convert("deit_distilled", tmp_path / "out", "--license", "apache-2.0")
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "apache-2.0" and front["library_name"] == "transformers"
    assert "deit" in front["tags"] and front["pipeline_tag"] == "image-classification"
    meta = load_model(FIXTURES / "deit_distilled.safetensors")[1]
    model = create_model("deit_tiny_distilled_patch16_224", **meta["model_kwargs"])
    for text in (f"{sum(p.numel() for p in model.parameters()):,} parameters", "DeiTForImageClassificationWithTeacher",
                 "`ant`, `bee`, `cat`, `dog`, `eel`", "40 train, 16 val", "0.8125 (81.25%)", "after epoch 7",
                 f"vitzoo {__version__}", "`deit_distilled.safetensors` (vitzoo checkpoint)"):
        assert text in card, text
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"]["2"] == "cat" and config["label2id"]["eel"] == 4
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["crop_size"] == {"height": 16, "width": 16} and pre["image_mean"] == list(meta["data_config"]["mean"])


def test_a_folder_with_files_needs_overwrite(tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert cli(["convert", str(FIXTURES / "vit.safetensors"), str(folder), "--to", "hf"]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(folder)) == ["notes.txt"]  # nothing written
    convert("vit", folder, "--overwrite")
    assert (folder / "model.safetensors").is_file() and (folder / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    assert cli(["convert", str(FIXTURES / "vit.safetensors"), str(tmp_path / "file"), "--to", "hf"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_what_transformers_cannot_express_is_refused(tmp_path):
    from vitzoo.models.convert import to_hf

    for arch, kwargs, match in (("t2t_vit_7", {}, "not one"),
                                ("vit_base_patch16_224", {"use_mean_pooling": True}, "use_mean_pooling"),
                                ("vit_base_patch16_224", {"representation_size": 8}, "representation_size")):
        model = create_model(arch, num_classes=3, img_size=32, depth=1, **kwargs)
        with pytest.raises(UserError, match=match):
            to_hf.write(model, tmp_path / arch)


def test_beit_without_qkv_bias_gets_zero_biases(tmp_path):
    """transformers' BEiT always has query / value biases: zeros give the same function, and vitzoo reads the
    folder back into a model without them."""
    from vitzoo.checkpoint import model_meta, save_checkpoint

    model = create_model("beit_base_patch16_224", num_classes=3, img_size=16, patch_size=4, embed_dim=16, depth=1,
                         num_heads=2, qkv_bias=False).eval()
    ckpt = save_checkpoint(tmp_path / "beit.pt", {"model": model.state_dict(), "meta": model_meta(model)})
    assert cli(["convert", str(ckpt), str(tmp_path / "beit"), "--to", "hf"]) == 0
    tensors = load_file(str(tmp_path / "beit" / "model.safetensors"))
    assert not tensors["beit.encoder.layer.0.attention.attention.query.bias"].any()
    assert "beit.encoder.layer.0.attention.attention.key.bias" not in tensors
    again, _ = load_model(tmp_path / "beit")
    assert again.blocks[0].attn.q_bias is None
    torch.testing.assert_close(logits(again), logits(model), atol=ATOL, rtol=0)
