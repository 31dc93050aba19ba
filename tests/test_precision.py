"""The precision policy (``vitzoo.runtime.precision``): what ``auto`` chooses on which hardware (units mocked),
that the choice is printed once, and accuracy guards on a model trained here: bf16 evaluation against
fp32, int8 (eval and infer) against fp32, and the int8 ONNX export (loads, agrees with fp32, ``eval-onnx``
reports the change)."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import FrozenInstanceError, replace

import onnx
import pytest
import torch
import torch.nn.functional as F

from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import main as cli
from vitzoo.data import build_eval_transform, list_images, load_image, make_shapes_dataset
from vitzoo.deploy.onnx_runtime import create_session, session_metadata
from vitzoo.deploy.quantize import compare_sessions
from vitzoo.engine.loop import evaluate
from vitzoo.errors import UserError
from vitzoo.models import create_model
from vitzoo.runtime import bf16_timing, cpu, timing_cache
from vitzoo.runtime import precision as P

CPU = torch.device("cpu")
TINY = {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 48, "num_heads": 3}


@pytest.fixture(autouse=True)
def fresh_policy(monkeypatch):
    """Each test decides anew (the policy caches one decision per model and process)."""
    monkeypatch.setattr(P, "_decided", {})


def _mock_cpu(monkeypatch, flags: set[str], speedup: float = 2.0):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    calls = []

    def measured(model, device, **kw):
        calls.append(model)
        return speedup

    monkeypatch.setattr(P, "measure_bf16_speedup", measured)
    return calls


def test_auto_on_cpu_without_bf16_units_is_fp32(monkeypatch, capsys):
    calls = _mock_cpu(monkeypatch, {"avx2", "avx512f"})
    model = create_model("deit_tiny_patch16_224")
    prec = P.inference_precision("auto", CPU, model)
    assert prec.weights is None and prec.autocast is None and not calls  # nothing to measure
    assert prec.reason == P.NO_UNITS and prec.bf16_units == () and prec.measured is None
    assert capsys.readouterr().err == f"precision: {prec.describe()}\n"


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"amx_bf16", "amx_tile"}])
def test_auto_on_bf16_cpu_picks_bf16_when_measured_faster(monkeypatch, capsys, flags):
    calls = _mock_cpu(monkeypatch, flags, speedup=1.8)
    model = create_model("deit_tiny_patch16_224")
    prec = P.inference_precision("auto", CPU, model)
    assert prec.weights == torch.bfloat16 and prec.autocast is None and len(calls) == 1
    assert (prec.reason, prec.measured, prec.remembered, set(prec.bf16_units)) == (P.MEASURED, 1.8, False, flags & set(cpu.BF16_CPU_FLAGS))
    assert P.inference_precision("auto", CPU, model) is prec and len(calls) == 1  # measured once
    assert capsys.readouterr().err.splitlines() == [f"precision: {prec.describe()}"]  # printed once


def test_auto_keeps_fp32_when_bf16_is_not_faster_or_model_is_tiny(monkeypatch):
    calls = _mock_cpu(monkeypatch, {"avx512_bf16"}, speedup=1.02)
    kept = P.inference_precision("auto", CPU, create_model("deit_tiny_patch16_224"), announce=False)
    assert kept.weights is None and (kept.reason, kept.measured) == (P.MEASURED, 1.02) and len(calls) == 1
    tiny = create_model("deit_tiny_patch16_224", **TINY)
    assert P.approx_flops(tiny) < P.MIN_AUTO_FLOPS  # too short a forward to time: fp32, no measurement
    small = P.inference_precision("auto", CPU, tiny, announce=False)
    assert small.weights is None and small.reason == P.TOO_SMALL and small.mflops < 100 and len(calls) == 1


def test_explicit_choices_and_config_mapping(monkeypatch):
    _mock_cpu(monkeypatch, set())
    bf16 = P.inference_precision("bf16", CPU, announce=False)
    assert bf16.weights == torch.bfloat16 and bf16.reason == P.ASKED and bf16.bf16_units == ()  # run, its cost said
    assert P.NO_BF16_UNITS in bf16.describe()
    assert P.inference_precision("fp32", CPU, announce=False).weights is None
    assert P.inference_precision("fp16", CPU, announce=False).autocast == torch.float16
    pairs = (("O0", "bf16"), ("O1", "auto"), ("O3", "fp16"), ("O0", "int8"))  # int8 is asked for by name
    assert [P.config_precision_choice(*a) for a in pairs] == ["fp32", "auto", "fp16", "int8"]
    with pytest.raises(P.UserError):
        P.inference_precision("int4", CPU)


def test_real_cpu_flags_and_measurement_run():
    assert isinstance(cpu.cpu_flags(), frozenset) and isinstance(cpu.cpu_model(), str)
    assert cpu.int8_weight_bits() == (8 if set(cpu.INT8_VNNI_FLAGS) & cpu.cpu_flags() else 7)
    tiny = create_model("deit_tiny_patch16_224", **TINY).eval()
    assert bf16_timing.measure_bf16_speedup(tiny, CPU, rounds=1) > 0 and not tiny.training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DeiT trained for a few epochs on generated shapes (so its logits are those of a model that
    learned, not of random weights), its checkpoint and the validation images."""
    root = tmp_path_factory.mktemp("prec")
    ds = make_shapes_dataset(root / "ds", num_train=200, num_val=60, size=32, num_classes=4)
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    model = create_model("deit_tiny_patch16_224", num_classes=4, **TINY)
    t = build_eval_transform(model.data_config)
    classes = sorted(p.name for p in (ds / "train").iterdir())

    def load(split):
        xs, ys = [], []
        for label, c in enumerate(classes):
            for p in list_images(ds / split / c):
                xs.append(t(load_image(p)))
                ys.append(label)
        return torch.stack(xs), torch.tensor(ys)

    (xt, yt), (xv, yv) = load("train"), load("val")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(15):
        for i in torch.randperm(len(xt)).split(25):
            opt.zero_grad()
            F.cross_entropy(model(xt[i]), yt[i]).backward()
            opt.step()
    torch.set_num_threads(n)
    model.eval()
    dc = {k: list(v) if isinstance(v, tuple) else v for k, v in model.data_config.items()}
    meta = {"arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 4, "class_names": classes,
            "data_config": dc}
    ckpt = root / "ck.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "meta": meta})
    return {"model": model, "xv": xv, "yv": yv, "ds": ds, "ckpt": ckpt}


