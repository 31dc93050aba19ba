"""`vitzoo eval` / `infer` / `eval-onnx` / `infer-onnx` on a small generated folder, against direct PyTorch.

The reference numbers are computed here from the model and the data module's eval transform, not
hard-coded; the ONNX commands must reproduce the PyTorch commands' top-1 / predictions.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import main as cli
from vitzoo.data import build_eval_transform, list_images, load_image, make_shapes_dataset
from vitzoo.models import create_model

LINE = re.compile(r"^eval results: (\{'Loss': [-\d.e]+, 'Top1-Acc': [\d.e-]+, 'Top5-Acc': [\d.e-]+\})$", re.MULTILINE)
ONNX_LINE = re.compile(r"^eval results: (\{'Top1-Acc': [\d.e-]+, 'Top5-Acc': [\d.e-]+\})$", re.MULTILINE)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalinfer")
    ds = make_shapes_dataset(root / "ds", num_train=6, num_val=15, size=32, num_classes=6)
    classes = sorted(p.name for p in (ds / "train").iterdir())
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", num_classes=6, img_size=32, patch_size=4, depth=2,
                         embed_dim=48, num_heads=3).eval()
    with torch.no_grad():  # a spread-out head so that predictions differ between images
        model.head.weight.normal_(0, 1.0)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    ema["head.bias"] = torch.linspace(-3, 3, 6)
    dc = {k: list(v) if isinstance(v, tuple) else v for k, v in model.data_config.items()}
    meta = {"arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 6, "class_names": classes,
            "data_config": dc}
    ckpt = root / "ck.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "ema": ema, "meta": meta})
    return {"root": root, "ds": ds, "ckpt": ckpt, "model": model, "classes": classes, "ema": ema}


def _reference(model, setup) -> dict:
    """Loss / top-1 / top-5 computed directly: sorted class folders, the model's eval transform."""
    t = build_eval_transform(model.data_config)
    xs, ys = [], []
    for label, c in enumerate(setup["classes"]):
        for p in list_images(setup["ds"] / "val" / c):
            xs.append(t(load_image(p)))
            ys.append(label)
    x, y = torch.stack(xs), torch.tensor(ys)
    with torch.no_grad():
        out = model(x)
    top5 = out.topk(5, dim=1).indices
    return {"Loss": round(F.cross_entropy(out, y).item(), 4),
            "Top1-Acc": round((top5[:, 0] == y).float().mean().item(), 6),
            "Top5-Acc": round((top5 == y[:, None]).any(1).float().mean().item(), 6), "confusion_y": y,
            "pred": top5[:, 0]}


def _eval_args(setup, *extra) -> list[str]:
    return ["eval", "--dataset", "folder", "--data_path", str(setup["ds"]), "--pretrained", str(setup["ckpt"]),
            "--batch_size", "4", "--num_workers", "0", "--device", "cpu", *extra]


def _parse(out: str, pattern=LINE) -> dict:
    m = pattern.search(out)
    assert m, out
    return ast.literal_eval(m.group(1))


def test_eval_format_numbers_and_json(setup, tmp_path, capsys):
    js = tmp_path / "eval.json"
    assert cli(_eval_args(setup, "--json", str(js))) == 0
    got = _parse(capsys.readouterr().out)
    ref = _reference(setup["model"], setup)
    assert got == {k: ref[k] for k in ("Loss", "Top1-Acc", "Top5-Acc")}
    report = json.loads(js.read_text())
    conf = torch.tensor(report["confusion_matrix"])
    assert conf.shape == (6, 6) and int(conf.sum()) == report["num_samples"] == 15
    assert report["class_names"] == setup["classes"]
    assert abs(conf.trace().item() / 15 - report["Top1-Acc"]) < 1e-9
    expected = torch.zeros(6, 6, dtype=torch.long)
    for t, p in zip(ref["confusion_y"].tolist(), ref["pred"].tolist()):
        expected[t, p] += 1
    assert torch.equal(conf, expected)
    for row in report["per_class"]:
        i = row["index"]
        assert row["support"] == int(conf[i].sum())
        assert row["accuracy"] == pytest.approx(conf[i, i].item() / conf[i].sum().item(), abs=1e-6)


def test_eval_use_ema(setup, capsys):
    assert cli(_eval_args(setup, "--use-ema")) == 0
    got = _parse(capsys.readouterr().out)
    model = create_model("deit_tiny_patch16_224", **setup["model"].model_kwargs).eval()
    model.load_state_dict(setup["ema"])
    assert got == {k: v for k, v in _reference(model, setup).items() if k in got}
    assert cli(["eval", "--dataset", "folder", "--data_path", str(setup["ds"])]) == 2  # no --pretrained


