"""`vitzoo attention`: draw where a model looks: attention rollout (or one block's map) per image.

For each image: the eval crop the model sees (the checkpoint's ``data_config``: resize to size/crop_pct,
centre crop, normalise), the class token's attention over the patch grid upsampled to the crop, and the
overlay, side by side in one PNG titled with the predicted class and its probability.

Modes: ``rollout`` (Abnar & Zuidema 2020: heads averaged, identity added for the residual, rows
renormalised, multiplied through all blocks), ``last`` (last block's class-token attention) and
``block:N`` (block N, 0-based, negative from the end). ``--head N`` uses one head instead of the mean.
Prefix tokens (class, and distillation for distilled DeiT) are left out of the map. Unreadable images
are reported on stderr and skipped.

``--output``: a path ending in an image suffix (``attn.png``, ``.jpg``, ``.pdf``, ``.svg``) is the file
to write, for one input image (several images with such a path are refused: give a folder); any other
path is a folder that gets ``<image stem>_attention.png`` per image, mirroring sub-folders.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vitzoo.cli.helpfmt import HelpFormatter
from vitzoo.data import build_eval_transform, load_image
from vitzoo.engine.dist import resolve_device
from vitzoo.errors import UserError
from vitzoo.inference.predict import collect_images
from vitzoo.models import create_model, load_model
from vitzoo.runtime.precision import PRECISION_CHOICES, inference_precision, refuse_int8
from vitzoo.viz.draw import class_token_map, draw_attention, to_grid, upsample


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vitzoo attention", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
        epilog="examples: vitzoo attention img.jpg --checkpoint out/best.pt; "
               "vitzoo attention photos/ --arch deit_tiny_patch16_224 --mode last --head 0")
    p.add_argument("data", metavar="IMAGE_OR_FOLDER", help="an image file or a folder of images")
    p.add_argument("--checkpoint", default=None,
                   help="vitzoo checkpoint, official release file, weights tag, hf-hub:org/repo or URL; "
                        "without it --arch builds random weights")
    p.add_argument("--arch", default=None,
                   help="model name (with --checkpoint: needed only when the file neither records it nor fits one "
                        "registered model by its weights' shapes; alone: a randomly initialised model)")
    p.add_argument("--output", default="attention",
                   help="folder for the PNGs (<image stem>_attention.png), or a file (attn.png) for one image")
    p.add_argument("--mode", default="rollout", help="rollout | last | block:N")
    p.add_argument("--head", default="mean", help="mean (average the heads) or a head index N")
    p.add_argument("--recursive", action="store_true", help="include images in sub-folders")
    p.add_argument("--use-ema", action="store_true", help="use the checkpoint's EMA weights")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (a few images: cpu is fine)")
    p.add_argument("--precision", default="fp32", choices=PRECISION_CHOICES,
                   help="number format of the forward; auto = bf16 where the device has bf16 units and it "
                        "measures faster; int8 (CPU): the linear layers in int8 (a few images: fp32 is fine) "
                        "(default: %(default)s)")
    return p


def _parse_head(head: str) -> str | int:
    if head == "mean":
        return head
    try:
        return int(head)
    except ValueError:
        raise UserError(f"--head must be 'mean' or an integer head index, got {head!r}") from None


def _load(args) -> tuple[torch.nn.Module, dict, str]:
    """(model in eval mode, checkpoint meta, description of the weights) from the arguments."""
    device = resolve_device(args.device)
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise UserError(f"checkpoint not found: {args.checkpoint}")
        model, meta = load_model(args.checkpoint, arch=args.arch, use_ema=args.use_ema, device=str(device))
        return model, meta, Path(args.checkpoint).name
    if not args.arch:
        raise UserError("give --checkpoint CKPT (or --arch NAME for a randomly initialised model)")
    torch.manual_seed(0)
    return create_model(args.arch).to(device).eval(), {}, "random weights"


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # what matplotlib writes


def output_file(output: str, num_images: int) -> Path | None:
    """``--output`` as the one file to write (an image suffix), or None for a folder; several images with
    a file name are a user error (the picture of each would overwrite the last)."""
    path = Path(output)
    if path.suffix.lower() not in IMAGE_SUFFIXES or path.is_dir():
        return None
    if num_images > 1:
        raise UserError(f"--output {output} names one file, but there are {num_images} images: give a folder "
                        f"instead (e.g. --output {path.with_suffix('')}/), which gets one PNG per image")
    return path


def _output_path(out_dir: Path, image: Path, root: Path) -> Path:
    """Mirror sub-folders of ``root`` (``--recursive``) so equal file names never overwrite each other."""
    rel = image.relative_to(root).parent if root.is_dir() else Path()
    return out_dir / rel / f"{image.stem}_attention.png"


class _Session:
    """The loaded model and everything derived from it (built once, at the first readable image)."""

    def __init__(self, args):
        self.model, meta, self.weights = _load(args)
        if not hasattr(self.model, "get_attention_maps"):
            raise UserError(f"{type(self.model).__name__} cannot return attention maps")
        dc = dict(meta.get("data_config") or self.model.data_config)  # as trained/evaluated, else family's
        dc["input_size"] = tuple(dc["input_size"])
        self.transform = build_eval_transform(dc)
        self.mean = torch.tensor(dc["mean"], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(dc["std"], dtype=torch.float32)[:, None, None]
        self.class_names = [str(c) for c in meta.get("class_names") or []]
        # tokens before the patches: class (+ distillation for distilled DeiT)
        self.prefix = getattr(self.model, "num_prefix_tokens", 2 if getattr(self.model, "distilled", False) else 1)
        self.grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)  # T2T: square
        self.device = next(self.model.parameters()).device
        self.precision = inference_precision(args.precision, self.device, self.model)
        self.model = self.precision.cast_model(self.model)

    def draw(self, img, path: Path, out: Path, mode: str, head: str | int) -> tuple[Path, str, float]:
        x = self.transform(img).unsqueeze(0).to(self.device)  # (1, 3, H, W)
        xp = self.precision.cast_input(x)
        with torch.inference_mode(), self.precision.context(self.device):
            probs = self.model(xp).float().softmax(-1)[0]
        with self.precision.context(self.device):
            maps = [m.float() for m in self.model.get_attention_maps(xp)]  # [(1, heads, N, N)] per block
        heat = to_grid(class_token_map(maps, mode, head, self.prefix).cpu(), self.grid)  # (1, h, w)
        heat = upsample(heat, tuple(x.shape[-2:]))[0]  # (H, W) in [0, 1]
        p, cls = probs.max(dim=0)
        cls = int(cls)
        label = self.class_names[cls] if cls < len(self.class_names) else f"class {cls}"
        title = f"{path.name}: predicted {label} (p = {float(p):.3f})   [{self.weights}]"
        shown = (x[0].cpu() * self.std + self.mean).clamp(0, 1)  # undo the normalisation for display
        what = f"{mode}, head {head}" if head != "mean" else f"{mode}, mean of heads"
        return draw_attention(shown, heat, title, out, grid_title=what), label, float(p)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    refuse_int8(args.precision)
    head = _parse_head(args.head)
    if args.mode not in ("rollout", "last") and not args.mode.startswith("block:"):
        raise UserError(f"--mode must be rollout, last or block:N, got {args.mode!r}")

    root, out_dir = Path(args.data), Path(args.output)
    images, skipped = collect_images(args.data, args.recursive)
    if not images:
        hint = "" if args.recursive else " (use --recursive for sub-folders)"
        raise UserError(f"no image files in {args.data}{hint}")
    out_file = output_file(args.output, len(images))
    session = None
    bad: list[tuple[str, str]] = []
    written = []
    for path in images:
        try:
            img = load_image(path)
        except UserError as e:
            bad.append((str(path), str(e).removeprefix(f"{path}: ")))
            continue
        session = session or _Session(args)  # the model loads only once there is something to draw
        target = out_file or _output_path(out_dir, path, root)
        out, label, p = session.draw(img, path, target, args.mode, head)
        written.append(out)
        print(f"{path} -> {out}  ({label}, p={p:.3f})", flush=True)

    if not written and len(images) == 1:
        raise UserError(f"{images[0]}: {bad[0][1]}")
    for p_, reason in skipped + bad:
        print(f"skipped {p_}: {reason}", file=sys.stderr)
    if not written:
        raise UserError(f"{args.data}: no readable image")
    extra = f"; skipped {len(skipped) + len(bad)} file(s)" if skipped or bad else ""
    print(f"wrote {len(written)} attention map(s) to {out_file or out_dir}{extra}", file=sys.stderr)
    return 0
