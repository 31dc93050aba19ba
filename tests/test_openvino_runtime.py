"""vitzoo.deploy.openvino_runtime: the same exported file in OpenVINO and in ONNX Runtime (CPU, seconds).

The reference is ONNX Runtime on the same file (itself checked against PyTorch by test_export.py): at the
f32 hint the two engines must give the same logits, metadata, preprocessing and command output.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import main as cli
from vitzoo.data import make_shapes_dataset
from vitzoo.deploy.onnx_runtime import (
    class_names_of,
    create_session,
    data_config_for,
    open_model,
    run_session,
    session_metadata,
)
from vitzoo.errors import UserError
from vitzoo.models import create_model
from vitzoo.runtime.cpu import cpu_bf16_units

pytest.importorskip("openvino")  # a dev dependency: CI has it; a plain install may not

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 48, "num_heads": 3}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny DeiT's checkpoint exported to ONNX (fp32 and dynamic int8) and generated validation images."""
    root = tmp_path_factory.mktemp("ov")
    ds = make_shapes_dataset(root / "ds", num_train=5, num_val=24, size=32, num_classes=3)
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", num_classes=3, **TINY).eval()
    classes = sorted(p.name for p in (ds / "val").iterdir())
    dc = {k: list(v) if isinstance(v, tuple) else v for k, v in model.data_config.items()}
    meta = {"arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 3, "class_names": classes,
            "data_config": dc}
    save_checkpoint(root / "ck.pt", {"model": model.state_dict(), "meta": meta})
    fp32, int8 = root / "m.onnx", root / "m-int8.onnx"
    assert cli(["export", "--checkpoint", str(root / "ck.pt"), "--output", str(fp32)]) == 0
    assert cli(["export", "--checkpoint", str(root / "ck.pt"), "--output", str(int8), "--quantize", "int8"]) == 0
    return {"fp32": fp32, "int8": int8, "val": ds / "val", "root": root}


def test_fp32_hint_gives_onnx_runtimes_logits_and_metadata(exported):
    ort = create_session(exported["fp32"], "CPU")
    ov = open_model(exported["fp32"], "CPU", "openvino", "fp32")
    assert ov.precision == "fp32"
    assert session_metadata(ov) == session_metadata(ort) and session_metadata(ov)["arch"] == "deit_tiny_patch16_224"
    assert class_names_of(ov) == class_names_of(ort) and data_config_for(ov) == data_config_for(ort)
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32), dtype=np.float32)  # a batch size never seen
    a, b = run_session(ort, x), run_session(ov, x)
    assert a.shape == b.shape == (5, 3)
    assert np.abs(a - b).max() < 1e-4 * max(1.0, np.abs(a).max())


def test_bf16_stays_close_to_fp32(exported):
    ort = create_session(exported["fp32"], "CPU")
    ov = open_model(exported["fp32"], "CPU", "openvino", "bf16")
    x = np.random.default_rng(1).standard_normal((8, 3, 32, 32), dtype=np.float32)
    a, b = run_session(ort, x), run_session(ov, x)
    scale = np.abs(a).max()
    if cpu_bf16_units():
        assert ov.precision == "bf16" and "asked for" not in ov.describe()
        assert 0 < np.abs(a - b).max() < 0.1 * scale  # bf16 rounding: different numbers, same function
    else:  # OpenVINO keeps f32 without bf16 units, and vitzoo says so
        assert ov.precision == "fp32" and "not the bf16 asked for" in ov.describe()
        assert np.abs(a - b).max() < 1e-4 * scale


@pytest.mark.parametrize("ratio", [0.76, 2.0])
def test_auto_keeps_the_plugins_16_bit_choice_only_where_it_measures_faster(exported, monkeypatch, ratio):
    # measured on a Xeon with avx512_bf16 and no AMX: OpenVINO's bf16 default ran 0.76x its f32 hint
    import openvino as ov

    from vitzoo.deploy import openvino_runtime as OV

    monkeypatch.setattr(OV, "_time_ratio", lambda fp32, low, x: ratio)
    session = open_model(exported["fp32"], "CPU", "openvino", "bf16")
    session.precision = "bf16"  # what the plugin reports by default on a CPU with bf16 units
    config = {"PERFORMANCE_HINT": "LATENCY"}
    session._keep_the_faster(ov.Core(), exported["fp32"], config)
    assert session.precision == ("fp32" if ratio < 1.1 else "bf16")
    assert f"measured {ratio:.2f}x fp32" in session.describe()
    monkeypatch.setattr(OV, "_time_ratio", lambda *a: pytest.fail("timed twice"))
    session.precision = "bf16"
    session._keep_the_faster(ov.Core(), exported["fp32"], config)  # the next run: remembered
    assert "remembered from an earlier run" in session.describe()

    def fails(*args):
        raise RuntimeError("Input shape mismatch\nmore")  # e.g. a foreign file with a free image size

    monkeypatch.setattr(OV, "remembered", lambda key, measure: measure())
    monkeypatch.setattr(OV, "_time_ratio", fails)
    session.precision = "bf16"
    session._keep_the_faster(ov.Core(), exported["fp32"], config)
    assert session.precision == "bf16" and "not timed (Input shape mismatch)" in session.describe()


