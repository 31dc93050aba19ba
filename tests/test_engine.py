"""Unit tests of the engine pieces: schedules, param groups, losses, EMA, the loops, loss scaling, RNG state."""
from __future__ import annotations

import io
import math
import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.config import load_config
from vitzoo.engine import seeding
from vitzoo.engine.ema import ModelEma
from vitzoo.engine.loop import (
    NonFiniteLossError,
    TrainStep,
    evaluate,
    format_eval,
    iter_updates,
    train_one_epoch,
)
from vitzoo.engine.losses import (
    BinaryCrossEntropy,
    DistillationLoss,
    LabelSmoothingCrossEntropy,
    SoftTargetCrossEntropy,
    build_criterion,
)
from vitzoo.engine.optim import build_optimizer, param_groups
from vitzoo.engine.reporting import EpochStats
from vitzoo.engine.scaling import FixedLossScaler
from vitzoo.engine.schedule import LRScheduler
from vitzoo.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_vit(**kw):
    from vitzoo import create_model

    return create_model("deit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=4, depth=2, embed_dim=48,
                        num_heads=3, **kw)


def sched(name, **kw):
    base = {"sched": name, "lr": 1.0, "epochs": 10, "updates_per_epoch": 10, "warmup_epochs": 2, "warmup_lr": 0.0,
            "min_lr": 0.1}
    base.update(kw)
    return LRScheduler(None, **base)


# ------------------------------------------------------------------------------------- schedules
def test_warmup_and_cosine_values():
    s = sched("cosine", cooldown_epochs=2)
    assert s.lr_at(0) == 0.0
    assert s.lr_at(5) == pytest.approx(0.25)  # t = 0.5 of a 2-epoch warmup from 0 to 1
    # after warmup: cosine over the 8 epochs before the cooldown, clock starting at 0 (timm non-prefix)
    assert s.lr_at(20) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 2 / 8)))
    assert s.lr_at(60) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 6 / 8)))
    assert s.lr_at(80) == s.lr_at(99) == pytest.approx(0.1)  # cooldown at min_lr


def test_cosine_matches_timm_per_update():
    from timm.scheduler import CosineLRScheduler

    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    ref = CosineLRScheduler(opt, t_initial=10 * 7, lr_min=1e-3, warmup_t=2 * 7, warmup_lr_init=1e-4,
                            t_in_epochs=False)
    ours = LRScheduler(None, sched="cosine", lr=0.5, epochs=10, updates_per_epoch=7, warmup_epochs=2,
                       warmup_lr=1e-4, min_lr=1e-3, cooldown_epochs=0)
    for step in (0, 3, 13, 14, 15, 40, 69):
        ref.step_update(step)
        assert ours.lr_at(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), step


def test_step_exponential_constant_values():
    s = sched("step", decay_epochs=3, decay_rate=0.5, min_lr=0.0)
    assert s.lr_at(29) == pytest.approx(1.0) and s.lr_at(30) == pytest.approx(0.5)
    assert s.lr_at(65) == pytest.approx(0.25)
    e = sched("exponential", decay_rate=0.9, min_lr=0.0)
    assert e.lr_at(25) == pytest.approx(0.9 ** 2.5)
    assert sched("exponential", decay_rate=0.1, min_lr=0.05).lr_at(90) == pytest.approx(0.05)  # floored
    assert sched("constant").lr_at(50) == 1.0


def test_plateau_reduces_after_patience_and_state_roundtrip():
    s = sched("plateau", patience_epochs=1, decay_rate=0.5, warmup_epochs=0, min_lr=0.0)
    s.num_updates = 30
    for m in (0.5, 0.6, 0.6):  # improvement, then one bad epoch (= patience): no reduction yet
        s.step_epoch(m)
    assert s.get_lr() == 1.0
    s.step_epoch(0.59)  # second bad epoch > patience
    assert s.get_lr() == pytest.approx(0.5)
    t = sched("plateau", patience_epochs=1, decay_rate=0.5, warmup_epochs=0, min_lr=0.0)
    t.load_state_dict(s.state_dict())
    assert t.get_lr() == s.get_lr() and t.num_updates == 30


