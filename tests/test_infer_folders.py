"""`vitzoo infer` on a folder laid out as ImageNet's (DATA/<class>/<images>): walked whole, each image's
true class (its folder) printed beside the prediction, and a top-1 line against the folders (issue 30, 3).

The predictions are checked against the model run directly on the same files; the expected top-1 is
counted here from those predictions and the folder names, not hard-coded.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import main as cli
from vitzoo.data import build_eval_transform, list_images, load_image, make_shapes_dataset
from vitzoo.models import create_model

LINE = re.compile(r"^(\S+) \(class: (\d+)\) (\S+)  true: (\S+)$")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inferfolders")
    ds = make_shapes_dataset(root / "ds", num_train=4, num_val=12, size=32, num_classes=4)
    classes = sorted(p.name for p in (ds / "val").iterdir())
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8, depth=1,
                         embed_dim=48, num_heads=3).eval()
    with torch.no_grad():  # a spread-out head: predictions differ between images, some right, some wrong
        model.head.weight.normal_(0, 1.0)
    dc = {k: list(v) if isinstance(v, tuple) else v for k, v in model.data_config.items()}
    meta = {"arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 4, "class_names": classes,
            "data_config": dc}
    ckpt = root / "ck.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "meta": meta})
    return {"val": ds / "val", "ckpt": ckpt, "model": model, "classes": classes}


def _direct(model, paths) -> list[int]:
    t = build_eval_transform(model.data_config)
    with torch.no_grad():
        return model(torch.stack([t(load_image(p)) for p in paths])).argmax(1).tolist()


@pytest.mark.parametrize("recursive", [False, True])
def test_class_folders_walked_with_true_classes(setup, tmp_path, capsys, one_thread, recursive):
    val, classes = setup["val"], setup["classes"]
    out = tmp_path / "pred.json"
    args = ["infer", str(val), "--checkpoint", str(setup["ckpt"]), "--output", str(out), "--device", "cpu",
            "--num-workers", "0", "--topk", "2"] + (["--recursive"] if recursive else [])
    assert cli(args) == 0  # on today's code: "no image files in .../val (use --recursive for sub-folders)"
    cap = capsys.readouterr()

    files = [p for c in classes for p in list_images(val / c)]
    expected = dict(zip(map(str, files), _direct(setup["model"], files)))
    assert json.loads(out.read_text()) == expected  # still exactly {path: class index}

    lines = [LINE.match(line.split("  top-")[0] + "  true: " + line.split("  true: ")[1])
             for line in cap.out.splitlines()]
    assert len(lines) == len(files) and all(lines)
    for m in lines:
        path, cls, name, true = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        assert cls == expected[path] and name == classes[cls]
        assert true == next(c for c in classes if f"/{c}/" in path)  # the image's own class folder

    rich = json.loads((tmp_path / "pred.topk.json").read_text())
    assert {p: r["true"] for p, r in rich.items()} == {str(p): p.parent.name for p in files}
    right = sum(classes[expected[str(p)]] == p.parent.name for p in files)
    assert 0 < right < len(files)  # the summary is tested on a mix of right and wrong
    assert (f"top-1 against the class folders: {right} of {len(files)} ({100 * right / len(files):.1f}%)"
            in cap.err)


def test_folder_of_images_keeps_the_seed_behaviour(setup, tmp_path, capsys, one_thread):
    """A folder with images of its own: its root only (no true classes), and --recursive adds sub-folders."""
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    src = sorted(setup["val"].rglob("*.png"))
    (folder / "a.png").write_bytes(src[0].read_bytes())
    (folder / "sub" / "b.png").write_bytes(src[1].read_bytes())
    out = tmp_path / "p.json"
    base = ["infer", str(folder), "--checkpoint", str(setup["ckpt"]), "--output", str(out), "--num-workers", "0"]
    assert cli(base) == 0
    cap = capsys.readouterr()
    assert list(json.loads(out.read_text())) == [str(folder / "a.png")]
    assert "true:" not in cap.out and "against the class folders" not in cap.err
    assert cli(base + ["--recursive"]) == 0
    assert len(json.loads(out.read_text())) == 2 and "true:" not in capsys.readouterr().out


def test_folder_names_that_are_not_classes(setup, tmp_path, capsys, one_thread):
    """Class folders whose names the model does not know: true class printed, no top-1 claimed."""
    folder = tmp_path / "other"
    (folder / "zebra").mkdir(parents=True)
    (folder / "zebra" / "z.png").write_bytes(min(setup["val"].rglob("*.png")).read_bytes())
    assert cli(["infer", str(folder), "--checkpoint", str(setup["ckpt"]), "--output", str(tmp_path / "o.json"),
                "--num-workers", "0"]) == 0
    cap = capsys.readouterr()
    assert cap.out.rstrip().endswith("  true: zebra") and "against the class folders" not in cap.err
