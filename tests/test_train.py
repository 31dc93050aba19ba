"""End-to-end training tests on generated data (CPU, tiny DeiT): learning, resume, checkpoints, logs, DDP."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitzoo.checkpoint import load_checkpoint, store
from vitzoo.cli import main as vitzoo
from vitzoo.config import load_config
from vitzoo.engine.trainer import Position, Trainer, train
from vitzoo.errors import UserError

TINY = "{patch_size: 4, depth: 2, embed_dim: 48, num_heads: 3}"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """An easy generated image folder (4 classes, 160 train / 40 val): the class is the colour of a blob
    on a noisy grey background, so a tiny ViT separates it within a few dozen updates."""
    import numpy as np
    from PIL import Image

    out = tmp_path_factory.mktemp("colours")
    colours = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 60, 220), "yellow": (230, 220, 40)}
    rng = np.random.default_rng(0)
    for split, n in (("train", 160), ("val", 40)):
        for i in range(n):
            name = list(colours)[i % 4]
            img = rng.integers(60, 190, (32, 32, 1)).repeat(3, axis=2).astype(np.int64)
            r, cy, cx = rng.integers(6, 11), rng.integers(10, 22), rng.integers(10, 22)
            yy, xx = np.mgrid[:32, :32]
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[blob] = np.array(colours[name]) + rng.integers(-25, 25, 3)
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return out


def flags(data, out) -> list[str]:
    return ["--model", "deit_tiny_patch16_224", "--model_overrides", TINY, "--input_size", "32",
            "--num_classes", "4", "--data_path", str(data), "--output_dir", str(out), "--batch_size", "16",
            "--num_workers", "0", "--amp_level", "O0", "--device", "cpu", "--epochs", "2", "--warmup_epochs", "1",
            "--cooldown_epochs", "0", "--lr", "2e-3", "--unscale_lr", "true", "--aa", "none", "--reprob", "0",
            "--mixup", "0", "--cutmix", "0", "--drop_path", "0", "--crop_pct", "1.0", "--min_crop", "0.6",
            "--ckpt_save_every_seconds", "0", "--print_loss_every", "5", "--seed", "0"]


def cfg_for(data, out, *extra: str):
    return load_config(None, flags(data, out) + list(extra))


def cfg_args(data, out) -> list[str]:
    """:func:`flags` without --num_classes (the train set's 4 classes then set it)."""
    args = flags(data, out)
    i = args.index("--num_classes")
    return args[:i] + args[i + 2:]


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_learns_and_writes_logs(shapes, tmp_path):
    out = tmp_path / "run"
    cfg = cfg_for(shapes, out, "--epochs", "3", "--best_ckpt_num", "1", "--ckpt_keep_num", "2",
                  "--ckpt_save_every_step", "4")
    summary = train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 4))
    assert set(rows[0]) >= {"epoch", "step", "train_loss", "lr", "val_loss", "val_top1", "val_top5",
                            "img_per_sec", "time"}
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # the loss goes down
    assert summary["best_top1"] > 0.25 + 0.2  # well above chance (4 classes)
    assert summary["best_top1"] == pytest.approx(max(r["val_top1"] for r in rows), abs=1e-6)
    # keep-N / best-N
    assert len(store.list_checkpoints(out / "checkpoints")) == 2
    assert len(list((out / "best").iterdir())) == 1
    best = load_checkpoint(summary["best_checkpoint"])
    assert best["meta"]["class_names"] == sorted(best["meta"]["class_names"]) and len(best["meta"]["class_names"]) == 4
    assert best["meta"]["arch"] == "deit_tiny_patch16_224" and best["meta"]["config"]["epochs"] == 3
    # the checkpoint rebuilds the model it came from
    from vitzoo.models import load_model

    model, _ = load_model(summary["last_checkpoint"])
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
    log = (out / "train.log").read_text()
    assert "eval results: {'Loss': " in log and "'Top1-Acc': " in log
    assert (out / "metrics.csv").read_text().startswith("epoch,step,train_loss")
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_the_train_set_sets_num_classes_unless_the_user_did(shapes, tmp_path, capsys):
    def args(out: str, *extra: str) -> list[str]:  # no --num_classes unless in extra
        return ["--model", "deit_tiny_patch16_224", "--model_overrides", TINY, "--input_size", "32",
                "--data_path", str(shapes), "--output_dir", str(tmp_path / out), "--num_workers", "0",
                "--device", "cpu", "--amp_level", "O0", *extra]

    assert load_config(None, args("unset")).num_classes == 1000  # the default, as in timm
    trainer = Trainer(load_config(None, args("unset")))
    assert trainer.cfg.num_classes == 4 and trainer.model.head.out_features == 4
    assert "num_classes 4: the classes of the train set" in "".join(capsys.readouterr())
    assert vitzoo(["train", *args("dry"), "--dry-run"]) == 0  # the resolved config says what the run will use
    assert "num_classes: 4 " in capsys.readouterr().out
    chosen = Trainer(load_config(None, args("six", "--num_classes", "6")))
    assert chosen.model.head.out_features == 6
    assert "num_classes 6 != 4 classes found in the data" in "".join(capsys.readouterr())


