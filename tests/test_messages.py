"""Messages that leaked internals or came late (issue 13, item 5).

An unreadable image read ``cannot identify image file <_io.BufferedReader name='...'>``, doubled for a
single file; ``eval`` / ``infer`` / ``infer-onnx`` (and ``eval-onnx``) loaded the model before finding
that the data path does not exist; ``learning_rate`` was answered with ``decay_rate, drop_rate``.
"""
from __future__ import annotations

import pytest

from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import main as vitzoo
from vitzoo.config import load_config
from vitzoo.config.build import known_keys
from vitzoo.config.compat import SYNONYMS
from vitzoo.config.schema import FIELDS
from vitzoo.data import load_image
from vitzoo.errors import UserError
from vitzoo.models import create_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = create_model("deit_tiny_patch16_224", num_classes=3, img_size=32, patch_size=8, depth=1,
                         embed_dim=24, num_heads=2)
    path = tmp_path_factory.mktemp("msg") / "ck.pt"
    save_checkpoint(path, {"model": model.state_dict(),
                           "meta": {"arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 3}})
    return path


def test_an_unreadable_image_is_named_once_without_internals(tmp_path, checkpoint, capsys):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    with pytest.raises(UserError) as e:
        load_image(notes)
    assert str(e.value) == f"{notes}: not a readable image (not an image format Pillow can decode)"
    for command in (["infer", str(notes), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "p.json")],
                    ["attention", str(notes), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "a")]):
        assert vitzoo(command) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == (f"vitzoo {command[0]}: error: {notes}: not a readable image "
                                                 "(not an image format Pillow can decode)")
        assert "<_io" not in err and err.count("not a readable image") == 1


@pytest.mark.parametrize("command", [
    ["eval", "--data_path", "{missing}", "--pretrained", "{ckpt}"],
    ["infer", "{missing}", "--checkpoint", "{ckpt}"],
    ["infer-onnx", "{missing}", "--onnx-path", "{ckpt}"],
    ["eval-onnx", "{missing}", "--onnx-path", "{ckpt}"],
])
def test_the_data_path_is_checked_before_the_model_loads(tmp_path, capsys, command):
    """The weights named here do not exist either: the error must be about the data, found first."""
    argv = [a.format(missing=tmp_path / "nowhere", ckpt=tmp_path / "model.pt") for a in command]
    assert vitzoo(argv) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "model.pt" not in err and "loaded weights" not in err


@pytest.mark.parametrize(("key", "meant"), [
    ("learning_rate", "lr"), ("num_epochs", "epochs"), ("max_epochs", "epochs"), ("weightDecay", "weight_decay"),
    ("wd", "weight_decay"), ("gradient_accumulation_steps", "update_freq"), ("max_grad_norm", "clip_grad"),
    ("num_labels", "num_classes"), ("img_size", "input_size"), ("data_dir", "data_path"), ("dropout", "drop"),
])
def test_unknown_keys_from_other_toolkits_are_answered_by_meaning(tmp_path, key, meant):
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"{key}: 1\n")
    with pytest.raises(UserError, match=rf"unknown config key '{key}' \(.*\) \(did you mean: {meant}\?\)$"):
        load_config(str(yaml))
    flag = "--" + key.replace("_", "-")
    with pytest.raises(UserError, match=rf"unknown option '{flag}' \(did you mean: --{meant}\?\)"):
        load_config(None, [flag, "1"])


def test_the_synonym_table_names_real_options_and_shadows_none():
    assert set(SYNONYMS.values()) <= set(FIELDS)
    assert not set(SYNONYMS) & set(known_keys())  # a synonym that is also a key would never be reached


def test_spelling_still_helps_where_the_meaning_is_unknown():
    with pytest.raises(UserError, match=r"unknown option '--batch-sise' \(did you mean: --batch_size, "):
        load_config(None, ["--batch-sise", "8"])


@pytest.mark.parametrize("command", [
    ["train", "--model", "deit_tiny_patch16_224", "--data_path", "{data}", "--output_dir", "{out}"],
    ["train", "--model", "deit_tiny_patch16_224", "--data_path", "{data}", "--output_dir", "{out}", "--check"],
    ["make-dataset", "shapes", "{out}", "--num-train", "5", "--num-val", "5", "--quiet"],
    ["infer", "{image}", "--checkpoint", "{ckpt}", "--output", "{out}/preds.json"],
    ["export", "--checkpoint", "{ckpt}", "--output", "{out}/model.onnx"],
])
def test_a_file_where_a_folder_must_go_is_named(tmp_path, checkpoint, capsys, command):
    """``--output_dir notes.txt/run``: mkdir said only "File exists" / "Not a directory", some commands with a
    traceback; now one line names the file in the way."""
    from PIL import Image

    notes = tmp_path / "notes.txt"
    notes.write_text("a file, not a folder")
    image = tmp_path / "image.png"
    Image.new("RGB", (32, 32)).save(image)
    for split in ("train", "val"):
        (tmp_path / "data" / split / "a").mkdir(parents=True)
    argv = [a.format(data=tmp_path / "data", out=notes / "sub", ckpt=checkpoint, image=image) for a in command]
    assert vitzoo(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(f"{notes} is a file, not a folder"), err
    assert "Traceback" not in err
