"""``vitzoo pretrain``: BEiT's masked image modeling, run by the training engine.

:class:`Pretrainer` is the engine's :class:`~vitzoo.engine.trainer.Trainer` with another task: the model
is the encoder plus mask token and LM head (:mod:`vitzoo.models.beit_mim`), the data are unlabeled images
seen through two views with a block mask (:mod:`vitzoo.mim.transforms`), the loss is cross-entropy on the
masked positions' visual tokens or MSE on their pixels (:mod:`vitzoo.mim.task`), and validation reports
the masked-token accuracy. Everything else is the engine's: checkpoints, exact resume, pre-emption,
torchrun, precision, EMA, logs, TensorBoard and progress.

Validation images: ``data_path/val_dir`` or ``val_data_path`` when present; otherwise a fixed subset of the
training images (``val_num_samples``, default 256), which then measures fit, not generalisation (logged).
Each validation image keeps one crop and one mask for the whole run, so epochs compare.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, default_collate

from vitzoo.data import build_loader, build_unlabeled_dataset, resolve_data_config
from vitzoo.data.datasets import SampleKey
from vitzoo.data.loader import mix_seed
from vitzoo.engine.build import TrainData, build_step, model_kwargs
from vitzoo.engine.dist import unwrap
from vitzoo.engine.loop import TrainStep
from vitzoo.engine.trainer import Trainer
from vitzoo.errors import UserError
from vitzoo.mim.pictures import draw_mim_examples
from vitzoo.mim.targets import MIMTarget, build_target, second_view_size
from vitzoo.mim.task import MIMForward, evaluate_mim, format_mim_eval, mim_criterion
from vitzoo.mim.transforms import MIMTransform
from vitzoo.models.beit_mim import build_mim_model, mim_encoder_config
from vitzoo.models.convert import load_pretrained
from vitzoo.runtime.precision import resolve_precision

DEFAULT_VAL_IMAGES = 256
PICTURE_IMAGES = 6


class FixedDraws(Dataset):
    """Item ``i`` of ``dataset`` with the same augmentation draws (crop, mask) every time it is read."""

    def __init__(self, dataset: Any, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[SampleKey(i, mix_seed(self.seed, i))]


class Pretrainer(Trainer):
    task = "pretrain"
    score_name = "masked-token accuracy"
    target: MIMTarget

    def build_model(self) -> torch.nn.Module:
        cfg = self.cfg
        kwargs = {k: v for k, v in model_kwargs(cfg).items() if k != "num_classes"}
        encoder = mim_encoder_config(cfg.model, **kwargs)
        grid = (encoder.img_size // encoder.patch_size,) * 2
        self.target = build_target(cfg, encoder.patch_size, grid, self.device)
        if self.target.kind == "pixels":
            self.score_name = "negative masked-patch loss"
        model = build_mim_model(cfg.model, self.target.dim, **kwargs)
        if cfg.pretrained:  # continue an earlier pre-training (ours or unilm's layout)
            load_pretrained(model, cfg.pretrained)
        self.log.info("masked image modeling: %s target (%d outputs per masked patch), %d of %d patches "
                      "masked in blocks", self.target.name, self.target.dim,
                      round(cfg.mask_ratio * grid[0] * grid[1]), grid[0] * grid[1])
        return model.to(self.device)

    def build_data(self) -> TrainData:
        cfg, model = self.cfg, self.model
        data_config = resolve_data_config(cfg, model)
        grid = model.patch_embed.grid_size
        second = second_view_size(cfg, grid, self.target)
        train_ds = build_unlabeled_dataset(cfg, "train", transform=MIMTransform(cfg, data_config, grid, second))
        val_transform = MIMTransform(cfg, data_config, grid, second, train=False)
        val_ds = build_unlabeled_dataset(cfg, "val", transform=val_transform)
        if val_ds is None:
            if isinstance(train_ds, IterableDataset):
                raise UserError("pretrain on streamed shards: set val_data_path (shards or a folder) and "
                                "val_num_samples for the masked-token validation")
            val_ds = build_unlabeled_dataset(cfg, "train", transform=val_transform)
            val_ds.select_subset(cfg.val_num_samples if cfg.val_num_samples > 0 else DEFAULT_VAL_IMAGES, cfg.seed + 1)
            self.log.info("no validation images (%s/%s): masked-token accuracy is measured on %d training "
                          "images", cfg.data_path, cfg.val_dir, len(val_ds))
        train_loader = build_loader(cfg, train_ds, "train", distributed=self.world > 1)
        updates = len(train_loader) // cfg.update_freq
        if updates < 1:
            raise UserError(f"update_freq {cfg.update_freq} is more than the {len(train_loader)} batches of an "
                            "epoch; lower update_freq or batch_size")
        # streamed validation shards cannot be read by index: their crops and masks vary per epoch
        fixed = val_ds if isinstance(val_ds, IterableDataset) else FixedDraws(val_ds, cfg.seed)
        val_loader = build_loader(cfg, fixed, "val", distributed=self.world > 1)
        self.log.info("data: %d unlabeled train / %d val images, %d updates per epoch of %d images", len(train_ds),
                      len(val_ds), updates, cfg.global_batch(self.world))
        return TrainData(data_config, train_ds, val_ds, train_loader, val_loader, None, [], updates)

    def build_step(self) -> tuple[TrainStep, torch.nn.Module]:
        return build_step(self.cfg, self.model, self.data, self.device, self.precision, self.world, self.log,
                          criterion=mim_criterion(self.target.kind), forward=MIMForward(self.target))

    def evaluate(self) -> dict[str, Any]:
        ema = self.step.ema if self.cfg.use_ema_for_eval else None
        net = ema.module if ema is not None else self.eval_net
        device = ema.device if (ema is not None and ema.device is not None) else self.device
        precision = self.precision if device == self.device else resolve_precision("O0", "auto", device)
        metrics = evaluate_mim(net, self.data.val_loader, self.target, device, precision=precision)
        self.log.info(format_mim_eval(metrics))
        return metrics

    def after_evaluate(self, epoch: int) -> None:
        """``output_dir/pictures/epoch_NNN.png``: inputs, masks and what the model predicts (rank 0)."""
        if not self.main:
            return
        fixed = self.data.val_loader.dataset
        if isinstance(fixed, IterableDataset):
            samples = [fixed_sample for fixed_sample, _ in zip(fixed, range(PICTURE_IMAGES))]
        else:  # spread over the set (folders are sorted by class)
            samples = [fixed[i] for i in torch.linspace(0, len(fixed) - 1, PICTURE_IMAGES).long().unique().tolist()]
        batch = tuple(t.to(self.device) for t in default_collate(samples)[0])
        path = self.folders.output / "pictures" / f"epoch_{epoch:03d}.png"
        draw_mim_examples(unwrap(self.eval_net), batch, self.target, self.data.data_config, path,
                          f"{self.cfg.model}, {self.target.name} target, epoch {epoch}")

    def score(self, metrics: dict[str, Any]) -> float:
        return float(metrics["MIM-Acc"]) if "MIM-Acc" in metrics else -float(metrics["Loss"])

    def meta(self) -> dict[str, Any]:
        cfg = self.cfg
        return {**super().meta(), "num_classes": 0, "mim": {"target": cfg.mim_target, "target_dim": self.target.dim,
                                                            "tokenizer_path": cfg.tokenizer_path}}