def test_bf16_accuracy_guard(trained):
    """bf16 eval top-1 within 0.2 points of fp32 (issue 12). With N = 60 validation images one image is
    1.67 points, so the check that can be made here is stronger and stated as such: at most one of the
    N predictions may differ (|top-1 change| <= 1/N), and the logits' max abs difference is reported."""
    model, xv, yv = trained["model"], trained["xv"], trained["yv"]
    loader = [(xv[i:i + 20], yv[i:i + 20]) for i in range(0, len(xv), 20)]
    fp32 = evaluate(model, loader, CPU)
    assert fp32["Top1-Acc"] >= 0.5  # well above chance (0.25): the guard compares real predictions
    bf16 = P.Precision(weights=torch.bfloat16)
    low = bf16.cast_model(create_model("deit_tiny_patch16_224", num_classes=4, **TINY))
    low.load_state_dict(model.state_dict())
    low.eval()
    got = evaluate(low, loader, CPU, precision=bf16)
    with torch.inference_mode():
        a, b = model(xv), low(bf16.cast_input(xv)).float()
    diff = (a - b).abs().max().item()
    changed = int((a.argmax(1) != b.argmax(1)).sum())
    print(f"bf16 vs fp32 on {len(xv)} images: top-1 {got['Top1-Acc']:.4f} vs {fp32['Top1-Acc']:.4f}, "
          f"{changed} prediction(s) changed, logits max|diff| {diff:.4f} (logit range "
          f"{a.min().item():.2f}..{a.max().item():.2f})")
    assert changed <= 1 and abs(got["Top1-Acc"] - fp32["Top1-Acc"]) <= 1 / len(xv) + 1e-9
    assert diff < 0.05 * a.abs().max().item()  # bf16 keeps ~3 significant digits