def test_resuming_a_run_with_another_head_names_the_num_classes_that_continues_it(shapes, tmp_path, capsys):
    # a run trained before num_classes followed the data: the old default's 1000-way head on 4 classes
    assert vitzoo(["train", *cfg_args(shapes, tmp_path / "run"), "--num_classes", "1000", "--epochs", "1"]) == 0
    assert vitzoo(["train", *cfg_args(shapes, tmp_path / "run"), "--resume", "auto", "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "size mismatch for head.weight" in err and "--num_classes 1000 continues it" in err


def test_amp_dtype_auto_trains_in_what_measured_faster_for_the_model(shapes, tmp_path, monkeypatch):
    # a CPU whose bf16 units make training slower (measured 0.61x on a Xeon with avx512_bf16, no AMX)
    from vitzoo.runtime import cpu, precision

    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    timed = []
    monkeypatch.setattr(precision, "measure_bf16_speedup", lambda model, device, **kw: timed.append(kw) or 0.6)
    monkeypatch.setattr(precision, "_decided", {})
    cfg = cfg_for(shapes, tmp_path / "run", "--amp_level", "O1", "--amp_dtype", "auto", "--model_overrides", "{}",
                  "--input_size", "64", "--epochs", "1")
    trainer = Trainer(cfg)  # deit_tiny at 64 px: ~0.2 GFLOP per image, worth timing
    assert timed == [{"train": True}] and trainer.precision.autocast is None
    assert next(trainer.model.parameters()).dtype == torch.float32
    trainer.close()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "fp32 (amp_dtype auto: CPU has avx512_bf16 but a bf16-autocast training step measured 0.60x" in log


def test_resume_is_bit_for_bit_mid_epoch_and_at_epoch_end(shapes, tmp_path):
    # exercise every RNG stream: augmentation (python/torch), mixup (numpy), drop path (torch), EMA
    extra = ["--aa", "rand-m9-mstd0.5-inc1", "--mixup", "0.8", "--cutmix", "1.0", "--drop_path", "0.1",
             "--model_ema", "true", "--model_ema_decay", "0.9", "--ckpt_save_every_step", "7",
             "--ckpt_keep_num", "0", "--clip_grad", "1.0"]
    full = tmp_path / "full"
    train(cfg_for(shapes, full, *extra))
    ckpts = store.list_checkpoints(full / "checkpoints")
    names = [p.name for p in ckpts]
    # 10 updates per epoch: step saves at 7 and 14, epoch ends at 10 and 20
    assert names == [store.ckpt_name(0, 7), store.ckpt_name(1, 10), store.ckpt_name(1, 14),
                     store.ckpt_name(2, 20)]
    final = load_checkpoint(ckpts[-1])
    for start in (ckpts[2], ckpts[1]):  # mid-epoch 2, then the end of epoch 1
        out = tmp_path / f"resumed_{start.stem}"
        (out / "checkpoints").mkdir(parents=True)
        shutil.copy(start, out / "checkpoints" / start.name)
        summary = train(cfg_for(shapes, out, *extra, "--resume", "auto"))
        assert summary["global_step"] == 20
        again = load_checkpoint(summary["last_checkpoint"])
        assert_same(final["model"], again["model"])
        assert_same(final["ema"], again["ema"])
        assert again["meta"]["metrics"] == final["meta"]["metrics"]


def test_augmentation_on_the_device_trains_and_resumes_bit_for_bit(shapes, tmp_path):
    """augment_on: device (RandAugment, erasing and mixup on the training device, here the CPU): the run
    learns, and a resume from mid-epoch 2 reproduces the weights (the erasing noise is seeded per batch)."""
    extra = ["--augment_on", "device", "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--mixup", "0.8",
             "--ckpt_save_every_step", "14", "--ckpt_keep_num", "0"]
    full = tmp_path / "full"
    summary = train(cfg_for(shapes, full, *extra))
    assert summary["best_top1"] > 0.25  # above chance after 20 updates of the full recipe
    assert "flip in the loader workers; auto-augment, normalisation and random erasing on cpu" in (
        full / "train.log").read_text()
    mid = store.list_checkpoints(full / "checkpoints")[1]
    assert mid.name == store.ckpt_name(1, 14)
    out = tmp_path / "resumed"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(mid, out / "checkpoints" / mid.name)
    again = train(cfg_for(shapes, out, *extra, "--resume", "auto"))
    assert_same(weights(summary["last_checkpoint"]), weights(again["last_checkpoint"]))


def test_decoding_on_the_device_trains(shapes, tmp_path):
    """decode_on: device on JPEGs: the workers read the files and draw; decode, crop, RandAugment, erasing
    and mixup run in the training process (here the CPU), and the run learns."""
    from PIL import Image

    data = tmp_path / "jpegs"
    shutil.copytree(shapes, data)
    for png in data.rglob("*.png"):
        Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
    broken = min((data / "train").rglob("*.jpg"))  # whole header, garbage Huffman table
    raw = bytearray(broken.read_bytes())
    at = raw.find(b"\xff\xc4")
    raw[at + 5:at + 25] = b"\xff" * 20
    broken.write_bytes(bytes(raw))
    out = tmp_path / "run"
    summary = train(cfg_for(data, out, "--augment_on", "device", "--decode_on", "device", "--aa",
                            "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--epochs", "3"))
    assert summary["best_top1"] > 0.25  # above chance (4 classes)
    log = (out / "train.log").read_text()
    assert "JPEG decode, crop, flip, auto-augment" in log
    assert f"{broken}: not a readable image" in log and str(broken) in (out / "bad_files.txt").read_text()


def test_nonfinite_stop_names_last_good_checkpoint(shapes, tmp_path):
    trainer = Trainer(cfg_for(shapes, tmp_path / "nan", "--nonfinite_policy", "stop"))
    real = trainer.step.criterion
    calls = {"n": 0}

    def poisoned(x, out, y):
        calls["n"] += 1
        loss = real(x, out, y)
        return loss * float("nan") if calls["n"] == 13 else loss  # in epoch 2 (10 updates per epoch)

    trainer.step.criterion = poisoned
    try:
        with pytest.raises(UserError, match=r"update 13.*last good checkpoint: .*ckpt_e0001_s000000010\.pth"):
            trainer.fit()
    finally:
        trainer.close()
    ck = load_checkpoint(tmp_path / "nan" / "checkpoints" / store.ckpt_name(1, 10))
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_nonfinite_skip_counts(shapes, tmp_path):
    trainer = Trainer(cfg_for(shapes, tmp_path / "skip", "--epochs", "1"))
    real = trainer.step.criterion
    calls = {"n": 0}

    def poisoned(x, out, y):
        calls["n"] += 1
        return real(x, out, y) * (float("inf") if calls["n"] in (2, 5) else 1.0)

    trainer.step.criterion = poisoned
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    assert summary["skipped_updates"] == 2
    row = json.loads((tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["skipped_steps"] == 2
    ck = load_checkpoint(summary["last_checkpoint"])
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_interrupted_checkpoint_write_keeps_previous_file(shapes, tmp_path, monkeypatch):
    trainer = Trainer(cfg_for(shapes, tmp_path / "atomic", "--epochs", "1"))
    try:
        first = trainer.save(Position())
        before = first.read_bytes()
        real_save = torch.save

        def dying_save(obj, f, *a, **k):
            with open(f, "wb") as fh:
                fh.write(b"partial")
            raise KeyboardInterrupt  # killed mid-write

        monkeypatch.setattr(torch, "save", dying_save)
        with pytest.raises(KeyboardInterrupt):
            trainer.save(Position())
        monkeypatch.setattr(torch, "save", real_save)
        assert first.read_bytes() == before and load_checkpoint(first)["meta"]["global_step"] == 0
        assert not list(first.parent.glob("*.tmp"))
    finally:
        trainer.close()


def test_cli_train_dry_run_and_bad_resume(shapes, tmp_path, capsys):
    from vitzoo.cli import main

    assert main(["train", "--model", "deit_tiny_patch16_224", "--batch-size", "8", "--dry-run"]) == 0
    assert "batch_size: 8" in capsys.readouterr().out
    bogus = tmp_path / "bogus.pth"
    torch.save({"model": {}}, bogus)
    args = ["train", "--model", "deit_tiny_patch16_224", "--model_overrides", TINY, "--input_size", "32",
            "--num_classes", "4", "--data_path", str(shapes), "--output_dir", str(tmp_path / "o"),
            "--num_workers", "0", "--device", "cpu", "--resume", str(bogus)]
    assert main(args) == 2
    assert "not a full vitzoo training checkpoint" in capsys.readouterr().err


@pytest.mark.slow  # two fresh processes under torchrun: ~40 s on a busy 2-core machine; like its siblings
# in test_eval_infer, test_probe and test_reliability (a dead rank is also checked in the default suite)
def test_torchrun_two_processes_gloo(shapes, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vitzoo",
           "train", "--model", "deit_tiny_patch16_224", "--model_overrides", TINY, "--input_size", "32",
           "--num_classes", "4", "--data_path", str(shapes), "--output_dir", str(out), "--batch_size", "8",
           "--num_workers", "0", "--amp_level", "O0", "--device", "cpu", "--epochs", "1", "--warmup_epochs", "0",
           "--aa", "none", "--mixup", "0", "--cutmix", "0", "--ckpt_save_every_seconds", "0"]
    res = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.name for p in store.list_checkpoints(out / "checkpoints")] == [store.ckpt_name(1, 10)]
    assert len(list((out / "best").iterdir())) == 1
    assert (out / "train.log").read_text().count("eval results:") == 1
    # distributed evaluation == one-process evaluation of the same weights
    from vitzoo.data import build_dataset, build_loader
    from vitzoo.engine.loop import evaluate
    from vitzoo.models import load_model

    model, meta = load_model(store.list_checkpoints(out / "checkpoints")[0])
    cfg = cfg_for(shapes, tmp_path / "x")
    val = build_dataset(cfg, "val", data_config=meta["data_config"])
    single = evaluate(model, build_loader(cfg, val, "val"), "cpu")
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["val_top1"] == pytest.approx(single["Top1-Acc"], abs=1e-9)
    assert row["val_loss"] == pytest.approx(single["Loss"], rel=1e-5)


def test_demo_wires_dataset_training_and_evaluation(tmp_path, capsys):
    from vitzoo.cli import demo

    code = demo.main(["--out", str(tmp_path / "demo"), "--num-train", "40", "--num-val", "10", "--epochs", "1",
                      "--num_workers", "0", "--batch_size", "8", "--model_overrides", TINY, "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "eval results: {'Loss': " in out and "best checkpoint" in out
    best = next((tmp_path / "demo" / "run" / "best").glob("best_top1_*.pth"))
    assert load_checkpoint(best)["meta"]["num_classes"] == 5
