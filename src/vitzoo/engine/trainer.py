"""A training run from a :class:`~vitzoo.config.RunConfig`: build everything, train, evaluate, checkpoint.

Order of construction matters for reproducibility and DDP: seed -> model (+ pretrained weights) ->
data -> optimiser / schedule / scaler -> resume state -> DDP (broadcasts rank 0's weights) -> EMA
(a copy of the broadcast weights) -> RNG state restored last, just before the first batch.

A checkpoint is written every ``ckpt_save_every_step`` updates and/or ``ckpt_save_every_seconds``, and
after each epoch's validation; it holds model, EMA, optimiser, schedule, loss scaler, epoch/step,
sampler position and RNG states, so ``--resume`` continues bit-for-bit (one process, ``num_workers: 0``;
with loader workers or several processes the order of samples is exact but augmentation random
streams restart). Only rank 0 writes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.checkpoint import load_checkpoint, save_checkpoint
from vitzoo.engine import dist, runstate
from vitzoo.engine.ema import ModelEma, unwrap
from vitzoo.engine.loop import (
    FixedLossScaler,
    NonFiniteLossError,
    UpdateInfo,
    evaluate,
    format_eval,
    train_one_epoch,
)
from vitzoo.engine.losses import build_criterion
from vitzoo.engine.optim import build_optimizer
from vitzoo.engine.reporting import MetricsFile, Progress, Tensorboard, close_logger, setup_logger
from vitzoo.engine.schedule import build_scheduler
from vitzoo.errors import UserError


class _SkipBatches:
    """A batch sampler that drops the first ``n`` batches of another (mid-epoch resume: no data is read)."""

    def __init__(self, batch_sampler: Any, n: int) -> None:
        self.batch_sampler, self.n = batch_sampler, n

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.n:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.n)


def _skip_loader(loader: Any, n: int) -> Any:
    """The same loader (class, workers, collate, generator) starting at batch ``n`` of this epoch."""
    if n <= 0:
        return loader
    kw = {"batch_sampler": _SkipBatches(loader.batch_sampler, n), "num_workers": loader.num_workers,
          "collate_fn": loader.collate_fn, "pin_memory": loader.pin_memory,
          "worker_init_fn": loader.worker_init_fn, "generator": loader.generator}
    if loader.num_workers > 0:
        kw["prefetch_factor"] = loader.prefetch_factor
    return type(loader)(loader.dataset, **kw)


def precision(cfg: Any, device: torch.device) -> tuple[torch.dtype | None, torch.dtype | None, str]:
    """(autocast dtype, weight/input dtype for O3, description) from amp_level / amp_dtype."""
    level = str(cfg.amp_level).upper()
    if level == "O0":
        return None, None, "fp32"
    if device.type == "cpu" and cfg.amp_dtype == "auto":
        return None, None, "fp32 (amp_dtype auto on CPU: autocast is slower than fp32 there)"
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    dtype = getattr(torch, cfg.resolved_amp_dtype(bf16_ok))
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    if level == "O3":
        return None, dtype, f"{name} weights and activations (O3)"
    return dtype, None, f"{name} autocast ({level})"


class Trainer:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.rank, self.world, self.local_rank, self.device = dist.init_distributed(cfg.device)
        self.main = self.rank == 0
        dirs = cfg.run_dirs()
        self.out = Path(cfg.output_dir or ".")
        self.log_dir, self.ckpt_dir = Path(dirs["log_dir"]), Path(dirs["ckpt_dir"])
        self.best_dir, self.summary_dir = Path(dirs["best_ckpt_dir"]), Path(dirs["summary_dir"])
        self.log = setup_logger(self.log_dir / "train.log", self.main)
        for note in getattr(cfg, "notes", []) or []:
            self.log.info("config note: %s", note)
        if self.device.type == "cuda":  # TF32 matmuls/convs: the Ampere+ default for training (timm, DeiT)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        runstate.seed_everything(cfg.seed)  # same init everywhere; DDP broadcasts rank 0's anyway
        self._build_model()
        runstate.seed_everything(cfg.seed + self.rank)  # DeiT: seed + rank for data and dropout streams
        self._build_data()
        self._build_optim()
        self.epoch, self.global_step, self.resume_batch, self.pending_rng = 0, 0, 0, None
        self.last_ckpt: Path | None = None
        self.metrics = MetricsFile(self.log_dir, self.main)
        self._start_state()
        self._wrap()
        self.tb = Tensorboard(self.summary_dir, self.main, self.log)

    # --------------------------------------------------------------------------------- building
    def _build_model(self) -> None:
        from vitzoo.models import create_model

        cfg = self.cfg
        self.autocast_dtype, self.weight_dtype, prec = precision(cfg, self.device)
        model = create_model(cfg.model, pretrained=cfg.pretrained or None, **cfg.model_kwargs())
        self.distill = str(cfg.distillation_type).lower() != "none"
        if self.distill:
            if not getattr(model, "distilled", False):
                raise UserError(f"distillation_type={cfg.distillation_type} needs a distilled student "
                                f"(e.g. deit_tiny_distilled_patch16_224), not {cfg.model}")
            model.set_distilled_training(True)  # forward returns (cls_logits, dist_logits)
        self.channels_last = bool(cfg.channels_last) and self.device.type == "cuda"
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.weight_dtype is not None:
            model.to(self.weight_dtype)
        self.model = model
        n = sum(p.numel() for p in model.parameters())
        self.log.info("model %s: %.2fM parameters, %s, device %s, %d process(es)", cfg.model, n / 1e6, prec,
                      self.device, self.world)

    def _build_data(self) -> None:
        from vitzoo.data import build_dataset, build_loader, build_mixup, resolve_data_config

        cfg = self.cfg
        self.data_config = resolve_data_config(cfg, self.model)
        self.train_ds = build_dataset(cfg, "train", data_config=self.data_config)
        self.val_ds = build_dataset(cfg, "val", data_config=self.data_config, classes=self.train_ds.classes)
        self.class_names = list(self.train_ds.classes)
        if len(self.class_names) > cfg.num_classes:
            raise UserError(f"num_classes is {cfg.num_classes} but the train set has {len(self.class_names)} "
                            f"classes; set --num_classes {len(self.class_names)}")
        if len(self.class_names) != cfg.num_classes:
            self.log.warning("num_classes %d != %d classes found in the data", cfg.num_classes, len(self.class_names))
        distributed = self.world > 1
        self.train_loader = build_loader(cfg, self.train_ds, "train", distributed=distributed)
        self.val_loader = build_loader(cfg, self.val_ds, "val", distributed=distributed)
        self.mixup_fn = build_mixup(cfg, cfg.num_classes)
        self.update_freq = int(cfg.update_freq)
        self.updates_per_epoch = len(self.train_loader) // self.update_freq
        if self.updates_per_epoch < 1:
            raise UserError(f"update_freq {self.update_freq} is more than the {len(self.train_loader)} batches "
                            "of an epoch; lower update_freq or batch_size")
        self.log.info("data: %d train / %d val images, %d classes, %d updates per epoch of %d images",
                      len(self.train_ds), len(self.val_ds), len(self.class_names), self.updates_per_epoch,
                      cfg.global_batch(self.world))

    def _build_optim(self) -> None:
        cfg = self.cfg
        self.lr = cfg.scaled_lr(self.world)
        self.optimizer = build_optimizer(cfg, self.model, self.lr)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.lr, self.updates_per_epoch)
        teacher = None
        if self.distill:
            from vitzoo.engine.teacher import build_teacher

            teacher = build_teacher(cfg.teacher_model, cfg.teacher_path, cfg.num_classes, self.device)
        self.criterion = build_criterion(cfg, self.mixup_fn is not None, teacher)
        fp16 = torch.float16 in (self.autocast_dtype, self.weight_dtype)
        self.scaler = None
        if fp16 and (self.weight_dtype is not None or not cfg.is_dynamic_loss_scale):
            self.scaler = FixedLossScaler(cfg.loss_scale)
        elif fp16:
            self.scaler = torch.amp.GradScaler(self.device.type, init_scale=cfg.loss_scale, growth_interval=2000)
        self.log.info("optimizer %s lr %.4g (base %.4g x global batch %d / 512%s), schedule %s", cfg.opt,
                      self.lr, cfg.lr, cfg.global_batch(self.world), ", unscaled" if cfg.unscale_lr else "", cfg.sched)

    def _start_state(self) -> None:
        """Where the run starts: --resume (full state) > pretrained epoch state > start_epoch."""
        cfg = self.cfg
        path = runstate.find_resume(cfg.resume, self.ckpt_dir)
        if cfg.resume and path is None:
            self.log.info("resume auto: no checkpoint in %s, starting fresh", self.ckpt_dir)
        if path is not None:
            self._load_resume(path)
            return
        start = int(cfg.start_epoch)
        if cfg.pretrained and not cfg.exclude_epoch_state:
            meta = load_checkpoint(cfg.pretrained).get("meta") or {}
            start = max(start, int(meta.get("epoch", 0) or 0))
        if start:
            self.epoch, self.global_step = start, start * self.updates_per_epoch
            self.scheduler.load_state_dict({"num_updates": self.global_step})
            self.log.info("starting at epoch %d", start)

    def _load_resume(self, path: Path) -> None:
        ck = load_checkpoint(path, map_location="cpu")
        meta = ck.get("meta") or {}
        missing = [k for k in ("model", "optimizer", "scheduler") if k not in ck]
        if missing or "global_step" not in meta:
            raise UserError(f"resume: {path} is not a full vitzoo training checkpoint (lacks "
                            f"{', '.join(missing) or 'meta.global_step'}); use --pretrained for weights only")
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"resume: {path} does not match this model/optimizer ({str(e).splitlines()[0]})") from e
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.pending_ema = ck.get("ema")
        self.epoch = int(meta.get("epoch", 0))
        self.global_step = int(meta["global_step"])
        self.resume_batch = int(meta.get("step_in_epoch", 0))
        self.pending_rng = ck.get("rng") if self.rank == 0 or self.world == 1 else None
        self.metrics.load(self.epoch)
        self.last_ckpt = path
        self.log.info("resumed from %s: epoch %d, batch %d, global step %d", path, self.epoch,
                      self.resume_batch, self.global_step)

    def _wrap(self) -> None:
        """torch.compile and DDP around the plain model; EMA from the (broadcast) weights."""
        cfg = self.cfg
        net: nn.Module = self.model
        if cfg.compile:
            net = torch.compile(net)
        self.eval_net = net
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.train_net = net
        self.ema = None
        if cfg.model_ema:
            self.ema = ModelEma(self.model, cfg.model_ema_decay, "cpu" if cfg.model_ema_force_cpu else None)
            pending = getattr(self, "pending_ema", None)
            if pending:
                self.ema.load_state_dict(pending)
        self.pending_ema = None

    # ------------------------------------------------------------------------------ checkpoints
    def _payload(self, epoch: int, step_in_epoch: int, metrics: dict | None) -> dict[str, Any]:
        import vitzoo

        model = unwrap(self.model)
        meta = {
            "format": "vitzoo", "arch": getattr(model, "arch", self.cfg.model),
            "model_kwargs": dict(getattr(model, "model_kwargs", {}) or {}), "num_classes": self.cfg.num_classes,
            "class_names": self.class_names, "data_config": _jsonable(self.data_config),
            "config": self.cfg.to_dict(), "epoch": epoch, "global_step": self.global_step,
            "step_in_epoch": step_in_epoch, "metrics": dict(metrics or {}),
            "vitzoo_version": vitzoo.__version__, "torch_version": str(torch.__version__),
        }
        return {"model": model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": runstate.rng_state(), "meta": meta}

    def save(self, epoch: int, step_in_epoch: int, metrics: dict | None = None) -> Path | None:
        """Write a regular checkpoint (rank 0) and drop the oldest beyond ckpt_keep_num."""
        self._last_save = time.monotonic()
        if not self.main:
            return None
        path = self.ckpt_dir / runstate.ckpt_name(epoch, self.global_step)
        save_checkpoint(path, self._payload(epoch, step_in_epoch, metrics))
        runstate.prune(runstate.list_checkpoints(self.ckpt_dir), self.cfg.ckpt_keep_num)
        self.last_ckpt = path
        return path

    def save_best(self, epoch: int, metrics: dict) -> Path | None:
        top1 = float(metrics["Top1-Acc"])
        if not self.main or not runstate.is_better(top1, self.best_dir, self.cfg.best_ckpt_num):
            return None
        path = self.best_dir / runstate.best_name(top1, epoch, self.global_step)
        save_checkpoint(path, self._payload(epoch, 0, metrics))
        runstate.prune_best(self.best_dir, self.cfg.best_ckpt_num)
        if runstate.list_best(self.best_dir)[0][1] == path:
            self.log.info("new best top-1 %.4f: %s", top1, path)
        return path

    # ------------------------------------------------------------------------------------ run
    def _on_update(self, info: UpdateInfo, progress: Progress, num_batches: int) -> None:
        self.global_step = info.global_step
        cfg = self.cfg
        if not math.isnan(info.loss):
            self._window.append(info.loss)
        if info.global_step % max(1, cfg.summary_loss_collect_freq) == 0 and self._window:
            self.tb.scalars(info.global_step, **{"train/loss": sum(self._window) / len(self._window),
                                                 "train/lr": info.lr})
            self._window = []
        progress.update(info.batch // self.update_freq, info.global_step, info.loss, info.lr)
        if info.skipped:
            self.log.warning("update %d: non-finite loss, step skipped (nonfinite_policy=skip)", info.global_step)
        if info.batch >= num_batches:
            return  # the epoch-end checkpoint follows
        by_step = cfg.ckpt_save_every_step and info.global_step % cfg.ckpt_save_every_step == 0
        by_time = cfg.ckpt_save_every_seconds and time.monotonic() - self._last_save >= cfg.ckpt_save_every_seconds
        if by_step or by_time:
            self.save(info.epoch, info.batch)

    def fit(self) -> dict[str, Any]:
        """Train from the start state to ``cfg.epochs``; return a summary (paths, last/best metrics)."""
        cfg = self.cfg
        self._last_save, self._window = time.monotonic(), []
        last_eval: dict[str, Any] = {}
        total_skipped = 0
        if self.pending_rng is not None:
            runstate.set_rng_state(self.pending_rng)
        elif self.resume_batch or self.epoch:  # other ranks: a fresh, deterministic stream per resume point
            runstate.seed_everything(cfg.seed + self.rank + 7919 * self.global_step)
        from vitzoo.data import report_bad_files, set_epoch

        try:
            for epoch in range(self.epoch, cfg.epochs):
                set_epoch(self.train_loader, epoch)
                if self.train_loader.generator is not None:  # worker seeds depend on (seed, rank, epoch) only
                    self.train_loader.generator.manual_seed(cfg.seed * 100003 + self.rank * 1009 + epoch)
                if self.mixup_fn is not None and cfg.mixup_off_epoch and epoch >= cfg.mixup_off_epoch:
                    self.mixup_fn.mixup_enabled = False
                start_batch, self.resume_batch = self.resume_batch, 0
                num_batches = self.updates_per_epoch * self.update_freq
                progress = Progress(epoch, cfg.epochs, self.updates_per_epoch, start_batch // self.update_freq,
                                    cfg.print_loss_every, self.main, self.log, cfg.global_batch(self.world))
                t0 = time.perf_counter()
                try:
                    stats = train_one_epoch(
                        self.train_net, self.criterion, _skip_loader(self.train_loader, start_batch), self.optimizer,
                        self.device, epoch=epoch, scheduler=self.scheduler, scaler=self.scaler,
                        amp_dtype=self.autocast_dtype, input_dtype=self.weight_dtype, mixup_fn=self.mixup_fn,
                        clip_grad=cfg.clip_value, update_freq=self.update_freq, model_ema=self.ema,
                        nonfinite_policy=cfg.nonfinite_policy, start_batch=start_batch, num_batches=num_batches,
                        global_step=self.global_step, channels_last=self.channels_last,
                        on_update=lambda info, p=progress, n=num_batches: self._on_update(info, p, n))
                finally:
                    progress.close()
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                samples = torch.tensor([float(stats["samples"]), float(stats["skipped"])], device=self.device)
                samples = dist.all_reduce_sum(samples).tolist()
                img_s = samples[0] / seconds if seconds > 0 else 0.0
                total_skipped += int(samples[1] / self.world)
                report_bad_files(self.train_ds, self.out, epoch + 1)
                self.log.info("epoch %d/%d: train loss %.4f, %.1f img/s, %.0f s%s", epoch + 1, cfg.epochs,
                              stats["loss"], img_s, seconds,
                              f", {int(samples[1] / self.world)} skipped update(s)" if samples[1] else "")
                metrics: dict[str, Any] = {}
                if (epoch + 1) % max(1, cfg.eval_every) == 0 or epoch + 1 == cfg.epochs:
                    metrics = self.evaluate()
                    last_eval = metrics
                    self.scheduler.step_epoch(metrics["Top1-Acc"])
                self.tb.scalars(self.global_step, **{"train/img_per_sec": img_s, "train/epoch_loss": stats["loss"],
                                                     "val/loss": metrics.get("Loss"), "val/top1": metrics.get("Top1-Acc"),
                                                     "val/top5": metrics.get("Top5-Acc")})
                self.metrics.add({"epoch": epoch + 1, "step": self.global_step, "train_loss": stats["loss"],
                                  "lr": self.scheduler.get_lr(), "val_loss": metrics.get("Loss"),
                                  "val_top1": metrics.get("Top1-Acc"), "val_top5": metrics.get("Top5-Acc"),
                                  "img_per_sec": img_s, "time": seconds, "skipped_steps": int(samples[1] / self.world)})
                self.save(epoch + 1, 0, metrics)
                if metrics:
                    self.save_best(epoch + 1, metrics)
                self.epoch = epoch + 1
        except NonFiniteLossError as e:
            raise UserError(f"{e}: training stopped (nonfinite_policy=stop); last good checkpoint: "
                            f"{self.last_ckpt or 'none saved yet'}") from None
        finally:
            self.tb.close()
        best = runstate.list_best(self.best_dir)
        summary = {"output_dir": str(self.out), "last_checkpoint": str(self.last_ckpt) if self.last_ckpt else None,
                   "best_checkpoint": str(best[0][1]) if best else None, "best_top1": best[0][0] if best else None,
                   "metrics": last_eval, "skipped_updates": total_skipped, "epochs": self.epoch,
                   "global_step": self.global_step, "log_file": str(self.log_dir / "train.log")}
        self.log.info("done: last checkpoint %s; best %s; logs in %s", summary["last_checkpoint"],
                      summary["best_checkpoint"], self.log_dir)
        return summary

    def evaluate(self) -> dict[str, Any]:
        use_ema = self.cfg.use_ema_for_eval and self.ema is not None
        net = self.ema.module if use_ema else self.eval_net
        device = self.ema.device if (use_ema and self.ema.device is not None) else self.device
        metrics = evaluate(net, self.val_loader, device, amp_dtype=self.autocast_dtype if device == self.device
                           else None, num_classes=self.cfg.num_classes, channels_last=self.channels_last,
                           input_dtype=self.weight_dtype)
        self.log.info(format_eval(metrics))
        return metrics

    def close(self) -> None:
        self.tb.close()
        close_logger(self.log)
        dist.cleanup()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def train(cfg: Any) -> dict[str, Any]:
    """Run a whole training from ``cfg``; returns :meth:`Trainer.fit`'s summary."""
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
