"""``vitzoo train-tokenizer``: fit a :class:`TrainedTokenizer` to a folder of images, run by the training engine.

:class:`TokenizerTrainer` is the engine's :class:`~vitzoo.engine.trainer.Trainer` with another task, as
:class:`~vitzoo.mim.pretrainer.Pretrainer` is: the model is the tokenizer, the data are unlabeled images,
the forward and loss are :mod:`vitzoo.tokenizers.task`'s, and each evaluation reports the epoch's
reconstruction MSE, codebook usage and perplexity. Everything else is the engine's: the one-run-per-folder
rule (``--overwrite`` / ``--resume``), checkpoints and their rotation (``checkpoints/ckpt_*.pth``),
``--resume auto`` (bit-exact in one process), pre-emption (SIGTERM / SIGINT / SIGUSR1 write a checkpoint
and exit 75), torchrun, ``train.log``, ``metrics.jsonl`` / ``metrics.csv`` and TensorBoard.

After every evaluation (every epoch by default) it also writes, in ``output_dir``: ``tokenizer.safetensors``
(what ``vitzoo pretrain --tokenizer_path`` reads) and ``reconstructions/epoch_NNN.png`` (a fixed set of
images above their reconstructions through tokens -> decode), both atomically.

Data: random-resized crop (``min_crop``, as BEiT's tokenizer view, so the tokenizer sees the crops
pre-training will show it) and horizontal flip; labels are ignored; unreadable images follow
``bad_image_policy`` as in ``vitzoo train``.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, IterableDataset
from torchvision import transforms
from torchvision.utils import make_grid

from vitzoo.checkpoint import atomic_write
from vitzoo.config import RunConfig
from vitzoo.data import build_loader, build_unlabeled_dataset
from vitzoo.engine.build import TrainData, build_step
from vitzoo.engine.dist import unwrap
from vitzoo.engine.loop import TrainStep
from vitzoo.engine.trainer import Trainer
from vitzoo.errors import UserError
from vitzoo.runtime.precision import Precision, resolve_precision
from vitzoo.tokenizers.task import TokenizerObjective
from vitzoo.tokenizers.vqvae import TokenizerSpec, TrainedTokenizer, save_trained_tokenizer, tokenizer_meta

TOKENIZER_FILE, PICTURES = "tokenizer.safetensors", "reconstructions"
NUM_PICTURES = 8  # images in each reconstructions/epoch_NNN.png

# The classification defaults of RunConfig that do not fit a tokenizer; used unless the YAML or the
# command line sets the key. lr 1e-3 unscaled (batch 64) with 1 warmup epoch: on 2,000 generated 64 px
# shapes, vqvae reconstruction MSE fell 0.058 -> 0.021 -> 0.016 -> 0.013 over 4 epochs (31 updates each)
# with all 512 codes in use; no weight decay (VQ-VAE recipes use plain Adam); 20 epochs is a budget guess
# for a small set (MSE still falling at epoch 4: 0.013), not a measured optimum. fp32 (amp_level O0): the
# figures above are fp32 ones; autocast was not measured for these convs and the quantiser. No best-N
# checkpoints: their score would be the training MSE, whose best is nearly always the newest epoch.
TOKENIZER_DEFAULTS: dict[str, Any] = {"input_size": 112, "epochs": 20, "lr": 1e-3, "unscale_lr": True,
                                      "min_lr": 1e-5, "warmup_epochs": 1, "weight_decay": 0.0, "amp_level": "O0",
                                      "best_ckpt_num": 0}


def image_size(cfg: RunConfig) -> int:
    size = cfg.input_size or int(TOKENIZER_DEFAULTS["input_size"])
    if size % 8:
        raise UserError(f"input_size must be a multiple of 8 (the tokenizer downsamples by 8), got {size}")
    return size


def tokenizer_spec(cfg: RunConfig) -> TokenizerSpec:
    return TokenizerSpec(type=cfg.tokenizer_type, codebook_size=cfg.codebook_size, width=cfg.tokenizer_width,
                         image_size=image_size(cfg))


def tokenizer_data(cfg: RunConfig, size: int) -> tuple[Dataset, torch.Tensor]:
    """The augmented training images (any folder tree or shards, labels ignored) and NUM_PICTURES fixed
    images (resize + centre crop) for the pictures."""
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(cfg.min_crop, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(cfg.hflip), transforms.ToTensor()])
    eval_tf = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                                  transforms.CenterCrop(size), transforms.ToTensor()])
    train_ds = build_unlabeled_dataset(cfg, "train", transform=train_tf)
    view = build_unlabeled_dataset(cfg, "train", transform=eval_tf)
    if isinstance(view, IterableDataset):  # streamed shards: the first images
        images = [x for x, _ in itertools.islice(iter(view), NUM_PICTURES)]
    else:  # spread over the tree (sorted by path: several sub-folders)
        n = len(view)
        images = [view[i][0] for i in sorted({i * n // NUM_PICTURES for i in range(min(n, NUM_PICTURES))})]
    return train_ds, torch.stack(images).clamp(0, 1)  # (N, 3, S, S); bicubic resizing can overshoot


@torch.no_grad()
def reconstruct(model: TrainedTokenizer, images: torch.Tensor) -> torch.Tensor:
    """``images`` through tokens -> decode, in eval mode (the vqvae codebook's EMA stays put)."""
    was_training = model.training
    model.eval()
    try:
        return model.decode(model.tokenize(images))
    finally:
        model.train(was_training)


def save_pictures(model: TrainedTokenizer, fixed: torch.Tensor, path: Path) -> None:
    """Originals (top row) above their reconstructions through tokens -> decode."""
    grid = make_grid(torch.cat([fixed, reconstruct(model, fixed)]).cpu(), nrow=len(fixed), padding=2, pad_value=1.0)
    img = transforms.functional.to_pil_image(grid)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


class TokenizerTrainer(Trainer):
    task = "tokenizer"
    score_name = "negative recon_mse"
    spec: TokenizerSpec

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)  # refuses a folder holding a run, or clears the engine's files (--overwrite)
        self.last_eval: dict[str, Any] = {}
        if cfg.overwrite and not cfg.resume and self.main:  # and this task's own, by their names
            out = self.folders.output
            for p in [out / TOKENIZER_FILE, *sorted((out / PICTURES).glob("epoch_*.png"))]:
                p.unlink(missing_ok=True)

    def model_name(self) -> str:
        return f"{self.spec.type} tokenizer"

    def build_model(self) -> torch.nn.Module:
        self.spec = tokenizer_spec(self.cfg)
        return TrainedTokenizer(self.spec).to(self.device)

    def choose_precision(self, model: torch.nn.Module) -> Precision:
        # no model: `auto` follows the CPU's units rather than timing a classification step on this one
        return resolve_precision(self.cfg.amp_level, self.cfg.amp_dtype, self.device)

    def build_data(self) -> TrainData:
        cfg, spec = self.cfg, self.spec
        train_ds, fixed = tokenizer_data(cfg, spec.image_size)
        self.fixed = fixed.to(self.device)
        loader = build_loader(cfg, train_ds, "train", distributed=self.world > 1)
        updates = len(loader) // cfg.update_freq
        if updates < 1:
            raise UserError(f"update_freq {cfg.update_freq} is more than the {len(loader)} batches of an epoch; "
                            "lower update_freq or batch_size")
        grid = spec.image_size // spec.downsample
        self.log.info("train-tokenizer: %s, %d codes, width %d, %d px -> %d x %d tokens; %d images, %d updates "
                      "per epoch of %d images", spec.type, spec.codebook_size, spec.width, spec.image_size, grid,
                      grid, len(train_ds), updates, cfg.global_batch(self.world))
        return TrainData({}, train_ds, None, loader, None, None, [], updates)

    def build_step(self) -> tuple[TrainStep, torch.nn.Module]:
        cfg = self.cfg
        self.objective = TokenizerObjective(self.spec.codebook_size, self.spec.type == "dvae",
                                            cfg.epochs * self.data.updates_per_epoch, self.device)
        step, eval_net = build_step(cfg, self.model, self.data, self.device, self.precision, self.world, self.log,
                                    criterion=self.objective.criterion, forward=self.objective.forward)
        self.objective.scheduler = step.scheduler
        return step, eval_net

    def evaluate(self) -> dict[str, Any]:
        """The training batches' statistics since the last evaluation, and the fixed images' reconstruction
        MSE through the tokens (every process computes the same)."""
        recon = reconstruct(unwrap(self.model), self.fixed)
        self.last_eval = self.objective.take_epoch() | {"picture_mse": float(F.mse_loss(recon, self.fixed))}
        return self.last_eval

    def score(self, metrics: dict[str, Any]) -> float:
        return -float(metrics["recon_mse"])

    def after_evaluate(self, epoch: int) -> None:
        """The epoch's picture and tokenizer file (rank 0), its line in the log and its scalars."""
        if not self.main:
            return
        model, out, m = unwrap(self.model), self.folders.output, self.last_eval
        picture = out / PICTURES / f"epoch_{epoch:03d}.png"
        save_pictures(model, self.fixed, picture)
        save_trained_tokenizer(out / TOKENIZER_FILE, model, {"epoch": epoch, "metrics": m})
        self.log.info("epoch %d/%d  recon_mse %.5f  codes used %d/%d (%.1f%%)  perplexity %.1f%s  -> %s", epoch,
                      self.cfg.epochs, m["recon_mse"], m["codes_used"], self.spec.codebook_size,
                      100 * m["codebook_usage"], m["perplexity"],
                      f"  temperature {m['temperature']:.3f}" if "temperature" in m else "", picture)
        self.tb.scalars(self.step.scheduler.num_updates, **{f"tokenizer/{k}": float(v) for k, v in m.items()})

    def epoch_row(self, row: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        return row | metrics

    def describe_model(self) -> dict[str, Any]:
        return {"tokenizer": tokenizer_meta(self.spec)}  # the spec rebuilds the module (vqvae.py)

    def meta(self) -> dict[str, Any]:
        return {"task": self.task, "config": self.cfg.to_dict()}