def test_infer_precision_flag(trained, tmp_path, capsys):
    val = trained["ds"] / "val" / min(p.name for p in (trained["ds"] / "val").iterdir())
    out32, out16 = tmp_path / "a.json", tmp_path / "b.json"
    assert cli(["infer", str(val), "--checkpoint", str(trained["ckpt"]), "--output", str(out32),
                "--precision", "fp32", "--device", "cpu"]) == 0
    assert "precision: fp32 (asked for)" in capsys.readouterr().err
    assert cli(["infer", str(val), "--checkpoint", str(trained["ckpt"]), "--output", str(out16),
                "--precision", "bf16", "--device", "cpu"]) == 0
    assert "precision: bf16 weights (asked for" in capsys.readouterr().err
    a, b = json.loads(out32.read_text()), json.loads(out16.read_text())
    assert a.keys() == b.keys() and sum(a[k] != b[k] for k in a) <= 1


def test_infer_loader_workers_give_the_same_predictions(trained, tmp_path, capsys):
    """Decoding in loader workers (batches in order, bad files split off) = decoding in the main process."""
    val = trained["ds"] / "val"
    (val / "broken.png").write_bytes(b"not a png")
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}.json"
        assert cli(["infer", str(val), "--recursive", "--checkpoint", str(trained["ckpt"]), "--output", str(out),
                    "--batch-size", "7", "--num-workers", workers, "--precision", "fp32", "--device", "cpu"]) == 0
        outs.append(json.loads(out.read_text()))
        assert "broken.png" in capsys.readouterr().err
    assert outs[0] == outs[1] and len(outs[0]) == 60
    (val / "broken.png").unlink()


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_export_int8_loads_agrees_and_eval_onnx_reports_change(trained, tmp_path, capsys, mode):
    out = tmp_path / "m.onnx"
    calib = ["--calibration-data", str(trained["ds"] / "train"), "--calibration-images", "40"]
    assert cli(["export", "--checkpoint", str(trained["ckpt"]), "--output", str(out), "--quantize", "int8",
                "--quantize-mode", mode, *(calib if mode == "static" else [])]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "m.fp32.onnx").is_file() and f"int8 {mode}" in text
    int8, fp32 = create_session(out, "CPU"), create_session(tmp_path / "m.fp32.onnx", "CPU")
    assert session_metadata(int8)["quantization"] == f"int8 {mode}"
    proto = onnx.load(out)
    assert any("QuantizeLinear" in n.op_type or "Integer" in n.op_type for n in proto.graph.node)  # really int8
    # 7-bit weights: uint8 x int8 pairs summed in int16 (VPMADDUBSW, CPUs without VNNI) cannot saturate
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and 2 * 255 * max(int(abs(w.astype(int)).max()) for w in weights) <= 2**15 - 1
    cmp = compare_sessions(int8, fp32, trained["xv"].numpy())
    print(f"int8 {mode} vs fp32 on 60 images: top-1 agreement {cmp['top1_agree']:.3f}, "
          f"max|diff| {cmp['max_abs_diff']:.3f} (max |logit| {cmp['max_abs_logit']:.2f})")
    assert cmp["top1_agree"] >= 0.9 and cmp["max_abs_diff"] < 0.25 * cmp["max_abs_logit"]
    assert cli(["eval-onnx", str(trained["ds"] / "val"), "--onnx-path", str(out), "-m", "CPU",
                "--num-workers", "0"]) == 0
    assert re.search(r"vs .*m\.fp32\.onnx on the same 60 images: top-1 [\d.]+ -> [\d.]+ \([-+]\d+\.\d\d points\)",
                     capsys.readouterr().out)


@pytest.mark.parametrize("flags, bits", [({"avx512_vnni"}, 8), ({"amx_int8", "amx_tile"}, 8), ({"avx2"}, 7)])
def test_int8_weights_have_8_bits_where_the_cpu_sums_in_int32(monkeypatch, capsys, flags, bits):
    _mock_cpu(monkeypatch, flags)
    monkeypatch.setattr(P, "int8_available", lambda: True)
    prec = P.inference_precision("int8", CPU)
    assert prec.int8_weight_bits == bits and prec.weights is None and prec.autocast is None and not prec.pack
    assert (prec.dtype, prec.reason, set(prec.int8_units)) == ("int8", P.ASKED, flags & set(cpu.INT8_VNNI_FLAGS))
    assert capsys.readouterr().err == f"precision: {prec.describe()}\n"
    assert P.inference_precision("auto", CPU, create_model("deit_tiny_patch16_224")).int8_weight_bits is None