@pytest.mark.slow  # two fresh processes importing torch: ~10 s on an idle 2-core machine
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on linux")
def test_eval_torchrun_same_numbers(setup, capsys):
    assert cli(_eval_args(setup)) == 0
    single = _parse(capsys.readouterr().out)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "vitzoo",
                           *_eval_args(setup)], capture_output=True, text=True, timeout=240, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(LINE.findall(proc.stdout)) == 1  # only rank 0 prints
    assert _parse(proc.stdout) == single


def _infer_folder(setup, tmp_path) -> Path:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    src = sorted((setup["ds"] / "val").rglob("*.png"))
    for i, p in enumerate(src[:3]):
        (folder / f"img{i}.png").write_bytes(p.read_bytes())
    (folder / "sub" / "deep.png").write_bytes(src[3].read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _direct_predictions(setup, paths) -> dict[str, int]:
    model = setup["model"]
    t = build_eval_transform(model.data_config)
    with torch.no_grad():
        out = model(torch.stack([t(load_image(p)) for p in paths]))
    return {str(p): int(i) for p, i in zip(paths, out.argmax(1).tolist())}


def test_infer_folder_with_bad_files(setup, tmp_path, capsys):
    folder = _infer_folder(setup, tmp_path)
    out = tmp_path / "pred.json"
    rc = cli(["infer", str(folder), "--checkpoint", str(setup["ckpt"]), "--output", str(out), "--batch-size", "2",
              "--device", "cpu"])
    assert rc == 0
    cap = capsys.readouterr()
    preds = json.loads(out.read_text())
    good = [folder / f"img{i}.png" for i in range(3)]
    assert preds == _direct_predictions(setup, good)  # exactly {path: int}, root only
    assert all(type(v) is int for v in preds.values())
    assert "broken.png" in cap.err and "notes.txt" in cap.err
    for path, cls in preds.items():
        assert f"{path} (class: {cls}) {setup['classes'][cls]}" in cap.out.splitlines()

    # --recursive adds sub-folders; --topk writes the richer file beside the {path: int} one
    rc = cli(["infer", str(folder), "--checkpoint", str(setup["ckpt"]), "--output", str(out), "--recursive",
              "--topk", "3", "--device", "cpu"])
    assert rc == 0
    preds = json.loads(out.read_text())
    assert str(folder / "sub" / "deep.png") in preds and len(preds) == 4
    rich = json.loads((tmp_path / "pred.topk.json").read_text())
    for path, cls in preds.items():
        assert rich[path]["class"] == cls and rich[path]["topk"][0][0] == cls and len(rich[path]["topk"]) == 3
        probs = [p for _, p in rich[path]["topk"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_infer_single_image_and_errors(setup, tmp_path, capsys):
    img = min((setup["ds"] / "val").rglob("*.png"))
    out = tmp_path / "one.json"
    assert cli(["infer", str(img), "--checkpoint", str(setup["ckpt"]), "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == _direct_predictions(setup, [img])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert cli(["infer", str(bad), "--checkpoint", str(setup["ckpt"]), "--output", str(out)]) == 2
    assert cli(["infer", str(tmp_path / "missing"), "--checkpoint", str(setup["ckpt"])]) == 2
    err = capsys.readouterr().err
    assert "vitzoo infer: error: " in err and "bad.jpg" in err and "missing" in err


def test_onnx_eval_and_infer_match_pytorch(setup, tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    assert cli(["export", "--checkpoint", str(setup["ckpt"]), "--output", str(onnx_path)]) == 0
    assert cli(_eval_args(setup)) == 0
    torch_res = _parse(capsys.readouterr().out)
    assert cli(["eval-onnx", str(setup["ds"] / "val"), "--onnx-path", str(onnx_path), "-m", "CPU",
                "--batch-size", "4", "--num-workers", "0"]) == 0
    onnx_res = _parse(capsys.readouterr().out, ONNX_LINE)
    assert onnx_res == {k: torch_res[k] for k in ("Top1-Acc", "Top5-Acc")}

    folder = _infer_folder(setup, tmp_path)
    a, b = tmp_path / "torch.json", tmp_path / "onnx.json"
    assert cli(["infer", str(folder), "--checkpoint", str(setup["ckpt"]), "--output", str(a), "--recursive"]) == 0
    torch_lines = capsys.readouterr().out
    assert cli(["infer-onnx", str(folder), "--onnx-path", str(onnx_path), "--output", str(b), "--recursive"]) == 0
    assert capsys.readouterr().out == torch_lines  # same console lines, class names included
    assert json.loads(a.read_text()) == json.loads(b.read_text()) and len(json.loads(b.read_text())) == 4
