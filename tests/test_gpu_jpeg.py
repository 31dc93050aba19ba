"""`vitzoo infer --decode device`: JPEGs decoded and preprocessed on the model's device (here the CPU, through
the same calls CUDA takes) give the PIL path's tensors exactly, and bad files are skipped."""
from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.checkpoint import save_checkpoint
from vitzoo.cli import main as cli
from vitzoo.data import build_eval_transform, load_image
from vitzoo.data.device.jpeg import DevicePreprocess, EncodedFiles
from vitzoo.inference.predict import iter_batches
from vitzoo.models import create_model

CPU = torch.device("cpu")


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """Smooth colour fields with some texture: JPEG-like content, not flat."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    noise = rng.integers(-20, 21, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(small, dtype=np.int64) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    for i, size in enumerate([(300, 200), (200, 300), (256, 256), (97, 131), (500, 375)]):
        photo(size, i).save(root / f"img{i}.jpg", quality=90)
    photo((240, 180), 9).convert("L").save(root / "gray.jpg", quality=90)
    photo((160, 160), 10).save(root / "lossless.png")
    return root


def preprocessed(paths, data_config):
    """Both paths on the same files: (PIL + timm's eval transform, on-device) as (N, 3, H, W)."""
    pil = torch.stack([build_eval_transform(data_config)(load_image(p)) for p in paths])
    items = DevicePreprocess(data_config, CPU)([EncodedFiles(paths)[i] for i in range(len(paths))])
    assert all(why is None for _, _, why in items)
    return pil, torch.stack([x for _, x, _ in items])


def test_device_preprocessing_matches_pil(folder, monkeypatch):
    paths = sorted(folder.iterdir())
    model = create_model("deit_tiny_patch16_224").eval()
    pil, ours = preprocessed(paths, model.data_config)
    assert ours.shape == pil.shape == (len(paths), 3, 224, 224)
    # Pillow's resize arithmetic (vitzoo.data.device.pillow_resize) and torchvision's normalisation, after the same
    # libjpeg-turbo decoding: the same tensors (torch's antialiased resize was up to 2 grey levels off)
    assert torch.equal(ours, pil)
    from vitzoo.data.device import jpeg as gpu_jpeg

    monkeypatch.setattr(gpu_jpeg, "DECODE_BYTES", 1)  # one JPEG per decode call (bounded memory): the same
    assert torch.equal(preprocessed(paths, model.data_config)[1], ours)


def test_crop_pct_and_interpolation_follow_the_config(folder):
    paths = sorted(folder.glob("img*.jpg"))
    config = {"input_size": (3, 96, 96), "crop_pct": 1.0, "interpolation": "bilinear",
              "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    pil, ours = preprocessed(paths, config)
    assert torch.equal(ours, pil)


def test_non_square_input_is_refused_with_one_line():
    from vitzoo.errors import UserError

    with pytest.raises(UserError, match="square"):
        DevicePreprocess({"input_size": (3, 224, 160), "crop_pct": 0.9, "interpolation": "bicubic",
                          "mean": (0, 0, 0), "std": (1, 1, 1)}, CPU)


def test_workers_and_unreadable_files_give_what_the_cpu_path_gives(folder, tmp_path):
    """Loader workers hand a batch's JPEGs over as one joined tensor (predict._pack_encoded); a file that
    does not decode or has gone since it was listed is reported with the CPU path's reason."""
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    paths = sorted(folder.iterdir()) + [tmp_path / "garbage.jpg", tmp_path / "gone.jpg"]
    config = {"input_size": (3, 32, 32), "crop_pct": 0.875, "interpolation": "bicubic",
              "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    on_device = DevicePreprocess(config, CPU)
    runs = {}
    for name, workers, preprocess in (("cpu", 0, None), ("device", 0, on_device), ("workers", 2, on_device)):
        bad: list = []
        batches = list(iter_batches(paths, build_eval_transform(config), 3, bad, workers, preprocess))
        runs[name] = [n for names, _ in batches for n in names], torch.cat([x for _, x in batches]), bad
    assert runs["device"][0] == runs["workers"][0] == runs["cpu"][0] == [str(p) for p in paths[:-2]]
    assert runs["device"][2] == runs["workers"][2] == runs["cpu"][2] and len(runs["cpu"][2]) == 2
    assert torch.equal(runs["device"][1], runs["workers"][1])
    assert torch.equal(runs["device"][1], runs["cpu"][1])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=4, depth=1,
                         embed_dim=48, num_heads=3).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)  # spread-out logits: classes differ between images
    dc = {k: list(v) if isinstance(v, tuple) else v for k, v in model.data_config.items()}
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, {"model": model.state_dict(), "meta": {
        "arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 5, "data_config": dc}})
    return path


def test_infer_decode_device_predicts_as_cpu_and_skips_a_corrupt_jpeg(folder, checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for p in folder.iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    good = (folder / "img0.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(good[: len(good) // 3])  # starts like a JPEG, then ends
    (images / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    outputs, skipped = {}, {}
    for decode in ("cpu", "device"):
        out = tmp_path / f"{decode}.json"
        assert cli(["infer", str(images), "--checkpoint", str(checkpoint), "--device", "cpu", "--precision", "fp32",
                    "--decode", decode, "--num-workers", "0", "--batch-size", "3", "--output", str(out)]) == 0
        err = capsys.readouterr().err
        outputs[decode] = json.loads(out.read_text())
        skipped[decode] = [line for line in err.splitlines() if line.startswith("skipped")]
    assert "decode: JPEGs on cpu" in err
    # both decoders refuse the two broken files, and the device path reports PIL's reason, as the CPU path
    assert [line.split(": ", 1)[0] for line in skipped["cpu"]] == [
        f"skipped {images / 'garbage.jpg'}", f"skipped {images / 'truncated.jpg'}"]
    assert skipped["device"] == skipped["cpu"]
    assert outputs["device"].keys() == outputs["cpu"].keys() and len(outputs["cpu"]) == 7
    agree = sum(outputs["device"][k] == outputs["cpu"][k] for k in outputs["cpu"])
    assert agree == len(outputs["cpu"])


def test_batch_size_auto_by_device_and_bad_values_are_one_line(checkpoint, folder, capsys):
    from vitzoo.inference.predict import auto_batch_size

    assert auto_batch_size(torch.device("cuda")) == 256 and auto_batch_size(CPU) == 32
    for bad in ("0", "x", "-3"):
        assert cli(["infer", str(folder), "--checkpoint", str(checkpoint), "--batch-size", bad]) == 2
        err = capsys.readouterr().err
        assert f"--batch-size must be auto or an integer >= 1, got {bad}" in err and "Traceback" not in err


def test_eval_decode_device_gives_the_cpu_metrics_and_leaves_out_a_corrupt_file(tmp_path, capsys):
    from vitzoo.data import make_shapes_dataset

    ds = make_shapes_dataset(tmp_path / "ds", num_train=5, num_val=8, size=40, num_classes=4)
    for png in sorted((ds / "val").rglob("*.png"))[::2]:  # half JPEG (decoded on the device), half PNG
        Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=4, depth=1,
                         embed_dim=48, num_heads=3).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    dc = {k: list(v) if isinstance(v, tuple) else v for k, v in model.data_config.items()}
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "meta": {
        "arch": model.arch, "model_kwargs": model.model_kwargs, "num_classes": 4, "data_config": dc,
        "class_names": sorted(p.name for p in (ds / "train").iterdir())}})
    args = ["eval", "--dataset", "folder", "--data_path", str(ds), "--pretrained", str(ckpt), "--batch_size", "5",
            "--num_workers", "0", "--device", "cpu"]
    results = {}
    for decode in ("cpu", "device"):
        assert cli([*args, "--decode", decode]) == 0
        out = capsys.readouterr()
        line = next(line for line in out.out.splitlines() if line.startswith("eval results"))
        results[decode] = ast.literal_eval(line.split(": ", 1)[1])
    assert "decode: JPEGs on cpu" in out.err
    assert results["device"] == results["cpu"]  # the same tensors, so the same metrics and loss
    victim = min((ds / "val").rglob("*.jpg"))
    victim.write_bytes(b"\xff\xd8\xff" + bytes(200))
    assert cli([*args, "--decode", "device"]) == 0
    err = capsys.readouterr().err
    assert f"1 unreadable image(s) left out of the metrics, e.g. {victim}" in err and "Traceback" not in err


def test_choose_preprocess_follows_the_flag_and_says_why_not(capsys):
    from vitzoo.data.device.jpeg import choose_preprocess
    from vitzoo.errors import UserError

    square = {"input_size": (3, 32, 32), "crop_pct": 1.0, "interpolation": "bicubic", "mean": (0, 0, 0),
              "std": (1, 1, 1)}
    assert choose_preprocess("auto", square, CPU) is None and choose_preprocess("cpu", square, CPU) is None
    assert isinstance(choose_preprocess("device", square, CPU), DevicePreprocess)
    assert "decode: JPEGs on cpu" in capsys.readouterr().err
    with pytest.raises(UserError, match="this dataset has none"):
        choose_preprocess("device", square, CPU, reads_files=False)
    wide = {**square, "input_size": (3, 32, 48)}
    with pytest.raises(UserError, match="square"):
        choose_preprocess("device", wide, CPU)
