"""A training run from a :class:`~vitzoo.config.RunConfig`: build everything, train, evaluate, checkpoint.

``fit`` is a loop over epochs: restore the start point (``--resume`` or fresh), then per epoch train the
updates (saving a checkpoint every ``ckpt_save_every_step`` updates and/or ``ckpt_save_every_seconds``),
then :meth:`Trainer._end_epoch`: validate, report, save, keep the best. A checkpoint is a
:class:`~vitzoo.checkpoint.RunState` (model, EMA, optimiser, schedule, loss scaler, position, RNG), so
``--resume`` continues bit-for-bit (one process, ``num_workers: 0``; with loader workers or several
processes the order of samples is exact but augmentation random streams restart). Only rank 0 writes.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitzoo.checkpoint import (
    CheckpointStore,
    RunFolders,
    RunState,
    load_checkpoint,
    model_meta,
)
from vitzoo.config import RunConfig
from vitzoo.data import loader_from_batch, report_bad_files, set_epoch, usable_cpus
from vitzoo.engine import dist
from vitzoo.engine.build import (
    TrainData,
    build_data,
    build_model,
    build_step,
    take_model_from_weights,
    take_num_classes_from_data,
)
from vitzoo.engine.dist import unwrap
from vitzoo.engine.loop import NonFiniteLossError, TrainStep, UpdateInfo, evaluate, format_eval, iter_updates
from vitzoo.engine.preempt import Preempted, StopRequest
from vitzoo.engine.reporting import EpochStats, MetricsFile, Progress, Tensorboard, close_logger, setup_logger
from vitzoo.engine.seeding import rng_state, seed_everything, set_rng_state
from vitzoo.errors import UserError
from vitzoo.runtime.precision import Precision, resolve_precision


@dataclass
class Position:
    """Where training stands: completed epochs, optimiser updates, micro-batch inside the current epoch."""

    epoch: int = 0
    global_step: int = 0
    batch: int = 0


class Trainer:
    def __init__(self, cfg: RunConfig) -> None:
        # one run per folder, decided before anything is written: refuse an earlier run, or clear it
        RunFolders.of(cfg).check_fresh(cfg.resume, cfg.overwrite, keep=(cfg.pretrained, cfg.teacher_path, cfg.tokenizer_path))
        self.cfg = cfg
        self.rank, self.world, _, self.device = dist.init_distributed(cfg.device, cfg.dist_timeout)
        self.main = self.rank == 0
        self.folders = RunFolders.of(cfg)
        self.store = CheckpointStore(self.folders, cfg.ckpt_keep_num, cfg.best_ckpt_num)
        self.log = setup_logger(self.folders.logs / "train.log", self.main)
        for note in cfg.notes:
            self.log.info("config note: %s", note)
        if self.device.type == "cuda":  # TF32 matmuls/convs: the Ampere+ default for training (timm, DeiT)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        seed_everything(cfg.seed)  # same init everywhere; DDP broadcasts rank 0's anyway
        model = self.build_model()
        self.precision = self.choose_precision(model)
        self.model = self.precision.cast_model(model)
        self.log.info("model %s: %.2fM parameters, %s, device %s, %d process(es)", self.model_name(),
                      sum(p.numel() for p in self.model.parameters()) / 1e6, self.precision.describe(),
                      self.device,
                      self.world)
        seed_everything(cfg.seed + self.rank)  # DeiT: seed + rank for data and dropout streams
        self.data = self.build_data()
        self.step, self.eval_net = self.build_step()
        self.metrics = MetricsFile(self.folders.logs, self.main)
        self.tb = Tensorboard(self.folders.tensorboard, self.main, self.log)
        self.last_ckpt: Path | None = None

    # ------------------------------------------------------------------------------ the task
    # Classification here; a subclass trains another task with the same loop, checkpoints and resume
    # (vitzoo.mim.pretrainer: BEiT's masked image modeling; vitzoo.tokenizers.train: a visual tokenizer)
    # by replacing these five, and the reporting hooks below where its model or metrics differ.
    def build_model(self) -> torch.nn.Module:
        """The fp32 model on the run's device (the precision is chosen for it, then applied)."""
        take_model_from_weights(self.cfg, self.log)
        take_num_classes_from_data(self.cfg, self.log)
        return build_model(self.cfg, self.device)

    def build_data(self) -> TrainData:
        return build_data(self.cfg, self.model, self.world, self.log)

    def build_step(self) -> tuple[TrainStep, torch.nn.Module]:
        return build_step(self.cfg, self.model, self.data, self.device, self.precision, self.world, self.log)

    def choose_precision(self, model: torch.nn.Module) -> Precision:
        """amp_level / amp_dtype for ``model``; ``auto`` on a CPU with bf16 units times a training step of
        it (rank 0 only: every process must train in the same precision, so the others take its answer)."""
        cfg = self.cfg
        precision = resolve_precision(cfg.amp_level, cfg.amp_dtype, self.device, model if self.main else None)
        return dist.all_gather_objects(precision)[0] if self.world > 1 else precision

    task = "classify"  # recorded in checkpoints: a pretrained file of another task starts at epoch 0
    score_name = "top-1"

    def score(self, metrics: dict[str, Any]) -> float:
        """The validation number that ranks checkpoints (best-N) and drives the plateau schedule."""
        return float(metrics["Top1-Acc"])

    def after_evaluate(self, epoch: int) -> None:
        """Called after each validation (pictures of what the model does, for instance)."""

    def model_name(self) -> str:
        """How the log names the model."""
        return self.cfg.model

    def describe_model(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild the model and feed it (arch, kwargs, preprocessing)."""
        return model_meta(unwrap(self.model))

    def epoch_row(self, row: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        """This epoch's metrics.jsonl line: the engine's ``row`` (reporting.METRIC_KEYS) plus what the task
        adds from its evaluation ``metrics`` (classification adds nothing: the row maps its metrics)."""
        return row

    def meta(self) -> dict[str, Any]:
        """What the checkpoint's meta records besides the model's own description."""
        return {"task": self.task, "num_classes": self.cfg.num_classes, "class_names": self.data.class_names,
                "num_images": {"train": _size(self.data.train_ds), "val": _size(self.data.val_ds)},  # model cards
                "data_config": self.data.data_config, "config": self.cfg.to_dict()}

    # ------------------------------------------------------------------------------ the run
    def fit(self) -> dict[str, Any]:
        """Train from the start point to ``cfg.epochs``; return a summary (paths, last/best metrics)."""
        cfg = self.cfg
        pos = self._restore()
        if self.device.type == "cpu" and self.data.val_loader is not None:
            # the validation workers fork now, while the heap is small, not after the first epoch has
            # grown it (copy-on-write pages: Loader.start_workers). A GPU run keeps its activations on the
            # device, and its larger validation prefetch would sit in shared memory through the epoch.
            self.data.val_loader.start_workers()
        last_eval: dict[str, Any] = {}
        skipped_total = 0
        try:
            with StopRequest() as stop:
                for epoch in range(pos.epoch, cfg.epochs):
                    stats = self._train_epoch(epoch, pos, stop)
                    last_eval = self._end_epoch(epoch, pos, stats) or last_eval
                    skipped_total += stats.skipped
                    _, stop_name = self._agree(False, stop)
                    if stop_name:
                        self._stopped(stop_name, pos)
        except NonFiniteLossError as e:
            raise UserError(f"{e}: training stopped (nonfinite_policy=stop); last good checkpoint: "
                            f"{self.last_ckpt or 'none saved yet'}") from None
        except (dist.PeerLost, RuntimeError) as e:  # DDP's gradient all-reduce fails inside backward()
            if self.world == 1 or not (isinstance(e, dist.PeerLost) or dist.is_peer_error(e)):
                raise
            message = str(e) if isinstance(e, dist.PeerLost) else dist.lost_message(e)
            raise dist.PeerLost(f"{message}; stopping; last checkpoint: {self.last_ckpt or 'none saved yet'}"
                                ) from None
        finally:
            self.tb.close()
        return self._summary(pos, last_eval, skipped_total)

    def _train_epoch(self, epoch: int, pos: Position, stop: StopRequest) -> EpochStats:
        """One epoch's updates from ``pos.batch``; advances ``pos``; saves periodic checkpoints on the way
        and a last one when asked to stop."""
        cfg, data = self.cfg, self.data
        set_epoch(data.train_loader, epoch)
        if data.train_loader.generator is not None:  # worker seeds depend on (seed, rank, epoch) only
            data.train_loader.generator.manual_seed(cfg.seed * 100003 + self.rank * 1009 + epoch)
        if data.mixup is not None and cfg.mixup_off_epoch and epoch >= cfg.mixup_off_epoch:
            data.mixup.mixup_enabled = False
        num_batches = data.updates_per_epoch * cfg.update_freq
        progress = Progress(epoch, cfg.epochs, data.updates_per_epoch, pos.batch // cfg.update_freq,
                            cfg.print_loss_every, self.main, self.log, cfg.global_batch(self.world))
        stats, last_save = EpochStats(), time.monotonic()
        try:
            updates = iter_updates(self.step, loader_from_batch(data.train_loader, pos.batch), epoch=epoch,
                                   start_batch=pos.batch, num_batches=num_batches, global_step=pos.global_step)
            for info in updates:
                pos.global_step, pos.batch = info.global_step, info.batch
                stats.add(info)
                self._report_update(info, progress)
                if info.batch == num_batches:  # the epoch's own checkpoint and stop check come next
                    continue
                save_due, stop_name = self._agree(self._periodic_save_due(info, last_save), stop)
                if save_due or stop_name:
                    self.save(pos)
                    last_save = time.monotonic()
                if stop_name:
                    self._stopped(stop_name, pos)
        finally:
            progress.close()
        stats.finish(self.device, self.world)
        return stats

    def _agree(self, save_due: bool, stop: StopRequest) -> tuple[bool, str | None]:
        """(save a checkpoint now?, the signal that stops the run) -- the same answer on every rank: one
        all-reduce per update under torchrun, since a clock or a signal may reach one process only."""
        save_votes, stop_votes = dist.all_reduce_sum(
            torch.tensor([float(save_due), float(stop.signal_name is not None)], device=self.device)).tolist()
        stop_name = (stop.signal_name or "a signal to another process") if stop_votes else None
        return save_votes > 0, stop_name

    def _stopped(self, name: str, pos: Position) -> None:
        """Raise Preempted for a stop at ``pos``, whose checkpoint has just been written."""
        where = f"epoch {pos.epoch + 1 if pos.batch else pos.epoch}, update {pos.global_step}"
        self.log.info("stopped by %s at %s; checkpoint %s", name, where, self.last_ckpt)
        raise Preempted(f"{name}: stopped at {where}; checkpoint {self.last_ckpt}", str(self.last_ckpt))

    def _report_update(self, info: UpdateInfo, progress: Progress) -> None:
        self.tb.loss_window(info.global_step, info.loss, info.lr, self.cfg.summary_loss_collect_freq)
        progress.update(info.batch // self.cfg.update_freq, info.global_step, info.loss, info.lr)
        if info.skipped:
            self.log.warning("update %d: non-finite loss, step skipped (nonfinite_policy=skip)", info.global_step)

    def _periodic_save_due(self, info: UpdateInfo, last_save: float) -> bool:
        cfg = self.cfg
        by_step = cfg.ckpt_save_every_step and info.global_step % cfg.ckpt_save_every_step == 0
        by_time = cfg.ckpt_save_every_seconds and time.monotonic() - last_save >= cfg.ckpt_save_every_seconds
        return bool(by_step or by_time)

    def _end_epoch(self, epoch: int, pos: Position, stats: EpochStats) -> dict[str, Any]:
        """Validate (when due), report the epoch, write its checkpoint and keep it if it is among the best."""
        cfg = self.cfg
        report_bad_files(self.data.train_ds, self.folders.output, epoch + 1)
        self.log.info("epoch %d/%d: train loss %.4f, %.1f img/s, %.0f s, %s%s", epoch + 1, cfg.epochs, stats.loss,
                      stats.img_per_sec, stats.seconds,
                      stats.data_wait_note(self.data.train_loader.num_workers, usable_cpus(), self._loader_remedy()),
                      f", {stats.skipped} skipped update(s)" if stats.skipped else "")
        metrics: dict[str, Any] = {}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            metrics = self.evaluate()
            self.step.scheduler.step_epoch(self.score(metrics))
            self.after_evaluate(epoch + 1)
        self.tb.epoch(pos.global_step, stats, metrics)
        self.metrics.add(self.epoch_row(stats.row(epoch + 1, pos.global_step, self.step.scheduler.get_lr(), metrics),
                                        metrics))
        pos.epoch, pos.batch = epoch + 1, 0
        self.save(pos, metrics)
        if metrics:
            self.save_best(pos, metrics)
        return metrics

    def _loader_remedy(self) -> str:
        """What a loader-bound GPU run with every CPU busy can still change (README "Data pipeline")."""
        if self.device.type != "cuda":
            return ""
        if self.cfg.augment_on == "cpu":
            return "augment_on: device moves auto-augment, normalisation and erasing onto the GPU"
        if self.cfg.decode_on == "cpu":
            return "decode_on: device moves the JPEG decoding and the crop onto the GPU too"
        return ""

    def evaluate(self) -> dict[str, Any]:
        ema = self.step.ema if self.cfg.use_ema_for_eval else None
        net = ema.module if ema is not None else self.eval_net
        device = ema.device if (ema is not None and ema.device is not None) else self.device
        precision = self.precision if device == self.device else resolve_precision("O0", "auto", device)
        metrics = evaluate(net, self.data.val_loader, device, precision=precision, num_classes=self.cfg.num_classes,
                           channels_last=self.step.channels_last)
        self.log.info(format_eval(metrics))
        return metrics

    # ------------------------------------------------------------------------------ checkpoints
    def run_state(self, pos: Position, metrics: dict | None = None, rng: dict | None = None) -> RunState:
        """The whole run at ``pos`` as one object (what a checkpoint holds)."""
        model = unwrap(self.model)
        meta = {**self.describe_model(), **self.meta()}
        step = self.step
        return RunState(model=model.state_dict(), meta=meta, ema=step.ema.state_dict() if step.ema else None,
                        optimizer=step.optimizer.state_dict(), scheduler=step.scheduler.state_dict(),
                        scaler=step.scaler.state_dict() if step.scaler is not None else None, rng=rng or rng_state(),
                        epoch=pos.epoch, global_step=pos.global_step, step_in_epoch=pos.batch,
                        metrics=dict(metrics or {}))

    def save(self, pos: Position, metrics: dict | None = None) -> Path | None:
        """Write a regular checkpoint (rank 0) and drop the oldest beyond ckpt_keep_num. Every rank calls
        it: each one's RNG state goes into the file, so a resume on the same world size is exact."""
        rngs = dist.all_gather_objects(rng_state())
        if not self.main:
            return None
        rng = rngs[0] if self.world == 1 else {"per_rank": rngs}
        self.last_ckpt = self.store.save(self.run_state(pos, metrics, rng))
        return self.last_ckpt

    def save_best(self, pos: Position, metrics: dict) -> Path | None:
        if not self.main:
            return None
        score = self.score(metrics)
        path = self.store.save_if_best(self.run_state(pos, metrics), score)
        if path is not None and self.store.best()[1] == path:
            self.log.info("new best %s %.4f: %s", self.score_name, score, path)
        return path

    def _restore(self) -> Position:
        """The start point: ``--resume`` (full state) > a pretrained file's epoch count > ``start_epoch``."""
        cfg = self.cfg
        found = self.store.load_resume(cfg.resume, self.log.warning)
        if cfg.resume and found is None:
            self.log.info("resume auto: no checkpoint in %s, starting fresh", self.folders.checkpoints)
        pos = self._resume(*found) if found is not None else self._fresh_start()
        if (pos.epoch or pos.batch) and not (found is not None and self._restore_rng(found[1].rng)):
            # a fresh, deterministic stream per start point where no RNG state was saved for this rank
            seed_everything(cfg.seed + self.rank + 7919 * pos.global_step)
        return pos

    def _fresh_start(self) -> Position:
        cfg = self.cfg
        start = cfg.start_epoch
        # a local vitzoo file may carry an epoch count; weights by name (tag, hub, URL) are releases: none
        if cfg.pretrained and not cfg.exclude_epoch_state and os.path.isfile(cfg.pretrained):
            meta = load_checkpoint(cfg.pretrained).get("meta") or {}
            if meta.get("task", "classify") == self.task:  # a pre-training's epochs are not this run's
                start = max(start, int(meta.get("epoch", 0) or 0))
        pos = Position(start, start * self.data.updates_per_epoch, 0)
        if start:
            self.step.scheduler.load_state_dict({"num_updates": pos.global_step})
            self.log.info("starting at epoch %d", start)
        return pos

    def _resume(self, path: Path, state: RunState) -> Position:
        step = self.step
        try:
            self.model.load_state_dict(state.model)
            step.optimizer.load_state_dict(state.optimizer)
        except (RuntimeError, ValueError, KeyError) as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            detail = (lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]).rstrip(".")
            head = state.model.get("head.weight")
            if head is not None and head.shape[0] != self.cfg.num_classes:
                detail += f"; the checkpoint has a {head.shape[0]}-way head: --num_classes {head.shape[0]} continues it"
            raise UserError(f"resume: {path} does not match this model/optimizer ({detail})") from None
        step.scheduler.load_state_dict(state.scheduler)
        if step.scaler is not None and state.scaler:
            step.scaler.load_state_dict(state.scaler)
        if step.ema is not None:  # a run that kept no EMA before starts it from the resumed weights
            step.ema.load_state_dict(state.ema or state.model)
        self.metrics.load(state.epoch)
        self.last_ckpt = path
        self.log.info("resumed from %s: epoch %d, batch %d, global step %d", path, state.epoch,
                      state.step_in_epoch, state.global_step)
        return Position(state.epoch, state.global_step, state.step_in_epoch)

    def _restore_rng(self, rng: dict) -> bool:
        """This rank's RNG state from the checkpoint, if it holds one (same world size); set just before
        the first batch, so the run continues bit-for-bit."""
        per_rank = rng.get("per_rank") if "per_rank" in rng else [rng] if self.rank == 0 else []
        if self.rank >= len(per_rank) or (self.world > 1 and len(per_rank) != self.world):
            return False
        set_rng_state(per_rank[self.rank])
        return True

    def _summary(self, pos: Position, last_eval: dict[str, Any], skipped_total: int) -> dict[str, Any]:
        best = self.store.best()
        summary = {"output_dir": str(self.folders.output),
                   "last_checkpoint": str(self.last_ckpt) if self.last_ckpt else None,
                   "best_checkpoint": str(best[1]) if best else None, "best_top1": best[0] if best else None,
                   "metrics": last_eval, "skipped_updates": skipped_total, "epochs": pos.epoch,
                   "global_step": pos.global_step, "log_file": str(self.folders.logs / "train.log")}
        self.log.info("done: last checkpoint %s; best %s; logs in %s", summary["last_checkpoint"],
                      summary["best_checkpoint"], self.folders.logs)
        return summary

    def close(self) -> None:
        self.tb.close()
        close_logger(self.log)
        dist.cleanup()


def train(cfg: RunConfig, trainer_cls: type[Trainer] = Trainer) -> dict[str, Any]:
    """Run a whole training from ``cfg`` (the task of ``trainer_cls``); returns :meth:`Trainer.fit`'s summary."""
    trainer = trainer_cls(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _size(dataset: Any) -> int | None:
    """Images in a data set; None for a stream that does not know (a WebDataset of unknown length)."""
    try:
        return len(dataset)
    except TypeError:
        return None
