"""Training-step throughput and peak memory: vitzoo's engine vs a plain timm-style step, side by side.

Both sides train the same architecture at the same batch size and precision on the same synthetic
batch kept on the device (data loading is excluded: this measures the step). Ours is
``vitzoo.create_model`` + :func:`vitzoo.engine.loop.train_one_epoch` (param groups, per-step schedule,
non-finite guard, clipping, EMA if asked); theirs is ``timm.create_model`` + fused AdamW + autocast +
backward + step, with no host syncs (the fastest honest loop, as timm's train.py between log lines).

    python benchmarks/bench_train.py --model deit_small_patch16_224 --batch-size 128 --amp bf16
    python benchmarks/bench_train.py --model deit_base_patch16_224 --batch-size 64 --compile

Prints one row per side and the ratio ours / timm (img/s; >= 1.0 means ours is at least as fast).
"""
from __future__ import annotations

import argparse
import gc
import time

import torch
import torch.nn.functional as F


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_mem(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def _batches(x, y, n):
    for _ in range(n):
        yield x, y


def bench_ours(args, device, amp_dtype, x, y) -> tuple[float, float]:
    from vitzoo import create_model
    from vitzoo.config import load_config
    from vitzoo.engine.ema import ModelEma
    from vitzoo.engine.loop import TrainStep, train_one_epoch
    from vitzoo.engine.losses import build_criterion
    from vitzoo.engine.optim import build_optimizer
    from vitzoo.engine.schedule import LRScheduler
    from vitzoo.runtime.precision import Precision

    model = create_model(args.model, num_classes=args.num_classes, img_size=args.img_size,
                         drop_path_rate=args.drop_path).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    cfg = load_config(None, ["--opt", "adamw", "--weight_decay", "0.05", "--smoothing", "0.1"])
    opt = build_optimizer(cfg, model, 5e-4)
    sched = LRScheduler(opt, sched="cosine", lr=5e-4, epochs=1, updates_per_epoch=args.steps + args.warmup,
                        warmup_epochs=0.1, warmup_lr=1e-6, min_lr=1e-5)
    crit = build_criterion(cfg, mixup_active=False)
    ema = ModelEma(model, 0.9999) if args.ema else None
    net = torch.compile(model) if args.compile else model
    step = TrainStep(net, crit, opt, device, precision=Precision(autocast=amp_dtype), scheduler=sched,
                     clip_grad=args.clip_grad, ema=ema, channels_last=args.channels_last)
    train_one_epoch(step, _batches(x, y, args.warmup))
    _sync(device)
    _reset_mem(device)
    t0 = time.perf_counter()
    train_one_epoch(step, _batches(x, y, args.steps))
    _sync(device)
    return args.steps * x.shape[0] / (time.perf_counter() - t0), _peak_gib(device)


def bench_timm(args, device, amp_dtype, x, y) -> tuple[float, float]:
    import timm

    model = timm.create_model(args.timm_model or args.model, num_classes=args.num_classes, img_size=args.img_size,
                              drop_path_rate=args.drop_path).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and n not in model.no_weight_decay()]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n in model.no_weight_decay()]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-4, fused=device.type == "cuda")
    ema = timm.utils.ModelEmaV3(model, decay=0.9999) if args.ema else None
    net = torch.compile(model) if args.compile else model
    net.train()

    def step(n):
        for _ in range(n):
            xb = x.contiguous(memory_format=torch.channels_last) if args.channels_last else x
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = net(xb)
            loss = F.cross_entropy(out.float(), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            opt.step()
            if ema is not None:
                ema.update(model)

    step(args.warmup)
    _sync(device)
    _reset_mem(device)
    t0 = time.perf_counter()
    step(args.steps)
    _sync(device)
    return args.steps * x.shape[0] / (time.perf_counter() - t0), _peak_gib(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="deit_small_patch16_224", help="vitzoo model name (timm has the same)")
    p.add_argument("--timm-model", default=None, help="timm name when it differs from --model")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--amp", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--steps", type=int, default=50, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per side first")
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--clip-grad", type=float, default=None)
    p.add_argument("--ema", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--order", choices=["ours-first", "timm-first"], default="timm-first")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.amp]
    if args.amp == "fp16":
        raise SystemExit("fp16 needs a GradScaler on both sides; benchmark bf16 or fp32")
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    sides = [("timm", bench_timm), ("vitzoo", bench_ours)]
    if args.order == "ours-first":
        sides.reverse()
    res = {}
    for name, fn in sides:
        res[name] = fn(args, device, amp_dtype, x, y)
        _reset_mem(device)
    dev = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{args.model} batch {args.batch_size} {args.amp} img {args.img_size} compile={args.compile} "
          f"ema={args.ema} clip={args.clip_grad} on {dev}")
    print(f"{'side':<8} {'img/s':>10} {'peak GiB':>9}")
    for name in ("vitzoo", "timm"):
        print(f"{name:<8} {res[name][0]:>10.1f} {res[name][1]:>9.2f}")
    print(f"ratio vitzoo/timm img/s: {res['vitzoo'][0] / res['timm'][0]:.3f}  "
          f"peak memory: {res['vitzoo'][1] / res['timm'][1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