def test_scheduler_sets_group_lr_with_scale_and_bad_name():
    p1, p2 = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD([{"params": [p1], "lr_scale": 1.0}, {"params": [p2], "lr_scale": 0.25}], lr=1.0)
    LRScheduler(opt, sched="constant", lr=2.0, epochs=1, updates_per_epoch=4, warmup_epochs=0)
    assert [g["lr"] for g in opt.param_groups] == [2.0, 0.5]
    with pytest.raises(ValueError, match="cosine"):  # a programming error here; users meet the schema
        sched("cosin")


# ----------------------------------------------------------------------------------- param groups
def test_no_decay_groups():
    model = tiny_vit()
    groups = param_groups(model, weight_decay=0.05)
    by_name = {n: g for g in groups for n in g["param_names"]}
    for name, p in model.named_parameters():
        wd = by_name[name]["weight_decay"]
        expect_no = p.ndim <= 1 or name.split(".")[0] in ("cls_token", "pos_embed")
        assert (wd == 0.0) == expect_no, name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_layer_decay_groups():
    model = tiny_vit()
    ld = 0.5
    groups = param_groups(model, weight_decay=0.05, layer_decay=ld)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    L = model.num_layers()
    assert L == 2
    assert scale["cls_token"] == pytest.approx(ld ** (L + 1))  # embeddings: layer 0
    assert scale["patch_embed.proj.weight"] == pytest.approx(ld ** (L + 1))
    assert scale["blocks.0.attn.qkv.weight"] == pytest.approx(ld ** L)
    assert scale["blocks.1.mlp.fc1.bias"] == pytest.approx(ld ** (L - 1))
    assert scale["head.weight"] == pytest.approx(1.0)
    names = {g["name"] for g in groups}
    assert "layer_0_no_decay" in names and "layer_3_decay" in names
    # the scheduler applies lr_scale: the head gets the full lr, the embeddings ld**3 of it
    cfg = load_config(None, ["--opt", "adamw", "--weight_decay", "0.05", "--layer_decay", str(ld)])
    opt = build_optimizer(cfg, model, lr=1e-3)
    LRScheduler(opt, sched="constant", lr=1e-3, epochs=1, updates_per_epoch=1)
    lrs = sorted({round(g["lr"], 12) for g in opt.param_groups})
    assert lrs == sorted(round(1e-3 * ld ** k, 12) for k in range(L + 2))


def test_build_optimizer_kinds():
    model = tiny_vit()
    cfg = load_config(None, ["--opt", "sgd", "--weight_decay", "1e-4", "--momentum", "0.9"])
    opt = build_optimizer(cfg, model, lr=0.1)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    cfg = load_config(None, ["--opt", "momentum"])
    assert not build_optimizer(cfg, model, lr=0.1).defaults["nesterov"]
    assert isinstance(build_optimizer(load_config(None, ["--opt", "adam"]), model, lr=0.1), torch.optim.Adam)
    with pytest.raises(UserError, match="'opt'.*lamb"):  # the schema refuses it, before any consumer
        load_config(None, ["--opt", "lamb"])


# ----------------------------------------------------------------------------------------- losses
def _log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def test_soft_distillation_matches_hand_computation():
    torch.manual_seed(0)
    cls, kd, teach = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    labels = torch.tensor([0, 3, 1])
    teacher = lambda x: teach
    alpha, tau = 0.3, 2.0
    loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", alpha, tau)(torch.zeros(3), (cls, kd), labels)
    # by hand: base CE; KL(p_t || p_s) at temperature tau, summed, * tau^2 / numel (DeiT losses.py)
    base = -sum(_log_softmax(cls[i].tolist())[labels[i]] for i in range(3)) / 3
    kl = 0.0
    for i in range(3):
        ls = _log_softmax((kd[i] / tau).tolist())
        lt = _log_softmax((teach[i] / tau).tolist())
        kl += sum(math.exp(t) * (t - s) for s, t in zip(ls, lt))
    expect = (1 - alpha) * base + alpha * kl * tau * tau / kd.numel()
    assert loss.item() == pytest.approx(expect, rel=1e-5)


