"""A run's parts, built from its RunConfig: the model, the data, and the training step.

Order matters for reproducibility and DDP (the trainer keeps it): seed -> model (+ pretrained weights)
-> seed + rank -> data -> optimiser / schedule / loss / scaler -> DDP (broadcasts rank 0's weights) ->
EMA (a copy of those weights).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vitzoo.config import RunConfig
from vitzoo.data import build_dataset, build_loader, build_mixup, device_stage, resolve_data_config
from vitzoo.data.build import train_class_count
from vitzoo.data.datasets import base_dataset
from vitzoo.data.device.decode import DeviceDecode
from vitzoo.engine.ema import ModelEma
from vitzoo.engine.loop import TrainStep
from vitzoo.engine.losses import build_criterion
from vitzoo.engine.optim import build_optimizer
from vitzoo.engine.scaling import build_scaler
from vitzoo.engine.schedule import build_scheduler
from vitzoo.engine.teacher import build_teacher
from vitzoo.errors import UserError
from vitzoo.models import create_model
from vitzoo.models.weights_table import find_tag
from vitzoo.runtime.precision import Precision


def model_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Keyword overrides for ``create_model(cfg.model, **kw)`` (family defaults kept where unset)."""
    kw: dict[str, Any] = {"num_classes": cfg.num_classes, "drop_rate": cfg.drop,
                          "drop_path_rate": cfg.drop_path, "attn_drop_rate": cfg.attn_drop}
    optional = {"img_size": cfg.input_size, "layer_scale_init_value": cfg.layer_scale_init_value,
                "use_rel_pos_bias": cfg.rel_pos_bias, "use_abs_pos_emb": cfg.abs_pos_emb,
                "gelu_approximate": cfg.gelu_approximate or None,
                "grad_checkpointing": cfg.grad_checkpointing or None}
    kw.update({k: v for k, v in optional.items() if v is not None})
    kw.update(cfg.model_overrides)
    return kw


def take_num_classes_from_data(cfg: RunConfig, log: logging.Logger) -> None:
    """Where the user did not set ``num_classes``, the train set's class count sets it (DeiT's main.py takes
    ``nb_classes`` from its dataset too). The 1000-way default on a 5-class folder trained 995 outputs no
    image is labelled with, and its checkpoint then predicted 1000 classes with no names."""
    found = train_class_count(cfg)
    if "num_classes" in cfg.explicit or found is None or found == cfg.num_classes:
        return
    log.info("num_classes %d: the classes of the train set (set num_classes to choose another)", found)
    cfg.num_classes = found


def take_model_from_weights(cfg: RunConfig, log: logging.Logger) -> None:
    """A weights tag as ``pretrained`` names its architecture: where the user did not set ``model`` (the
    fine-tuning preset sets none), the tag's is trained. A BEiT tag brings its release's fine-tuning layer
    decay where ``layer_decay`` is unset (unilm's get_started_for_image_classification.md)."""
    tag = find_tag(cfg.pretrained) if cfg.pretrained and not os.path.exists(cfg.pretrained) else None
    if tag is None:
        return
    if "model" not in cfg.explicit and cfg.model != tag.arch:
        log.info("model %s: the architecture of %s (set model to choose another)", tag.arch, tag.tag)
        cfg.model = tag.arch
    if tag.layer_decay is not None and "layer_decay" not in cfg.explicit:
        log.info("layer_decay %s: the fine-tuning layer decay of %s's release", tag.layer_decay, tag.tag)
        cfg.layer_decay = tag.layer_decay


def build_model(cfg: RunConfig, device: torch.device) -> nn.Module:
    """The fp32 student on ``device``; a distilled one returns both heads while training."""
    model = create_model(cfg.model, pretrained=cfg.pretrained or None, **model_kwargs(cfg))
    if cfg.distillation_type != "none":
        if not model.distilled:
            raise UserError(f"distillation_type={cfg.distillation_type} needs a distilled student "
                            f"(e.g. deit_tiny_distilled_patch16_224), not {cfg.model}")
        model.set_distilled_training(True)  # forward returns (cls_logits, dist_logits)
    model.to(device)
    if channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)
    return model


def channels_last(cfg: RunConfig, device: torch.device) -> bool:
    return cfg.channels_last and device.type == "cuda"  # a CUDA memory-format win; none on CPU


@dataclass
class TrainData:
    """The run's datasets and loaders, and the numbers derived from them."""

    data_config: dict[str, Any]
    train_ds: Any
    val_ds: Any
    train_loader: Any
    val_loader: Any
    mixup: Any
    class_names: list[str]
    updates_per_epoch: int


def build_data(cfg: RunConfig, model: nn.Module, world: int, log: logging.Logger) -> TrainData:
    data_config = resolve_data_config(cfg, model)
    train_ds = build_dataset(cfg, "train", data_config=data_config)
    val_ds = build_dataset(cfg, "val", data_config=data_config, classes=train_ds.classes)
    class_names = list(train_ds.classes)
    if len(class_names) > cfg.num_classes:
        raise UserError(f"num_classes is {cfg.num_classes} but the train set has {len(class_names)} "
                        f"classes; set --num_classes {len(class_names)}")
    if len(class_names) != cfg.num_classes:
        log.warning("num_classes %d != %d classes found in the data", cfg.num_classes, len(class_names))
    train_loader = build_loader(cfg, train_ds, "train", distributed=world > 1)
    updates_per_epoch = len(train_loader) // cfg.update_freq
    if updates_per_epoch < 1:
        raise UserError(f"update_freq {cfg.update_freq} is more than the {len(train_loader)} batches "
                        "of an epoch; lower update_freq or batch_size")
    log.info("data: %d train / %d val images, %d classes, %d updates per epoch of %d images",
             len(train_ds), len(val_ds), len(class_names), updates_per_epoch, cfg.global_batch(world))
    return TrainData(data_config, train_ds, val_ds, train_loader,
                     build_loader(cfg, val_ds, "val", distributed=world > 1), build_mixup(cfg, cfg.num_classes),
                     class_names, updates_per_epoch)


