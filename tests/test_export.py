"""`vitzoo export`: ONNX / TorchScript / torch.export of one tiny model per family, checked against PyTorch.

Each exported file is reloaded here independently of the exporter's own verification and run on a batch
size that differs from the one used for tracing (the batch axis must be dynamic).
"""
from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
import torch

from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import export as export_cli
from vitzoo.cli import main as cli
from vitzoo.deploy.metadata import export_metadata, parse_metadata, read_torchscript_metadata
from vitzoo.deploy.onnx_runtime import create_session, fixed_batch, run_session, session_metadata
from vitzoo.models import create_model

FAMILIES = {
    "deit": ("deit_tiny_patch16_224", {"patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 3}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224",
                       {"patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 3}),
    "t2t": ("t2t_vit_7", {"embed_dim": 48, "depth": 2, "num_heads": 3}),
    "t2t_transformer": ("t2t_vit_t_14", {"embed_dim": 48, "depth": 2, "num_heads": 3}),
    "beit": ("beit_base_patch16_224", {"patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 3}),
}
CLASSES = ["a", "b", "c", "d", "e"]


def _checkpoint(tmp_path, family: str):
    arch, kw = FAMILIES[family]
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5, img_size=32, **kw).eval()
    if family == "beit":  # non-trivial relative position bias and layer scale
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "relative_position_bias_table" in name or "gamma" in name:
                    p.normal_(0, 0.3)
    dc = {k: list(v) if isinstance(v, tuple) else v for k, v in model.data_config.items()}
    meta = {"arch": arch, "model_kwargs": model.model_kwargs, "num_classes": 5, "class_names": CLASSES,
            "data_config": dc}
    path = tmp_path / f"{family}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "meta": meta})
    return model, path


def _x(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(123))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_matches_pytorch(tmp_path, family, capsys):
    model, ckpt = _checkpoint(tmp_path, family)
    out = tmp_path / "m.onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--file-format", "ONNX", "--output", str(out)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    sess = create_session(out, "CPU")
    assert fixed_batch(sess) is None  # dynamic batch axis
    x = _x(5)
    got = run_session(sess, x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (5, 5)
    assert np.abs(got - ref).max() < 1e-4
    meta = session_metadata(sess)
    assert meta["arch"] == FAMILIES[family][0] and meta["class_names"] == CLASSES and meta["gelu"] == "exact"
    assert meta["data_config"] == json.loads(json.dumps(model.data_config))  # tuples -> lists
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "Tanh" not in ops  # exact GELU by default (erf), not the tanh approximation


@pytest.mark.parametrize("family", ["deit", "deit_distilled", "t2t", "beit"])
def test_torchscript_matches_pytorch(tmp_path, family):
    model, ckpt = _checkpoint(tmp_path, family)
    out = tmp_path / "m.pt"
    assert cli(["export", "--checkpoint", str(ckpt), "--file-format", "TORCHSCRIPT", "--output", str(out)]) == 0
    loaded = torch.jit.load(str(out))
    x = _x(4)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-4
    meta = read_torchscript_metadata(out)
    assert meta["arch"] == FAMILIES[family][0] and meta["class_names"] == CLASSES
    assert meta["data_config"]["input_size"] == [3, 32, 32]


def test_exported_program_with_sidecar(tmp_path):
    model, ckpt = _checkpoint(tmp_path, "deit")
    out = tmp_path / "m.pt2"
    assert cli(["export", "--checkpoint", str(ckpt), "--file-format", "EXPORTED_PROGRAM", "--output", str(out)]) == 0
    ep = torch.export.load(str(out))
    x = _x(6)
    with torch.no_grad():
        assert (ep.module()(x) - model(x)).abs().max() < 1e-4
    side = json.loads((tmp_path / "m.pt2.json").read_text())
    assert side["arch"] == "deit_tiny_patch16_224" and json.loads(side["class_names"]) == CLASSES


def test_fixed_batch_fp16_and_fix_gelu(tmp_path):
    model, ckpt = _checkpoint(tmp_path, "deit")
    fixed = tmp_path / "b2.onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(fixed), "--batch", "2"]) == 0
    sess = create_session(fixed, "CPU")
    assert fixed_batch(sess) == 2
    x = _x(5)  # run_session pads / splits to the fixed batch
    with torch.no_grad():
        assert np.abs(run_session(sess, x.numpy()) - model(x).numpy()).max() < 1e-4

    half = tmp_path / "fp16.onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(half), "--fp16"]) == 0
    sess = create_session(half, "CPU")
    assert sess.get_inputs()[0].type == "tensor(float16)"
    with torch.no_grad():
        assert np.abs(run_session(sess, x.numpy()) - model(x).numpy()).max() < 2e-2

    tanh = tmp_path / "tanh.onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(tanh), "--fix-gelu"]) == 0
    assert "Tanh" in {n.op_type for n in onnx.load(str(tanh)).graph.node}
    assert session_metadata(create_session(tanh, "CPU"))["gelu"] == "tanh"


def test_precision_names_the_same_files_as_the_flags(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, "deit")
    base = ["export", "--checkpoint", str(ckpt)]
    assert cli(base + ["--output", str(tmp_path / "h.onnx"), "--precision", "fp16"]) == 0
    assert create_session(tmp_path / "h.onnx", "CPU").get_inputs()[0].type == "tensor(float16)"
    assert cli(base + ["--output", str(tmp_path / "q.onnx"), "--precision", "int8"]) == 0
    assert session_metadata(create_session(tmp_path / "q.onnx", "CPU"))["quantization"] == "int8 dynamic"
    assert (tmp_path / "q.fp32.onnx").is_file()
    assert cli(base + ["--output", str(tmp_path / "a.onnx"), "--precision", "auto"]) == 0
    assert create_session(tmp_path / "a.onnx", "CPU").get_inputs()[0].type == "tensor(float)"
    capsys.readouterr()
    assert cli(base + ["--output", str(tmp_path / "b.onnx"), "--precision", "bf16"]) == 2
    assert "--engine openvino" in capsys.readouterr().err and not (tmp_path / "b.onnx").exists()
    assert cli(base + ["--output", str(tmp_path / "c.onnx"), "--precision", "int8", "--fp16"]) == 2
    assert "contradicts --fp16" in capsys.readouterr().err


def test_verification_failure_and_bad_input(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, "deit")
    # an impossible tolerance: the ONNX kernels differ from PyTorch's by ~1e-7, so verification must fail
    rc = cli(["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "m.onnx"), "--tolerance", "1e-15"])
    assert rc == 2 and "differs from PyTorch" in capsys.readouterr().err
    assert cli(["export", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert cli(["export", "--checkpoint", str(ckpt), "--batch", "zero"]) == 2
    assert "--batch" in capsys.readouterr().err


@pytest.mark.parametrize("opset, says", [(5, "need opset 14 or later"), (99, "could not export at opset 99")])
def test_an_opset_the_exporter_cannot_write_is_one_line(tmp_path, capsys, opset, says):
    _, ckpt = _checkpoint(tmp_path, "deit")
    out = tmp_path / "m.onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--output", str(out), "--opset", str(opset)]) == 2
    err = capsys.readouterr().err
    assert says in err.strip().splitlines()[-1] and "Traceback" not in err
    assert list(tmp_path.glob("*.onnx*")) == []  # nothing half-written left behind


def test_metadata_round_trip_and_malformed_values():
    model = create_model("deit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=4, embed_dim=48,
                         depth=2, num_heads=3)
    props = export_metadata(model, {"class_names": CLASSES}, fix_gelu=True, batch="4", fp16=True)
    assert all(isinstance(v, str) for v in props.values())  # ONNX metadata_props holds strings only
    assert set(props) == {"arch", "num_classes", "model_kwargs", "data_config", "class_names", "gelu",
                          "producer", "batch", "dtype"}
    meta = parse_metadata(props)
    assert meta["arch"] == "deit_tiny_patch16_224" and meta["num_classes"] == 5
    assert meta["class_names"] == CLASSES and meta["model_kwargs"] == json.loads(json.dumps(model.model_kwargs))
    assert meta["data_config"]["input_size"] == [3, 32, 32]
    assert (meta["gelu"], meta["batch"], meta["dtype"]) == ("tanh", "4", "float16")
    broken = parse_metadata({"num_classes": "many", "class_names": "[", "data_config": "{", "extra": "x"})
    assert broken == {"num_classes": 0, "class_names": [], "data_config": {}, "extra": "x"}


def test_help_names_only_real_options_and_format_is_an_alias(tmp_path):
    parser = export_cli.build_parser()
    options = {o for action in parser._actions for o in action.option_strings}
    text = parser.format_help() + export_cli.__doc__  # the options the help and the module docstring name
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text))
    assert mentioned <= options, mentioned - options
    _, ckpt = _checkpoint(tmp_path, "deit")
    out = tmp_path / "m.pt"
    assert cli(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--output", str(out)]) == 0
    assert read_torchscript_metadata(out)["arch"] == "deit_tiny_patch16_224"
