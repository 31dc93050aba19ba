"""The hub folders' model card (models/convert/model_card.py) is the run's: a real (tiny) training run is
converted with ``--to hf`` and ``--to timm``, and every number and name in the card must be the one its
checkpoint records; the recipe block must be a config ``vitzoo train --config`` accepts."""
from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import write_image_folder

from vitzoo.checkpoint import load_checkpoint
from vitzoo.cli import main as cli
from vitzoo.config import load_config
from vitzoo.engine.trainer import train
from vitzoo.version import __version__

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ("circle", "square", "stripe")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch of a tiny DeiT on 12 / 6 generated images of three classes; returns the final checkpoint."""
    data = write_image_folder(tmp_path_factory.mktemp("shapes"), CLASSES, {"train": 12, "val": 6}, size=32)
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(None, ["--model", "deit_tiny_patch16_224", "--model_overrides",
                             "{patch_size: 8, depth: 1, embed_dim: 24, num_heads: 2}", "--input_size", "32",
                             "--data_path", str(data), "--output_dir", str(out), "--batch_size", "6",
                             "--num_workers", "0", "--amp_level", "O0", "--device", "cpu", "--epochs", "1",
                             "--warmup_epochs", "0", "--lr", "1e-3", "--aa", "none", "--mixup", "0", "--cutmix", "0",
                             "--ckpt_save_every_seconds", "0", "--seed", "3", "--crop_pct", "1.0"])
    return train(cfg)["last_checkpoint"]


@pytest.mark.parametrize("to", ["hf", "timm"])
def test_the_card_says_what_the_checkpoint_records(run, to, tmp_path):
    meta = load_checkpoint(run)["meta"]
    folder = tmp_path / to
    assert cli(["convert", run, str(folder), "--to", to]) == 0
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == ("transformers" if to == "hf" else "timm") and front["license"] == "other"
    assert front["metrics"] == ["accuracy"]
    m = meta["metrics"]
    for text in ("# deit_tiny_patch16_224", ", ".join(f"`{c}`" for c in CLASSES), "- classes (3)",
                 "12 train, 6 val", "Trained for 1 epoch / 2 optimizer steps", "after epoch 1",
                 f"{m['Top1-Acc']:.4f} ({100 * m['Top1-Acc']:.2f}%)", f"{m['Top5-Acc']:.4f}", f"{m['Loss']:.4f}",
                 f"trained / saved by | vitzoo {meta['vitzoo_version']}", f"converted by | vitzoo {__version__}",
                 "depth=1", "embed_dim=24", "num_heads=2"):
        assert text in card, text
    # the run's preprocessing (crop_pct 1.0, not the arch's 0.875) is what the folder publishes
    config = json.loads((folder / ("preprocessor_config.json" if to == "hf" else "config.json")).read_text())
    if to == "hf":
        assert config["size"] == config["crop_size"] == {"height": 32, "width": 32}
    else:
        assert config["pretrained_cfg"]["crop_pct"] == 1.0 and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert "resize to 32 (32 / crop_pct 1.0" in card
    params = int(re.search(r"\(([\d,]+) parameters\)", card).group(1).replace(",", ""))
    from vitzoo.models import load_model

    model, _ = load_model(run)
    assert params == sum(p.numel() for p in model.parameters())
    # the recipe block is the run's config, minus the machine's paths, and a config vitzoo train reads
    recipe = yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])
    assert recipe["lr"] == meta["config"]["lr"] == 1e-3 and recipe["epochs"] == 1
    assert all(recipe[k] == meta["config"][k] for k in recipe)
    assert "data_path" not in recipe and "output_dir" not in recipe
    assert recipe["model_overrides"] == {"patch_size": 8, "depth": 1, "embed_dim": 24, "num_heads": 2}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert load_config(str(path), ["--data_path", "x"]).lr == recipe["lr"]


def test_a_foreign_file_says_what_it_does_not_record(tmp_path):
    """A transformers release file has no recipe, metrics or image counts: the card says so, guessing nothing."""
    from pathlib import Path

    src = Path(__file__).parent / "fixtures" / "convert" / "hf_deit_teacher"
    assert cli(["convert", str(src), str(tmp_path / "out"), "--to", "timm"]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert "metrics" not in front and "datasets" not in front and front["license"] == "other"
    for text in ("names not recorded", "images: not recorded", "## Training recipe\n\nNot recorded",
                 "Validation metrics: not recorded", "Hugging Face transformers DeiTForImageClassificationWithTeacher"):
        assert text in card, text
    assert "trained / saved by" not in card and "trained with vitzoo" not in card
