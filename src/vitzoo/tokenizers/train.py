"""The run behind ``vitzoo train-tokenizer``: fit a :class:`TrainedTokenizer` to a folder of images.

Per epoch it writes, in ``output_dir``: ``tokenizer.safetensors`` (what ``vitzoo pretrain --tokenizer_path``
reads), ``reconstructions/epoch_NNN.png`` (a fixed set of images above their reconstructions through
tokens -> decode), ``metrics.jsonl`` (reconstruction MSE, codebook usage, perplexity per epoch),
``train_tokenizer.log`` and ``tokenizer_state.pth`` (weights, optimizer, schedule, RNG, history; plain
data read back with ``weights_only=True``), from which ``--resume auto`` continues. Every file is written
atomically, the state last, so a run killed at any instant resumes at the last finished epoch.

Loss: per-pixel MSE on [0, 1] images plus the quantiser's term (vqvae: commitment, beta = 0.25;
dvae: KL to the uniform prior, small weight, because at a few thousand updates a DALL-E-sized weight
drives the encoder to uniform logits before the decoder has learned anything). Data: random-resized crop
(``min_crop``, as BEiT's tokenizer view, so the tokenizer sees the crops pre-training will show it) and
horizontal flip; labels are ignored; unreadable images follow ``bad_image_policy`` as in ``vitzoo train``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, IterableDataset
from torchvision import transforms
from torchvision.utils import make_grid

from vitzoo.checkpoint import atomic_write, atomic_write_text, read_file
from vitzoo.checkpoint.files import write_torch
from vitzoo.config import RunConfig
from vitzoo.data import build_loader, build_unlabeled_dataset, report_bad_files, set_epoch
from vitzoo.engine.dist import resolve_device
from vitzoo.engine.optim import build_optimizer
from vitzoo.engine.reporting import Progress, close_logger, setup_logger
from vitzoo.engine.schedule import LRScheduler, build_scheduler
from vitzoo.engine.seeding import rng_state, seed_everything, set_rng_state
from vitzoo.errors import UserError
from vitzoo.tokenizers.vqvae import TokenizerSpec, TrainedTokenizer, save_trained_tokenizer

TOKENIZER_FILE, STATE_FILE, METRICS_FILE = "tokenizer.safetensors", "tokenizer_state.pth", "metrics.jsonl"
LOG_FILE, PICTURES = "train_tokenizer.log", "reconstructions"
STATE_FORMAT = "vitzoo-tokenizer-state"
MIN_TEMPERATURE = 1 / 16  # dvae: Gumbel-softmax temperature annealed 1 -> 1/16 by cosine (arXiv:2102.12092 A.2)
NUM_PICTURES = 8  # images in each reconstructions/epoch_NNN.png

# The classification defaults of RunConfig that do not fit a tokenizer; used unless the YAML or the
# command line sets the key. lr 1e-3 unscaled (batch 64) with 1 warmup epoch: on 2,000 generated 64 px
# shapes, vqvae reconstruction MSE fell 0.058 -> 0.021 -> 0.016 -> 0.013 over 4 epochs (31 updates each)
# with all 512 codes in use; no weight decay (VQ-VAE recipes use plain Adam); 20 epochs is a budget guess
# for a small set (MSE still falling at epoch 4: 0.013), not a measured optimum.
TOKENIZER_DEFAULTS: dict[str, Any] = {"input_size": 112, "epochs": 20, "lr": 1e-3, "min_lr": 1e-5,
                                      "warmup_epochs": 1, "weight_decay": 0.0}


# ------------------------------------------------------------------------------------- data
def image_size(cfg: RunConfig) -> int:
    size = cfg.input_size or int(TOKENIZER_DEFAULTS["input_size"])
    if size % 8:
        raise UserError(f"input_size must be a multiple of 8 (the tokenizer downsamples by 8), got {size}")
    return size


def build_data(cfg: RunConfig, size: int) -> tuple[Dataset, torch.Tensor]:
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


# -------------------------------------------------------------------------------- run folder
def run_files(out: Path) -> list[Path]:
    """What an earlier train-tokenizer run wrote in ``out`` (all that --overwrite deletes)."""
    names = (TOKENIZER_FILE, STATE_FILE, METRICS_FILE, LOG_FILE, "bad_files.txt")
    found = [out / n for n in names if (out / n).is_file()]
    return found + sorted((out / PICTURES).glob("epoch_*.png"))


def check_fresh(cfg: RunConfig) -> list[Path]:
    """One run per folder, as ``vitzoo train``: refuse a folder holding a run unless resuming or
    overwriting (its files are then deleted; returned)."""
    out = Path(cfg.output_dir)
    record = [p for p in run_files(out) if p.name in (TOKENIZER_FILE, STATE_FILE, METRICS_FILE)]
    if cfg.resume or not record:
        return []
    if not cfg.overwrite:
        raise UserError(f"{out} already holds a train-tokenizer run ({', '.join(p.name for p in record)}): "
                        "continue it with --resume auto, or start again with --overwrite")
    gone = run_files(out)
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def resume_path(cfg: RunConfig) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume.lower() == "auto":
        path = Path(cfg.output_dir) / STATE_FILE
        return path if path.is_file() else None
    return Path(cfg.resume)


def load_state(path: Path, spec: TokenizerSpec) -> dict[str, Any]:
    state = read_file(path)  # weights_only: plain data, never code
    if state.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not a train-tokenizer state file ({STATE_FILE})")
    if TokenizerSpec(**state["spec"]) != spec:
        raise UserError(f"{path}: was trained with {state['spec']}, this config gives {dataclasses.asdict(spec)}; "
                        "resume with the same tokenizer_type / codebook_size / tokenizer_width / input_size")
    return state


# -------------------------------------------------------------------------------------- the run
def temperature(update: int, total: int) -> float:
    """dvae's Gumbel-softmax temperature: cosine from 1 to MIN_TEMPERATURE over the run."""
    t = min(1.0, update / max(1, total))
    return MIN_TEMPERATURE + (1.0 - MIN_TEMPERATURE) * 0.5 * (1.0 + math.cos(math.pi * t))


