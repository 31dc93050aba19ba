"""`vitzoo eval` evaluates with the checkpoint's preprocessing (issue 13, item 1).

The checkpoint's architecture already won over the config's model, but the config's preprocessing (or
its defaults) was used: the demo checkpoint scored 0.982 instead of 0.958 with no warning, and another
input size crashed with a traceback. Now the checkpoint's ``data_config`` is used unless the user set a
key (command line, or a config file for the same model), one line says which, and a size the model
cannot take is a one-line error.
"""
from __future__ import annotations

import ast
import re

import pytest
import torch
import torch.nn.functional as F

from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import main as vitzoo
from vitzoo.data import build_eval_transform, list_images, load_image, make_shapes_dataset
from vitzoo.models import create_model

# what the checkpoint records: not the family's defaults (crop 0.875, bicubic), so a silent switch shows
RECORDED = {"input_size": [3, 32, 32], "crop_pct": 0.6, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
            "interpolation": "bilinear"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalpre")
    ds = make_shapes_dataset(root / "ds", num_train=5, num_val=15, size=40, progress=False)
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=8, depth=1,
                         embed_dim=24, num_heads=2).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 3.0)
    meta = {"arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 5,
            "class_names": sorted(p.name for p in (ds / "val").iterdir()), "data_config": RECORDED}
    ckpt = root / "ck.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "meta": meta})
    return {"root": root, "ds": ds, "ckpt": ckpt, "model": model, "classes": meta["class_names"]}


def reference(setup, data_config: dict) -> dict:
    t = build_eval_transform({**data_config, "input_size": tuple(data_config["input_size"])})
    xs, ys = [], []
    for label, c in enumerate(setup["classes"]):
        for p in list_images(setup["ds"] / "val" / c):
            xs.append(t(load_image(p)))
            ys.append(label)
    with torch.no_grad():
        out = setup["model"](torch.stack(xs))
    y = torch.tensor(ys)
    top5 = out.topk(5, dim=1).indices
    return {"Loss": round(F.cross_entropy(out, y).item(), 4),
            "Top1-Acc": round((top5[:, 0] == y).float().mean().item(), 6),
            "Top5-Acc": round((top5 == y[:, None]).any(1).float().mean().item(), 6)}


def evaluate(setup, capsys, *extra: str) -> tuple[int, dict | None, str]:
    code = vitzoo(["eval", "--data_path", str(setup["ds"]), "--pretrained", str(setup["ckpt"]), "--num_workers",
                   "0", "--device", "cpu", *extra])
    out, err = capsys.readouterr()
    m = re.search(r"^eval results: (\{.*\})$", out, re.MULTILINE)
    return code, ast.literal_eval(m.group(1)) if m else None, err


def config(setup, name: str, text: str) -> str:
    path = setup["root"] / name
    path.write_text(text)
    return str(path)


def test_the_checkpoints_preprocessing_by_default(setup, capsys):
    code, got, err = evaluate(setup, capsys)
    assert code == 0 and got == reference(setup, RECORDED)
    assert "preprocessing: input 32x32, crop_pct 0.6, bilinear, 0.5 mean/std (the checkpoint's)" in err


def test_a_config_for_another_model_is_ignored_with_it(setup, capsys):
    """The issue's case: a seed config (another model, input 224, its crop) with the demo checkpoint."""
    other = config(setup, "deit_small.yaml", "model: deit_small_patch16_224\ninput_size: 224\ncrop_pct: 0.875\n"
                                             "interpolation: bicubic\n")
    code, got, err = evaluate(setup, capsys, "--config", other)
    assert code == 0 and got == reference(setup, RECORDED)
    assert "config model deit_small_patch16_224 ignored, and the config file's preprocessing with it" in err
    assert "Traceback" not in err


def test_keys_the_user_set_override_and_are_named(setup, capsys):
    same = config(setup, "same.yaml", "model: deit_tiny_patch16_224\ncrop_pct: 0.875\n")
    code, got, err = evaluate(setup, capsys, "--config", same, "--interpolation", "bicubic")
    overridden = reference(setup, {**RECORDED, "crop_pct": 0.875, "interpolation": "bicubic"})
    assert code == 0 and got == overridden != reference(setup, RECORDED)
    assert (f"preprocessing: input 32x32, crop_pct 0.875, bicubic, 0.5 mean/std (the checkpoint's; crop_pct from "
            f"{same}; interpolation from the command line)") in err


def test_a_size_the_model_cannot_take_is_one_line(setup, capsys):
    code, got, err = evaluate(setup, capsys, "--input_size", "224")
    assert code == 2 and got is None
    assert err.strip().splitlines()[-1] == (
        f"vitzoo eval: error: input_size 224x224 (the command line) does not fit {setup['ckpt']}: its model "
        "takes 32x32 images; leave input_size out to use the checkpoint's preprocessing")