def build_step(cfg: RunConfig, model: nn.Module, data: TrainData, device: torch.device, precision: Precision,
               world: int, log: logging.Logger, *, criterion: Callable | None = None,
               forward: Callable | None = None) -> tuple[TrainStep, nn.Module]:
    """The training step (optimiser, schedule, loss, scaler, EMA, DDP) and the network to evaluate.

    ``criterion`` / ``forward``: another task's loss and forward (pre-training); default classification.
    """
    lr = cfg.scaled_lr(world)
    warn_about_schedule(cfg, lr, log, augmenting=criterion is None)
    optimizer = build_optimizer(cfg, model, lr)
    if criterion is None:
        teacher = None
        if cfg.distillation_type != "none":
            teacher = build_teacher(cfg.teacher_model, cfg.teacher_path, cfg.num_classes, device)
        criterion = build_criterion(cfg, data.mixup is not None, teacher)
    log.info("optimizer %s lr %.4g (base %.4g x global batch %d / 512%s), schedule %s", cfg.opt, lr, cfg.lr,
             cfg.global_batch(world), ", unscaled" if cfg.unscale_lr else "", cfg.sched)
    net: nn.Module = torch.compile(model) if cfg.compile else model
    eval_net = net
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    ema = None
    if cfg.model_ema:  # a copy of the (broadcast) weights
        ema = ModelEma(model, cfg.model_ema_decay, "cpu" if cfg.model_ema_force_cpu else None)
    step = TrainStep(
        model=net, criterion=criterion, forward=forward, optimizer=optimizer,
        device=device, precision=precision,
        scheduler=build_scheduler(cfg, optimizer, lr, data.updates_per_epoch),
        scaler=build_scaler(precision, device, cfg.is_dynamic_loss_scale, cfg.loss_scale), mixup=data.mixup,
        clip_grad=cfg.clip_value, update_freq=cfg.update_freq, ema=ema, nonfinite_policy=cfg.nonfinite_policy,
        channels_last=channels_last(cfg, device), device_augment=_device_augment(data, device, log))
    return step, eval_net


def _device_augment(data: TrainData, device: torch.device, log: logging.Logger) -> Callable | None:
    """The device half of the train transform under ``augment_on: device``, announced once; else None."""
    dataset = base_dataset(data.train_ds)
    stage = device_stage(getattr(dataset, "transform", None))
    if stage is not None:
        decoded_there = isinstance(stage, DeviceDecode)
        if decoded_there:  # unreadable JPEGs: in this run's log, and in the epoch's bad_files.txt
            stage.log = log
            stage.report_bad = getattr(dataset, "merge_bad_files", None)
        log.info("augmentation: %s in the loader workers; %sauto-augment, normalisation and random erasing on %s, "
                 "per batch (augment_on: device%s)", "file reads and random draws" if decoded_there else
                 "decode, crop and flip", "JPEG decode, crop, flip, " if decoded_there else "", device,
                 ", decode_on: device" if decoded_there else "")
        if device.type == "cpu":  # measured: 21 ms per image there against 1.4 ms saved per image in a worker
            log.warning("augment_on: device on a CPU runs the augmentation in the training process, between "
                        "steps, on the cores the workers would use: it pays on a GPU; augment_on: cpu here")
    return stage


def warn_about_schedule(cfg: RunConfig, lr: float, log: logging.Logger, augmenting: bool = True) -> None:
    """One line each for the schedule choices that quietly hurt short runs (``augmenting``: the task uses
    the classification recipe's mixup / auto-augment / erasing)."""
    ramps = cfg.warmup_epochs + cfg.cooldown_epochs
    if cfg.epochs and ramps > cfg.epochs / 3:
        log.warning("warmup_epochs %d + cooldown_epochs %d take %d of %d epochs: the full lr is reached "
                    "briefly, if at all; lower them for a short run", cfg.warmup_epochs, cfg.cooldown_epochs,
                    ramps, cfg.epochs)
    heavy = [k for k, on in (("mixup", cfg.mixup > 0), ("cutmix", cfg.cutmix > 0), ("aa", cfg.aa != "none"),
                             ("reprob", cfg.reprob > 0)) if on]
    if cfg.epochs < 30 and heavy and augmenting:
        # measured on 1,437 digit images, 15 epochs: 41% with the DeiT recipe, 68% with these off
        log.warning("%d epochs with the DeiT recipe's regularisation (%s on): made for 300 ImageNet epochs, "
                    "it usually costs accuracy on a short run; set them to 0 / none to compare",
                    cfg.epochs, ", ".join(heavy))
    if cfg.lr > 0 and not 0.25 <= lr / cfg.lr <= 4:
        log.warning("linear lr scaling (lr x global batch / 512) turns lr %.3g into %.3g (x%.2f); set "
                    "unscale_lr: true to use lr as given", cfg.lr, lr, lr / cfg.lr)