@pytest.mark.parametrize("flags, hint", [({"avx512_bf16", "avx512_vnni"}, "would use its avx512_vnni units"),
                                         ({"avx512_bf16"}, "would run faster (7-bit weights: this CPU has no VNNI)"),
                                         ({"avx2"}, "would run faster (7-bit weights: this CPU has no VNNI)")])
def test_auto_keeping_fp32_names_int8(monkeypatch, flags, hint):
    _mock_cpu(monkeypatch, flags, speedup=0.6)  # bf16 measured slower, or no bf16 units: fp32 kept
    monkeypatch.setattr(P, "int8_available", lambda: True)
    prec = P.inference_precision("auto", CPU, create_model("deit_tiny_patch16_224"), announce=False)
    assert prec.weights is None and prec.int8_weight_bits is None  # int8 is never chosen silently
    assert prec.int8_hint and prec.describe().startswith("fp32 (auto") and f"; int8, asked for by name, {hint}" in prec.describe()
    small = create_model("deit_tiny_patch16_224", num_classes=4, **TINY)  # too small to time: no hint
    assert not P.inference_precision("auto", CPU, small, announce=False).int8_hint
    monkeypatch.setattr(P, "int8_available", lambda: False)  # no oneDNN int8 ops (or not x86): no hint
    monkeypatch.setattr(P, "_decided", {})
    assert not P.inference_precision("auto", CPU, create_model("deit_tiny_patch16_224"), announce=False).int8_hint


