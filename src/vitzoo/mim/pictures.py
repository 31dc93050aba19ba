"""What masked image modeling predicts, drawn for a few validation images after every epoch.

One row per image: the input, the input as the model sees it (masked patches greyed), then
* pixels target: the reconstruction -- visible patches as they are, masked patches as predicted, put
  back in image space with each true patch's mean and std when the target was normalised per patch (as
  MAE's visualisation does);
* token targets: the tokenizer's ids against the predicted ids on the masked patches (green where they
  agree, red where they do not), and, when the tokenizer has a decoder, both decoded to images.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vitzoo.mim.targets import MIMTarget, PixelTarget
from vitzoo.viz.draw import pyplot, save_figure


def _unnormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() * s + m).clamp(0, 1)


def _patches_to_image(patches: torch.Tensor, p: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, p*p*3) in MAE order -> (B, 3, H, W)."""
    B, (h, w) = patches.shape[0], grid
    return patches.reshape(B, h, w, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(B, 3, h * p, w * p)


def _reconstruct(model, patches: torch.Tensor, mask: torch.Tensor, target: PixelTarget) -> torch.Tensor:
    """Normalised input (B, 3, H, W) -> image-space reconstruction, visible patches kept."""
    p, grid = target.patch_size, model.patch_embed.grid_size
    pred = model(patches, mask, return_all_tokens=True).float()  # (B, N, p*p*3)
    true = PixelTarget(p, normalize=False)(patches, patches, torch.ones_like(mask)).view_as(pred)
    if target.normalize:  # back to the true patch's scale
        pred = pred * (true.var(-1, keepdim=True) + 1e-6).sqrt() + true.mean(-1, keepdim=True)
    mixed = torch.where(mask.unsqueeze(-1), pred, true)
    return _patches_to_image(mixed, p, grid)


def _id_agreement(model, patches, view, mask, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target ids, predicted ids, agreement image (B, 3, h, w): grey visible, green right, red wrong)."""
    ids = target.tokenizer.tokenize(view.float())  # (B, h, w)
    pred = model(patches, mask, return_all_tokens=True).argmax(-1).view_as(ids)
    m = mask.view_as(ids)
    right = (pred == ids) & m
    colours = torch.full((*ids.shape, 3), 0.5, device=ids.device)
    colours[right] = torch.tensor([0.1, 0.8, 0.2], device=ids.device)
    colours[m & ~right] = torch.tensor([0.9, 0.1, 0.1], device=ids.device)
    return ids, torch.where(m, pred, ids), colours.permute(0, 3, 1, 2)


@torch.no_grad()
def draw_mim_examples(model, batch: tuple[torch.Tensor, ...], target: MIMTarget, data_config: dict,
                      path: str | Path, title: str, max_images: int = 6) -> Path:
    """Draw the first ``max_images`` of a validation batch ``(patches, view, mask)`` (on the model's device)."""
    patches, view, mask = (t[:max_images] for t in batch)
    mask = mask.flatten(1)
    was_training = model.training
    model.eval()
    try:
        images = _unnormalize(patches, data_config["mean"], data_config["std"])
        grid = model.patch_embed.grid_size
        p = images.shape[-1] // grid[1]
        cover = mask.view(-1, 1, *grid).repeat_interleave(p, 2).repeat_interleave(p, 3)
        masked = torch.where(cover, torch.full_like(images, 0.5), images)
        columns = {"input": images, "masked input": masked}
        if isinstance(target, PixelTarget):
            recon = _reconstruct(model, patches, mask, target)
            columns["reconstruction"] = _unnormalize(recon, data_config["mean"], data_config["std"])
        else:
            ids, predicted, agreement = _id_agreement(model, patches, view, mask, target)
            columns["predicted tokens (green right, red wrong)"] = agreement
            decoded = target.tokenizer.decode(ids)
            if decoded is not None:
                columns["tokenizer target, decoded"] = decoded
                columns["prediction, decoded"] = target.tokenizer.decode(predicted)
    finally:
        model.train(was_training)
    return _draw(columns, path, title)


def _draw(columns: dict[str, torch.Tensor], path: str | Path, title: str) -> Path:
    plt = pyplot()
    rows, cols = next(iter(columns.values())).shape[0], len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.2 * rows), squeeze=False, layout="constrained")
    for c, (name, images) in enumerate(columns.items()):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(images[r].permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