def code_stats(counts: torch.Tensor) -> tuple[int, float]:
    """(codes used, perplexity = exp(entropy of the token histogram)): perplexity K = all used evenly."""
    p = counts.double() / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return int((counts > 0).sum()), float(entropy.exp())  # host sync


def train_epoch(model: TrainedTokenizer, loader, opt: torch.optim.Optimizer, sched: LRScheduler,
                cfg: RunConfig, epoch: int, device: torch.device, log) -> dict[str, Any]:
    """One pass over the data; returns the epoch's metrics row."""
    model.train()
    set_epoch(loader, epoch)
    total = cfg.epochs * len(loader)
    counts = torch.zeros(model.vocab_size, dtype=torch.long, device=device)
    sums, seen, skipped, start = torch.zeros(2, device=device), 0, 0, time.perf_counter()
    progress = Progress(epoch, cfg.epochs, len(loader), 0, cfg.print_loss_every, True, log, cfg.batch_size)
    tau = 1.0
    try:
        for i, (x, _) in enumerate(loader):
            x = x.to(device, non_blocking=True)
            tau = temperature(sched.num_updates, total)
            out = model.train_step(x, tau)
            mse = F.mse_loss(out.recon, x)
            loss = mse + out.aux_loss
            if not torch.isfinite(loss):  # host sync; DeiT / big_vision check it too
                if cfg.nonfinite_policy == "stop":
                    raise UserError(f"non-finite loss at epoch {epoch + 1} step {i + 1}; lower lr")
                skipped += 1
            else:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_value is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_value)
                opt.step()
                sums += torch.stack([mse.detach(), loss.detach()]) * len(x)
                seen += len(x)
            counts += torch.bincount(out.ids.flatten(), minlength=model.vocab_size)
            lr = sched.get_lr()
            sched.step()
            progress.update(i + 1, sched.num_updates, float(mse.detach()), lr)  # host sync (the bar shows it)
    finally:
        progress.close()
    used, perplexity = code_stats(counts)
    mse_mean, loss_mean = (sums / max(1, seen)).tolist()
    seconds = time.perf_counter() - start
    row = {"epoch": epoch + 1, "step": sched.num_updates, "train_loss": loss_mean, "recon_mse": mse_mean,
           "codebook_usage": used / model.vocab_size, "codes_used": used, "perplexity": perplexity,
           "lr": lr, "time": seconds, "img_per_sec": seen / seconds if seconds > 0 else 0.0,
           "skipped_steps": skipped}
    return row | ({"temperature": tau} if model.spec.type == "dvae" else {})