def test_int8_where_it_cannot_run_is_one_line(monkeypatch, trained, capsys, tmp_path):
    with pytest.raises(UserError, match="int8 runs on a CPU"):
        P.inference_precision("int8", torch.device("cuda"))
    with pytest.raises(UserError, match="int8 is for inference"):
        P.resolve_precision("O1", "int8", CPU)
    base = ["--dataset", "folder", "--data_path", str(trained["ds"]), "--amp_dtype", "int8", "--device", "cpu",
            "--output_dir", str(tmp_path / "run")]
    for argv in (["bench", "--model", "deit_tiny_patch16_224", "--precision", "int8", "--mode", "train"],
                 ["train", "--model", "deit_tiny_patch16_224", *base], ["pretrain", "--model", "beit_base_patch16_224", *base]):
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "int8 is for inference" in err[0], argv
    monkeypatch.setattr(P, "int8_available", lambda: False)  # e.g. an ARM CPU: ONNX Runtime's route is named
    assert cli(["infer", str(trained["ds"] / "val"), "--checkpoint", str(trained["ckpt"]), "--recursive",
                "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vitzoo export --precision int8" in err[0]


@pytest.mark.skipif(not P.int8_available(), reason="torch without oneDNN's int8 ops, or not an x86 CPU")
def test_int8_accuracy_guard_eval_and_infer(trained, tmp_path, capsys):
    """int8 top-1 within 0.5 points of fp32 (issue 12): with N = 60 images (1.67 points each) at most one
    of the predictions may change; eval --amp_dtype int8 and infer --precision int8 run it end to end."""
    model, xv, yv = trained["model"], trained["xv"], trained["yv"]
    loader = [(xv[i:i + 20], yv[i:i + 20]) for i in range(0, len(xv), 20)]
    fp32 = evaluate(model, loader, CPU)
    int8 = P.int8_precision()
    low = create_model("deit_tiny_patch16_224", num_classes=4, **TINY)
    low.load_state_dict(model.state_dict())
    low = int8.cast_model(low.eval())
    got = evaluate(low, loader, CPU, precision=int8)
    with torch.inference_mode():
        a, b = model(xv), low(xv)
    changed = int((a.argmax(1) != b.argmax(1)).sum())
    with capsys.disabled():
        print(f"int8 vs fp32 on {len(xv)} images: top-1 {got['Top1-Acc']:.4f} vs {fp32['Top1-Acc']:.4f}, "
              f"{changed} prediction(s) changed, logits max|diff| {(a - b).abs().max().item():.4f}")
    assert changed <= 1 and abs(got["Top1-Acc"] - fp32["Top1-Acc"]) <= 1 / len(xv) + 1e-9
    assert 0 < (a - b).abs().max().item() < 0.1 * a.abs().max().item()  # int8, and close
    assert cli(["eval", "--dataset", "folder", "--data_path", str(trained["ds"]), "--pretrained",
                str(trained["ckpt"]), "--batch_size", "20", "--num_workers", "0", "--device", "cpu",
                "--amp_dtype", "int8"]) == 0
    cap = capsys.readouterr()
    top1 = ast.literal_eval(cap.out.split("eval results: ")[1].splitlines()[0])["Top1-Acc"]
    assert "precision: int8 (asked for" in cap.err and abs(top1 - fp32["Top1-Acc"]) <= 1 / 60 + 1e-5
    # and the change against the checkpoint's fp32 model on the same images, as eval-onnx reports it
    change = re.search(r"vs fp32 on the same images: top-1 ([\d.]+) -> ([\d.]+) \(([-+]\d+\.\d\d) points\)", cap.out)
    assert change and float(change[2]) == round(top1, 6) and abs(float(change[1]) - fp32["Top1-Acc"]) < 1e-6
    assert float(change[3]) == pytest.approx(100 * (float(change[2]) - float(change[1])), abs=0.01)
    out32, out8 = tmp_path / "a.json", tmp_path / "b.json"
    for out, choice in ((out32, "fp32"), (out8, "int8")):
        assert cli(["infer", str(trained["ds"] / "val"), "--recursive", "--checkpoint", str(trained["ckpt"]),
                    "--output", str(out), "--precision", choice, "--device", "cpu", "--num-workers", "0"]) == 0
    a, b = json.loads(out32.read_text()), json.loads(out8.read_text())
    assert a.keys() == b.keys() and len(a) == 60 and sum(a[k] != b[k] for k in a) <= 1


@pytest.mark.skipif(not P.int8_available(), reason="torch without oneDNN's int8 ops, or not an x86 CPU")
def test_int8_calibrated_infer_does_not_depend_on_the_batch(trained, tmp_path, capsys):
    """infer --precision int8 --calibration-data: the same probabilities for an image whatever its batch
    (per-call ranges: not so); eval takes the same flags; misuse is one line before the weights load."""
    ckpt, val, train = str(trained["ckpt"]), str(trained["ds"] / "val"), str(trained["ds"] / "train")
    runs = {}
    for calibrated in (False, True):
        for batch in (1, 7):
            out = tmp_path / f"{calibrated}-{batch}.json"
            extra = ["--calibration-data", train, "--calibration-images", "20"] if calibrated else []
            assert cli(["infer", val, "--recursive", "--checkpoint", ckpt, "--output", str(out), "--precision",
                        "int8", "--device", "cpu", "--num-workers", "0", "--batch-size", str(batch), "--topk", "2",
                        *extra]) == 0
            runs[calibrated, batch] = json.loads(out.with_suffix(".topk.json").read_text())
    err = capsys.readouterr().err
    assert "calibrated on 20 image(s)" in err and "ranges per batch" in err  # and, without, how to fix them

    def largest_gap(a: dict, b: dict) -> float:
        return max(abs(p - q) for k in a for (_, p), (_, q) in zip(a[k]["topk"], b[k]["topk"], strict=True))

    assert largest_gap(runs[False, 1], runs[False, 7]) > 1e-4
    assert largest_gap(runs[True, 1], runs[True, 7]) < 1e-5
    assert cli(["eval", "--dataset", "folder", "--data_path", str(trained["ds"]), "--pretrained", ckpt,
                "--batch_size", "20", "--num_workers", "0", "--device", "cpu", "--amp_dtype", "int8",
                "--calibration_data", train]) == 0
    assert "vs fp32 on the same images" in capsys.readouterr().out
    for argv, culprit in ((["infer", val, "--checkpoint", ckpt, "--calibration-data", train], "--precision int8"),
                          (["infer", val, "--checkpoint", ckpt, "--precision", "int8", "--calibration-data",
                            str(tmp_path / "none")], "no such folder"),
                          (["infer", val, "--checkpoint", ckpt, "--precision", "int8", "--calibration-data", ckpt],
                           "is not a folder"),
                          (["eval", "--dataset", "folder", "--data_path", str(trained["ds"]), "--pretrained", ckpt,
                            "--calibration-data", train], "--amp_dtype int8")):
        assert cli([*argv[:2], "--recursive", *argv[2:]] if argv[0] == "infer" else argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and culprit in err[0] and "--calibration-data" in err[0]


def test_training_auto_on_cpu_follows_the_bf16_units(monkeypatch):
    _mock_cpu(monkeypatch, {"avx512_bf16"})
    prec = P.resolve_precision("O1", "auto", CPU)
    assert prec.autocast == torch.bfloat16 and prec.weights is None
    assert (prec.reason, prec.bf16_units, prec.amp_level) == (P.UNITS, ("avx512_bf16",), "O1")
    assert P.resolve_precision("O0", "auto", CPU) is P.FP32
    _mock_cpu(monkeypatch, {"avx2"})
    prec = P.resolve_precision("O2", "auto", CPU)
    assert prec.autocast is None and prec.weights is None and prec.reason == P.NO_UNITS
    asked = P.resolve_precision("O1", "bf16", CPU)  # asked for: always, with the cost said where there are no units
    assert asked.autocast == torch.bfloat16 and asked.reason == P.ASKED and asked.bf16_units == ()
    assert P.NO_BF16_UNITS in asked.describe()


@pytest.mark.parametrize("speedup", [0.61, 1.5])
def test_training_auto_times_a_step_of_the_model_where_units_exist(monkeypatch, capsys, speedup):
    # units alone do not decide: on a Xeon with avx512_bf16 and no AMX bf16 autocast trained at 0.61x fp32
    calls = _mock_cpu(monkeypatch, {"avx512_bf16"}, speedup=speedup)
    model = create_model("deit_tiny_patch16_224")
    prec = P.resolve_precision("O1", "auto", CPU, model)
    assert len(calls) == 1 and calls[0] is model
    assert "precision: timing a training step" in capsys.readouterr().err  # the pause is explained
    assert (prec.reason, prec.measured, prec.remembered) == (P.MEASURED, speedup, False)
    assert prec.autocast == (None if speedup < P.AUTO_MIN_SPEEDUP else torch.bfloat16) and prec.weights is None
    again = P.resolve_precision("O1", "auto", CPU, model)  # the next run: remembered, not timed again
    assert again == replace(prec, remembered=True) and len(calls) == 1
    assert "timing" not in capsys.readouterr().err
    tiny = create_model("deit_tiny_patch16_224", **TINY)  # too short a step to time: fp32, nothing measured
    assert P.resolve_precision("O1", "auto", CPU, tiny).autocast is None and len(calls) == 1
    assert P.resolve_precision("O1", "bf16", CPU, model).autocast == torch.bfloat16  # asked for: obeyed


def test_the_training_measurement_leaves_the_model_and_random_state_alone():
    torch.manual_seed(3)
    model = create_model("deit_tiny_distilled_patch16_224", drop_path_rate=0.1, **TINY)
    model.set_distilled_training(True)  # two heads out: both count
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    assert P.measure_bf16_speedup(model, CPU, rounds=1, train=True) > 0
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_eval_maps_the_config_onto_the_policy(trained, capsys):
    base = ["eval", "--dataset", "folder", "--data_path", str(trained["ds"]), "--pretrained", str(trained["ckpt"]),
            "--batch_size", "20", "--num_workers", "0", "--device", "cpu"]
    got = {}
    for extra in (["--amp_level", "O0"], ["--amp_dtype", "bf16"]):
        assert cli(base + extra) == 0
        cap = capsys.readouterr()
        got[extra[-1]] = ast.literal_eval(cap.out.split("eval results: ")[1].strip())
        assert ("precision: fp32 (asked for)" if extra[-1] == "O0" else "precision: bf16 weights (asked for") \
            in cap.err
    # at most one of the 60 predictions changes (the metrics are printed to 6 decimals: 1/60 reads 0.016667)
    assert abs(got["O0"]["Top1-Acc"] - got["bf16"]["Top1-Acc"]) <= 1 / 60 + 1e-5


def test_measured_speedup_is_remembered_between_runs(monkeypatch, capsys, tmp_path):
    calls = _mock_cpu(monkeypatch, {"avx512_bf16"}, speedup=1.8)
    model = create_model("deit_tiny_patch16_224")
    first = P.inference_precision("auto", CPU, model)
    monkeypatch.setattr(P, "_decided", {})  # a new process
    second = P.inference_precision("auto", CPU, model)
    assert first.weights == second.weights == torch.bfloat16 and len(calls) == 1
    assert second.remembered and not first.remembered and second == replace(first, remembered=True)
    cache = timing_cache.cache_file()
    assert json.loads(cache.read_text())  # written where VITZOO_CACHE_DIR points (conftest)
    cache.write_text("{not json")  # a damaged cache is measured again, then rewritten
    monkeypatch.setattr(P, "_decided", {})
    assert not P.inference_precision("auto", CPU, model).remembered and len(calls) == 2
    assert len(json.loads(cache.read_text())) == 1


def test_an_unwritable_cache_is_said_and_the_timing_still_used(monkeypatch, capsys, tmp_path):
    calls = _mock_cpu(monkeypatch, {"avx512_bf16"}, speedup=1.8)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("VITZOO_CACHE_DIR", str(blocker))
    prec = P.inference_precision("auto", CPU, create_model("deit_tiny_patch16_224"))
    assert prec.weights == torch.bfloat16 and len(calls) == 1
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "not remembered" in notes[0] and "VITZOO_CACHE_DIR" in notes[0]


def test_a_decision_is_data_rendered_in_one_place():
    """Precision is frozen; describe() (= str()) is the one place it becomes a sentence, tested here once."""
    with pytest.raises(FrozenInstanceError):
        P.FP32.reason = P.ASKED
    bf16, u = torch.bfloat16, ("amx_bf16",)
    cases = [
        (P.FP32, "fp32"),
        (P.Precision(reason=P.ASKED), "fp32 (asked for)"),
        (P.Precision(weights=bf16, reason=P.MEASURED, bf16_units=u, measured=1.8),
         "bf16 weights (auto: CPU has amx_bf16, forward measured 1.80x fp32)"),
        (P.Precision(reason=P.MEASURED, bf16_units=u, measured=0.9, remembered=True, int8_hint=True,
                     int8_units=("amx_int8",)),
         ("fp32 (auto: CPU has amx_bf16 but bf16 measured 0.90x fp32 for this model (remembered from an earlier "
          "run); int8, asked for by name, would use its amx_int8 units)")),
        (P.Precision(reason=P.TOO_SMALL, mflops=42.0), "fp32 (auto: model too small for bf16 to pay, ~42 MFLOP/image)"),
        (P.Precision(weights=bf16, reason=P.ASKED), f"bf16 weights (asked for; {P.NO_BF16_UNITS}: --precision auto picks fp32)"),
        (P.Precision(weights=bf16, reason=P.GPU, device="cuda"), "bf16 weights (auto: the GPU supports bf16)"),
        (P.Precision(autocast=torch.float16, reason=P.ASKED), "fp16 autocast (asked for; CPU)"),
        (P.Precision(int8_weight_bits=7, calibrated=True, reason=P.ASKED),
         ("int8 calibrated (asked for; linear layers in int8, 7-bit weights: this CPU has no VNNI; top-1 may "
          "move: eval it)")),
        (P.Precision(autocast=bf16, amp_level="O1", reason=P.MEASURED, bf16_units=u, measured=1.5),
         "bf16 autocast (O1; amp_dtype auto: CPU has amx_bf16, training step measured 1.50x fp32)"),
        (P.Precision(weights=bf16, amp_level="O3", reason=P.ASKED),
         f"bf16 weights and activations (O3; {P.NO_BF16_UNITS}: amp_dtype auto picks fp32)"),
        (P.Precision(amp_level="O1", reason=P.NO_UNITS),
         "fp32 (amp_dtype auto on a CPU without bf16 units: autocast is slower than fp32 there)"),
    ]
    for precision, sentence in cases:
        assert precision.describe() == str(precision) == sentence
    assert [p.label for p, _ in cases[:3]] == ["fp32", "fp32", "bf16 weights"]
