"""vitzoo trains like the reference: against a plain torch loop, and with the schedule it promises."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision import datasets, transforms

from vitzoo import create_model
from vitzoo.cli import main as cli
from vitzoo.data import make_shapes_dataset
from vitzoo.engine.seeding import seed_everything

TINY = {"patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3}
LR, MIN_LR, WARMUP_LR = 2e-3, 1e-5, 1e-6


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 240, 80, size=32, seed=0, num_classes=4,
                               progress=False)


def vitzoo_args(data, out, epochs: int, warmup: int, cooldown: int, batch: int = 16) -> list[str]:
    """The recipe with every augmentation off (full-image crops, no flip/erasing/mixup/smoothing)."""
    return ["train", "--model", "deit_tiny_patch16_224", "--model_overrides", json.dumps(TINY),
            "--input_size", "32", "--num_classes", "4", "--data_path", str(data), "--output_dir", str(out),
            "--batch_size", str(batch), "--num_workers", "0", "--amp_level", "O0", "--device", "cpu",
            "--epochs", str(epochs), "--warmup_epochs", str(warmup), "--cooldown_epochs", str(cooldown),
            "--lr", str(LR), "--min_lr", str(MIN_LR), "--warmup_lr", str(WARMUP_LR), "--unscale_lr", "true",
            "--weight_decay", "0", "--aa", "none", "--reprob", "0", "--mixup", "0", "--cutmix", "0",
            "--smoothing", "0", "--drop_path", "0", "--hflip", "0", "--color_jitter", "0", "--min_crop", "1",
            "--crop_pct", "1", "--ckpt_save_every_seconds", "0", "--seed", "0"]


def lr_formula(update: int, per_epoch: int, epochs: int, warmup: int, cooldown: int) -> float:
    """Linear warmup, then cosine to min_lr over epochs - cooldown, then min_lr (per update, DeiT/timm)."""
    t = update / per_epoch
    if t < warmup:
        return WARMUP_LR + (LR - WARMUP_LR) * t / warmup
    horizon = epochs - cooldown
    if t >= horizon:
        return MIN_LR
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * t / horizon))


def plain_torch_run(data, epochs: int, warmup: int, batch: int = 16) -> tuple[float, float]:
    """The same model, data and optimiser/schedule in a loop written from scratch: (val loss, val top-1)."""
    seed_everything(0)
    model = create_model("deit_tiny_patch16_224", num_classes=4, img_size=32, drop_path_rate=0.0, **TINY)
    norm = transforms.Normalize(model.data_config["mean"], model.data_config["std"])
    tf = transforms.Compose([transforms.Resize(32), transforms.ToTensor(), norm])
    train = torch.utils.data.DataLoader(datasets.ImageFolder(data / "train", tf), batch_size=batch, shuffle=True,
                                        drop_last=True, generator=torch.Generator().manual_seed(0))
    val = torch.utils.data.DataLoader(datasets.ImageFolder(data / "val", tf), batch_size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    per_epoch = len(train)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda u: lr_formula(u, per_epoch, epochs, warmup, 0) / LR)
    for _ in range(epochs):
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x) for x, _ in val])
        y = torch.cat([y for _, y in val])
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()


def test_learns_like_a_plain_torch_loop(data, tmp_path):
    assert cli(vitzoo_args(data, tmp_path / "run", epochs=8, warmup=1, cooldown=0)) == 0
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    ref_loss, ref_top1 = plain_torch_run(data, epochs=8, warmup=1)
    assert ref_top1 > 0.5  # the reference itself learned (chance is 0.25)
    assert abs(last["val_top1"] - ref_top1) <= 0.1, (last["val_top1"], ref_top1)
    assert abs(last["val_loss"] - ref_loss) <= 0.25 * ref_loss + 0.05, (last["val_loss"], ref_loss)


@pytest.mark.parametrize("epochs, warmup, cooldown", [(6, 0, 0), (6, 2, 0), (6, 1, 2)])
def test_schedule_applied_per_update_matches_the_formula(data, tmp_path, epochs, warmup, cooldown):
    out = tmp_path / "run"
    args = vitzoo_args(data, out, epochs, warmup, cooldown, batch=80) + ["--train_num_samples", "240",
                                                                        "--val_num_samples", "8"]
    assert cli(args) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    applied = {e.step: e.value for e in events.Scalars("train/lr")}
    per_epoch = 240 // 80
    assert sorted(applied) == list(range(1, epochs * per_epoch + 1))
    for step, lr in applied.items():  # the lr logged at update `step` is the one that update used
        assert lr == pytest.approx(lr_formula(step - 1, per_epoch, epochs, warmup, cooldown), rel=1e-5)