def test_auto_timing_runs_and_auto_is_a_real_choice_here(exported):
    fp32 = open_model(exported["fp32"], "CPU", "openvino", "fp32")
    from vitzoo.deploy.openvino_runtime import _time_ratio

    assert _time_ratio(fp32.compiled, fp32.compiled, np.zeros((2, 3, 32, 32), np.float32), rounds=1) > 0
    auto = open_model(exported["fp32"], "CPU", "openvino", "auto")
    assert auto.precision in ("fp32", "bf16", "fp16")
    assert (auto.precision == "fp32") or "measured" in auto.describe()  # a 16-bit choice is a measured one


def test_eval_onnx_openvino_matches_onnx_runtime_and_reports_the_bf16_change(exported, capsys):
    base = ["eval-onnx", str(exported["val"]), "--onnx-path", str(exported["fp32"]), "-m", "CPU",
            "--num-workers", "0"]
    assert cli(base) == 0
    ort = ast.literal_eval(capsys.readouterr().out.split("eval results: ")[1].splitlines()[0])
    assert cli(base + ["--engine", "openvino", "--precision", "fp32"]) == 0
    cap = capsys.readouterr()
    assert ast.literal_eval(cap.out.split("eval results: ")[1].splitlines()[0]) == ort
    assert "engine: OpenVINO" in cap.err and "inference precision fp32" in cap.err
    assert " vs " not in cap.out  # fp32: nothing to compare
    assert cli(base + ["--engine", "openvino", "--precision", "bf16"]) == 0
    cap = capsys.readouterr()
    if cpu_bf16_units():
        assert f"vs {exported['fp32']} on the same 24 images: top-1 {round(ort['Top1-Acc'], 6)} ->" in cap.out
    else:  # fp32 after all: said on stderr, nothing to compare
        assert "not the bf16 asked for" in cap.err and " vs " not in cap.out


def test_infer_onnx_openvino_writes_the_same_predictions(exported):
    outs = {}
    for engine in ("onnxruntime", "openvino"):
        path = exported["root"] / f"pred-{engine}.json"
        extra = ["--engine", engine] + (["--precision", "fp32"] if engine == "openvino" else [])
        assert cli(["infer-onnx", str(exported["val"]), "--recursive", "--onnx-path", str(exported["fp32"]),
                    "-m", "CPU", "--output", str(path), *extra]) == 0
        outs[engine] = json.loads(path.read_text())
    assert len(outs["openvino"]) == 24 and outs["openvino"] == outs["onnxruntime"]


FREED_IN_ORDER = """
import gc, os, signal, sys
from vitzoo.deploy.onnx_runtime import open_model
first = open_model(sys.argv[1], "CPU", "openvino", "fp32")
second = open_model(sys.argv[1], "CPU", "openvino", "fp32")
del first; gc.collect()
del second; gc.collect()
signal.signal(signal.SIGUSR1, lambda *a: print("handled"))
os.kill(os.getpid(), signal.SIGUSR1)
"""


def test_a_signal_after_two_models_are_freed_is_handled(exported):
    # OpenVINO leaves the thread's alternate signal stack on unmapped memory when two of its models are
    # freed in the order they were made: the next handled signal was a SIGSEGV (rc -11) before the fix
    res = subprocess.run([sys.executable, "-X", "faulthandler", "-c", FREED_IN_ORDER, str(exported["fp32"])],
                         capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": SRC})
    assert res.returncode == 0 and "handled" in res.stdout, (res.returncode, res.stderr[-1000:])


def test_refusals_are_one_line_user_errors(exported, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="int8 dynamic files are written for ONNX Runtime"):
        open_model(exported["int8"], "CPU", "openvino")
    with pytest.raises(UserError, match="runs on the CPU"):
        open_model(exported["fp32"], "GPU", "openvino")
    with pytest.raises(UserError, match="--precision applies to --engine openvino"):
        open_model(exported["fp32"], "CPU", "onnxruntime", "bf16")
    with pytest.raises(UserError, match="not found"):
        open_model(tmp_path / "missing.onnx", "CPU", "openvino")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(UserError, match="junk.onnx"):
        open_model(junk, "CPU", "openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(UserError, match="pip install openvino"):
        open_model(exported["fp32"], "CPU", "openvino")
