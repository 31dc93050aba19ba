"""Attention-map arithmetic and the drawing shared by ``vitzoo attention`` and ``vitzoo plot``.

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", arXiv:2005.00928,
Sec. 3): the residual connection is modelled by adding the identity to each block's head-averaged
attention and renormalising the rows, ``A_hat = (A + I) / rowsum`` (= 0.5 A + 0.5 I, since softmax rows
sum to one); the flow from the input tokens to the last layer is the product
``A_hat_L @ ... @ A_hat_1``. The class token's row of that product, over the patch tokens, is the heat
map. matplotlib is imported lazily (Agg backend, no display needed) so importing this module is cheap.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vitzoo.checkpoint import atomic_write
from vitzoo.errors import UserError


# ------------------------------------------------------------------------------ attention maths
def select_heads(attn: torch.Tensor, head: str | int = "mean") -> torch.Tensor:
    """(B, heads, N, N) -> (B, N, N): the mean over heads, or one head (index may be negative)."""
    if head == "mean":
        return attn.mean(dim=1)
    h = int(head)
    if not -attn.shape[1] <= h < attn.shape[1]:
        raise UserError(f"--head {h} is out of range: this model has {attn.shape[1]} heads per block")
    return attn[:, h]


def attention_rollout(maps: Sequence[torch.Tensor], head: str | int = "mean") -> torch.Tensor:
    """Rollout of per-block attention maps [(B, heads, N, N), ...] in block order -> (B, N, N).

    Row i of the result says how much of token i's final representation flows from each input token.
    """
    if not maps:
        raise UserError("the model returned no attention maps")
    result = None
    for attn in maps:
        a = select_heads(attn.float(), head)  # (B, N, N)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a + eye  # the residual path carries the token itself
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result  # later blocks multiply from the left
    return result


def class_token_map(maps: Sequence[torch.Tensor], mode: str = "rollout", head: str | int = "mean",
                    num_prefix_tokens: int = 1) -> torch.Tensor:
    """Class-token attention over the patch tokens, (B, num_patches).

    ``mode``: ``rollout`` (all blocks), ``last`` (the last block's raw attention) or ``block:N``
    (block N, 0-based; negative counts from the end).
    """
    if mode == "rollout":
        a = attention_rollout(maps, head)
    elif mode == "last":
        a = select_heads(maps[-1].float(), head)
    elif mode.startswith("block:"):
        try:
            idx = int(mode.split(":", 1)[1])
            a = select_heads(maps[idx].float(), head)
        except ValueError:
            raise UserError(f"--mode {mode!r}: expected block:N with an integer N") from None
        except IndexError:
            raise UserError(f"--mode {mode!r}: the model has {len(maps)} blocks (0..{len(maps) - 1})") from None
    else:
        raise UserError(f"--mode must be rollout, last or block:N, got {mode!r}")
    return a[:, 0, num_prefix_tokens:]  # class token row, prefix tokens (cls / dist) dropped


def to_grid(cls_row: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, num_patches) -> (B, H, W) on the patch grid (square when ``grid`` is not given)."""
    n = cls_row.shape[-1]
    if grid is None:
        side = math.isqrt(n)
        grid = (side, side)
    if grid[0] * grid[1] != n:
        raise ValueError(f"{n} patch tokens do not form a {grid[0]}x{grid[1]} grid")
    return cls_row.reshape(cls_row.shape[0], grid[0], grid[1])


def upsample(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W) bilinear, then min-max scaled to [0, 1] per image for display."""
    import torch.nn.functional as F

    up = F.interpolate(heat[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).min(dim=1).values[:, None, None]
    hi = up.flatten(1).max(dim=1).values[:, None, None]
    return (up - lo) / (hi - lo).clamp_min(1e-12)


# ---------------------------------------------------------------------------------- drawing
def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only, no display (servers, CI)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically (a killed run never leaves half a PNG) and close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt, bbox_inches="tight"))
    finally:
        pyplot().close(fig)
    return path


def draw_attention(image: torch.Tensor, heat: torch.Tensor, title: str, path: str | Path,
                   grid_title: str = "attention") -> Path:
    """Input crop | heat map | overlay, side by side, one PNG.

    ``image``: (3, H, W) in [0, 1]; ``heat``: (H, W) in [0, 1] (already upsampled to the crop).
    """
    plt = pyplot()
    img = image.permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    hm = heat.cpu().numpy()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9))
    axes[0].imshow(img)
    axes[0].set_title("input (eval crop)")
    shown = axes[1].imshow(hm, cmap="inferno", vmin=0, vmax=1)
    axes[1].set_title(f"{grid_title} (scaled 0-1)", fontsize=10)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)  # min-max scaled per image
    axes[2].imshow(img)
    axes[2].imshow(hm, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


# One panel per group of metrics; each entry: (title, y label, [(key, label, line style)]).
CURVE_PANELS = (
    ("loss", "loss", [("train_loss", "train", "-"), ("val_loss", "val", "--")]),
    ("accuracy", "accuracy (%)", [("val_top1", "val top-1", "-"), ("val_top5", "val top-5", "--"),
                                  ("val_mim_acc", "val masked-token", ":")]),
    ("learning rate", "lr", [("lr", "lr", "-")]),
)
ACCURACY_KEYS = ("val_top1", "val_top5", "val_mim_acc")


def _series(rows: list[dict], key: str, x_key: str) -> tuple[list[float], list[float]]:
    """(x, y) of the rows holding a finite number for ``key`` (missing / null / NaN values skipped)."""
    xs, ys = [], []
    for i, r in enumerate(rows):
        y, x = r.get(key), r.get(x_key, i + 1)
        if isinstance(y, bool) or not isinstance(y, (int, float)) or not math.isfinite(y):
            continue
        xs.append(float(x) if isinstance(x, (int, float)) else float(i + 1))
        ys.append(float(y))
    return xs, ys


def _lr_series(rows: list[dict], x_key: str) -> tuple[list[float], list[float], str]:
    """(x, y, label) of the learning rate: per update from the rows' ``lr_steps`` trace (so warmup shows)
    when they have it and the x axis is epoch or step, else the one value per epoch the rows hold."""
    if x_key not in ("epoch", "step") or not all(isinstance(r.get("lr_steps"), list) for r in rows):
        xs, ys = _series(rows, "lr", x_key)
        return xs, ys, "lr (end of epoch)"
    xs, ys, prev_step = [], [], 0
    for i, r in enumerate(rows):
        epoch, step = r.get("epoch", i + 1), r.get("step", 0)
        span = max(1, step - prev_step)  # updates in this epoch
        for s, lr in r["lr_steps"]:
            xs.append(float(s) if x_key == "step" else epoch - 1 + (s - prev_step) / span)
            ys.append(float(lr))
        prev_step = step
    return xs, ys, "lr (per update)"


def draw_curves(runs: dict[str, list[dict]], path: str | Path, keys: Sequence[str] | None = None,
                x_key: str = "epoch") -> Path:
    """Training curves of one or more runs (label -> metric rows) in one PNG.

    Default panels: loss (train / val), accuracy (top-1 / top-5), learning rate. With ``keys``, one
    panel per key instead. Accuracies stored as fractions (<= 1, as ``evaluate`` returns them) are
    drawn in percent. Colours tell runs apart; line styles tell metrics apart.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    if keys:
        panels = [(k, k, [(k, k, "-")]) for k in keys]
    else:
        panels = list(CURVE_PANELS)
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for ax, (title, ylabel, series) in zip(axes.flat, panels):
        for r, (run, rows) in enumerate(runs.items()):
            for j, (key, label, style) in enumerate(series):
                xs, ys = _series(rows, key, x_key)
                if key == "lr" and not keys:
                    xs, ys, label = _lr_series(rows, x_key)
                if not ys:
                    continue
                if key in ACCURACY_KEYS and max(ys) <= 1.0:
                    ys = [100 * y for y in ys]
                name = label if len(runs) == 1 else f"{run}: {label}"
                colour = colours[(j if len(runs) == 1 else r) % len(colours)]
                ax.plot(xs, ys, style, color=colour, label=name,
                        marker="o" if len(xs) < 30 else None, markersize=3)
                drawn += 1
        ax.set_title(title)
        ax.set_xlabel(x_key)
        if x_key in ("epoch", "step"):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    if not drawn:
        plt.close(fig)
        wanted = ", ".join(k for _, _, s in panels for k, _, _ in s)
        raise UserError(f"none of the metrics ({wanted}) has a numeric value in the given file(s)")
    if len(runs) == 1:
        fig.suptitle(next(iter(runs)), fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