def test_hard_distillation_and_none():
    torch.manual_seed(1)
    cls, kd, teach = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([1, 2, 3, 4])
    loss = DistillationLoss(nn.CrossEntropyLoss(), lambda x: teach, "hard", 0.5, 1.0)(None, (cls, kd), labels)
    t_arg = teach.argmax(1).tolist()
    base = -sum(_log_softmax(cls[i].tolist())[labels[i]] for i in range(4)) / 4
    hard = -sum(_log_softmax(kd[i].tolist())[t_arg[i]] for i in range(4)) / 4
    assert loss.item() == pytest.approx(0.5 * base + 0.5 * hard, rel=1e-5)
    none = DistillationLoss(nn.CrossEntropyLoss(), None, "none")
    assert none(None, (cls, kd), labels).item() == pytest.approx(base, rel=1e-5)  # class head only
    with pytest.raises(UserError):
        DistillationLoss(nn.CrossEntropyLoss(), None, "soft")


def test_base_losses():
    torch.manual_seed(2)
    logits, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    s = 0.1
    ls = LabelSmoothingCrossEntropy(s)(logits, y).item()
    lp = F.log_softmax(logits, -1)
    expect = ((1 - s) * -lp.gather(1, y[:, None]).squeeze(1) + s * -lp.mean(-1)).mean().item()
    assert ls == pytest.approx(expect, rel=1e-6)
    target = torch.full((6, 5), s / 5).scatter_(1, y[:, None], 1 - s + s / 5)
    assert SoftTargetCrossEntropy()(logits, target).item() == pytest.approx(expect, rel=1e-6)
    # fp32 even from bf16 logits
    assert SoftTargetCrossEntropy()(logits.bfloat16(), target).dtype == torch.float32
    bce = BinaryCrossEntropy(0.0)(logits, y).item()
    assert bce == pytest.approx(F.binary_cross_entropy_with_logits(logits, F.one_hot(y, 5).float()).item())
    cfg = load_config(None, ["--smoothing", "0.1"])
    assert isinstance(build_criterion(cfg, mixup_active=True).base, SoftTargetCrossEntropy)
    assert isinstance(build_criterion(cfg, mixup_active=False).base, LabelSmoothingCrossEntropy)


# -------------------------------------------------------------------------------------------- EMA
def test_ema_update():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model[1].num_batches_tracked += 5
    ema.update(model)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(ema.state_dict()[k], 0.9 * before[k] + 0.1 * v)
        else:
            assert torch.equal(ema.state_dict()[k], v)
    assert not any(p.requires_grad for p in ema.module.parameters())