@torch.no_grad()
def save_pictures(model: TrainedTokenizer, fixed: torch.Tensor, path: Path) -> float:
    """Originals (top row) above their reconstructions through tokens -> decode; returns their MSE."""
    model.eval()
    recon = model.decode(model.tokenize(fixed))
    grid = make_grid(torch.cat([fixed, recon]).cpu(), nrow=len(fixed), padding=2, pad_value=1.0)
    img = transforms.functional.to_pil_image(grid)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return float(F.mse_loss(recon, fixed))


def train_tokenizer(cfg: RunConfig) -> dict[str, Any]:
    """The whole run; returns a summary (file, epochs, last metrics row)."""
    out = Path(cfg.output_dir)
    size = image_size(cfg)
    check_fresh(cfg)
    spec = TokenizerSpec(type=cfg.tokenizer_type, codebook_size=cfg.codebook_size, width=cfg.tokenizer_width,
                         image_size=size)
    path = resume_path(cfg)
    state = load_state(path, spec) if path is not None else None
    if state is not None and state["epoch"] >= cfg.epochs:
        return {"file": str(out / TOKENIZER_FILE), "epochs": state["epoch"], "finished": True,
                "last": state["history"][-1] if state["history"] else {}}
    log = setup_logger(out / LOG_FILE, main=True)
    try:
        return _fit(cfg, spec, state, log)
    finally:
        close_logger(log)


def _fit(cfg: RunConfig, spec: TokenizerSpec, state: dict | None, log) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    train_ds, fixed = build_data(cfg, spec.image_size)
    loader = build_loader(cfg, train_ds, "train")
    model = TrainedTokenizer(spec).to(device)
    opt = build_optimizer(cfg, model, cfg.lr)  # lr as given: no batch scaling (a tokenizer recipe's own lr)
    sched = build_scheduler(cfg, opt, cfg.lr, len(loader))
    start, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start, history = int(state["epoch"]), list(state["history"])
        log.info("resumed from %s at epoch %d", cfg.resume, start)
    params = sum(p.numel() for p in model.parameters())
    log.info("train-tokenizer: %s, %d codes, width %d, %d px -> %d x %d tokens, %.2fM parameters, %d images, "
             "%d steps/epoch, device %s", spec.type, spec.codebook_size, spec.width, spec.image_size,
             spec.image_size // 8, spec.image_size // 8, params / 1e6, len(train_ds), len(loader), device)
    fixed = fixed.to(device)
    for epoch in range(start, cfg.epochs):
        row = train_epoch(model, loader, opt, sched, cfg, epoch, device, log)
        picture = out / PICTURES / f"epoch_{epoch + 1:03d}.png"
        row["picture_mse"] = save_pictures(model, fixed, picture)
        history.append(row)
        save_trained_tokenizer(out / TOKENIZER_FILE, model, {"epoch": epoch + 1, "metrics": row})
        atomic_write_text(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))
        report_bad_files(train_ds, out, epoch + 1)
        write_torch(out / STATE_FILE, {"format": STATE_FORMAT, "epoch": epoch + 1, "spec": dataclasses.asdict(spec),
                                       "model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict(), "rng": rng_state(),
                                       "history": history})
        log.info("epoch %d/%d  recon_mse %.5f  codes used %d/%d (%.1f%%)  perplexity %.1f%s  %.1fs  -> %s",
                 epoch + 1, cfg.epochs, row["recon_mse"], row["codes_used"], spec.codebook_size,
                 100 * row["codebook_usage"], row["perplexity"],
                 f"  temperature {row['temperature']:.3f}" if "temperature" in row else "", row["time"], picture)
    return {"file": str(out / TOKENIZER_FILE), "epochs": cfg.epochs, "finished": False,
            "last": history[-1] if history else {}}