# ------------------------------------------------------------------------------------------ loops
class Linear(nn.Module):
    """A float64 linear classifier; returns NaN logits for inputs whose first feature is 999."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3).double()

    def forward(self, x):
        out = self.fc(x)
        bad = (x[:, 0] == 999).any()
        return torch.where(bad, torch.full_like(out, float("nan")), out)


def _batches(n, bs, seed=0, bad_at=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randn(bs, 4, generator=g, dtype=torch.float64)
        if i == bad_at:
            x[0, 0] = 999
        out.append((x, torch.randint(0, 3, (bs,), generator=g)))
    return out


CPU = torch.device("cpu")


def _criterion():
    return DistillationLoss(nn.CrossEntropyLoss(), None, "none")


def test_grad_accumulation_equals_big_batch():
    torch.manual_seed(0)
    a = Linear()
    b = Linear()
    b.load_state_dict(a.state_dict())
    small = _batches(4, 4)
    big = [(torch.cat([small[i][0], small[i + 1][0]]), torch.cat([small[i][1], small[i + 1][1]])) for i in (0, 2)]
    oa, ob = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    ra = train_one_epoch(TrainStep(a, _criterion(), oa, CPU, update_freq=2), small)
    train_one_epoch(TrainStep(b, _criterion(), ob, CPU), big)
    assert ra["updates"] == 2 and ra["global_step"] == 2
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_nonfinite_skip_and_stop():
    torch.manual_seed(0)
    m = Linear()
    start = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    seen = []
    stats = train_one_epoch(TrainStep(m, _criterion(), opt, CPU, nonfinite_policy="skip"),
                            _batches(3, 4, bad_at=0), on_update=seen.append)
    assert stats["skipped"] == 1 and stats["updates"] == 3 and math.isfinite(stats["loss"])
    assert [i.skipped for i in seen] == [True, False, False]
    assert all(torch.isfinite(p).all() for p in m.parameters())
    # the skipped update left the weights alone: same as training on the two good batches only
    ref = Linear()
    ref.load_state_dict(start)
    train_one_epoch(TrainStep(ref, _criterion(), torch.optim.SGD(ref.parameters(), lr=0.1), CPU),
                    _batches(3, 4, bad_at=0)[1:])
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
    with pytest.raises(NonFiniteLossError, match="update 2"):
        train_one_epoch(TrainStep(m, _criterion(), opt, CPU, nonfinite_policy="stop"), _batches(3, 4, bad_at=1))


def test_fixed_loss_scaler_skips_overflow():
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    sc = FixedLossScaler(8.0)
    sc.scale((p * 2).sum()).backward()
    assert torch.equal(p.grad, torch.full((3,), 16.0))
    sc.step(opt)  # unscales to 2 and steps
    torch.testing.assert_close(p.detach(), torch.full((3,), -1.0))
    opt.zero_grad()
    sc.scale((p * float("inf")).sum()).backward()
    sc.step(opt)
    assert sc.skipped == 1 and torch.isfinite(p).all()
    assert FixedLossScaler().load_state_dict(sc.state_dict()) is None


def test_evaluate_metrics_and_confusion():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0], [0.0, 1.0, 5.0, 2.0, 3.0, 4.0],
                           [1.0, 0.0, 0.5, 0.2, 0.1, 0.3]])
    y = torch.tensor([0, 1, 5])

    class Fixed(nn.Module):
        def forward(self, x):
            return logits[x.long().view(-1)], logits[x.long().view(-1)]  # distilled pair: averaged

    loader = [(torch.tensor([[0.0], [1.0]]), y[:2]), (torch.tensor([[2.0]]), y[2:])]
    m = evaluate(Fixed(), loader, "cpu", confusion=True)
    # top-1: only sample 0; top-5: sample 0 (rank 1), sample 1 (class 1 is rank 5 of 6), sample 2 (rank 3)
    assert m["Top1-Acc"] == pytest.approx(1 / 3) and m["Top5-Acc"] == pytest.approx(1.0)
    assert m["Loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert m["confusion"].sum() == 3 and m["confusion"][0, 0] == 1 and m["confusion"][1, 2] == 1
    line = format_eval({"Loss": 1.42041, "Top1-Acc": 0.7310661, "Top5-Acc": 0.90621})
    assert line == "eval results: {'Loss': 1.4204, 'Top1-Acc': 0.731066, 'Top5-Acc': 0.90621}"


# ---------------------------------------------------------------------------------- seeding
def test_rng_state_roundtrip_weights_only():
    seeding.seed_everything(5)
    state = seeding.rng_state()
    expect = (random.random(), float(np.random.rand()), torch.rand(1).item())
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    seeding.set_rng_state(torch.load(buf, weights_only=True))
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expect


def test_updates_count_the_time_spent_waiting_for_the_loader():
    """A loader that takes 30 ms per batch: the updates report at least that much waiting, and the epoch's
    note says the loader set the pace; an in-memory one leaves the note plain."""
    def slow(batches):
        for batch in batches:
            time.sleep(0.03)
            yield batch

    m = Linear()
    step = TrainStep(m, _criterion(), torch.optim.SGD(m.parameters(), lr=0.1), CPU)
    stats = EpochStats()  # (its clock starts now)
    infos = list(iter_updates(step, slow(_batches(4, 4))))
    assert all(info.data_seconds >= 0.03 * (k + 1) - 1e-6 for k, info in enumerate(infos))
    for info in infos:
        stats.add(info)
    stats.finish(CPU, world=1)
    assert 0.03 * 4 / stats.seconds <= stats.data_wait + 1e-9 <= 1.0
    assert stats.data_wait_note(2, 8).startswith("waited for data") and stats.data_wait_note(2, 8).endswith(
        "(the loader set the pace: 2 loader worker(s) per process, 8 CPU(s); raise num_workers)")
    assert stats.data_wait_note(2, 2, "augment_on: device helps").endswith("2 CPU(s); augment_on: device helps)")
    assert stats.data_wait_note(2, 2).endswith("2 CPU(s); each CPU already has one)")
    stats.data_wait = 0.01
    assert stats.data_wait_note(2, 8) == "waited for data 1%"
