"""Which registered model a state dict is, from its tensor names and shapes alone.

Files that record no architecture (the MindSpore seeds' ``.ckpt``, PaddleViT ``.pdparams``, DeiT / timm
``.pth``, unilm BEiT ``.pth``, Google ``.npz``) still pin it down, in vitzoo's key names:

- family: ``tokens_to_token.*`` is T2T-ViT; a relative-position table, ``q_bias`` or ``gamma_1`` is BEiT;
  otherwise ViT / DeiT (which share one network: the layout tells them apart where it can, e.g. the
  MindSpore DeiT seed, PaddleViT's DeiT, Google's ViT; :attr:`Weights.family`);
- size: ``embed_dim`` (class token width), ``depth`` (block count), ``mlp_ratio`` (``mlp.fc1`` rows over
  the width), ``patch_size`` (patch-embedding kernel), T2T's ``token_dim`` (``tokens_to_token.project``
  columns / 3x3) and, for BEiT only, ``num_heads`` (relative-position table columns);
- a distilled head: ``dist_token``;
- the T2T variant: a Performer tokens-to-token stage has ``attention1.kqv``, a Transformer one
  ``attention1.attn.qkv``;
- resolution: the position table's length (minus the class / distillation tokens) is the patch grid;
  times the patch size (T2T-ViT: times 16, its soft-split strides 4 x 2 x 2). BEiT without an absolute
  table: a relative table of ``(2g - 1)^2 + 3`` rows is a ``g x g`` grid.

The registered models of the family and variant whose sizes are the file's *fit*. Exactly one: it is used
and the report says which. Several (ViT-B vs DeiT-B in a bare timm file; two sizes that differ only in the
head count, which the weights do not show): they are listed and ``--arch`` picks. None: the file is a
scaled model (other sizes than any variant's); the nearest variant of its family supplies what the weights
do not show, the file's sizes the rest -- unless that is the head count, which must then be given
(``--set num_heads=N``). Only when no family fits at all is ``--arch`` asked for.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from vitzoo.errors import UserError
from vitzoo.models.registry import get_entry, list_models

FAMILIES = {"vit": "vit_*", "deit": "deit_*", "t2t": "t2t_vit_*", "beit": "beit_*"}
# the fields a registered variant is told apart by (img_size and num_classes are fitted, not matched)
SIZE_FIELDS = ("embed_dim", "depth", "patch_size", "mlp_ratio", "token_dim", "num_heads")
TRAIT_FIELDS = ("distilled", "tokens_type")
_T2T_STRIDE = 16  # T2T-ViT's soft splits: stride 4, then 2, then 2


@dataclass(frozen=True)
class Detection:
    """What the tensors show, and the registered model(s) that fit. A decision as data (rendered once)."""

    family: str | None  # "vit", "deit", "t2t", "beit", or "vit/deit" when the names fit both
    shown: dict[str, Any] = field(default_factory=dict)  # config fields read off the shapes
    arch: str | None = None  # the registered model used
    candidates: tuple[str, ...] = ()  # the registered models that fit equally well
    exact: bool = False  # whether the model's registered sizes are the file's

    def sizes(self) -> str:
        return ", ".join(f"{k} {self.shown[k]:g}" if isinstance(self.shown[k], float) else f"{k} {self.shown[k]}"
                         for k in (*SIZE_FIELDS, "img_size", *TRAIT_FIELDS) if k in self.shown)

    def sentence(self) -> str:
        sizes = self.sizes()
        if self.arch and self.exact:
            return f"architecture detected from the weights: {self.arch} ({sizes})"
        if self.arch:
            return (f"architecture detected from the weights: {self.family} with the file's sizes ({sizes}), "
                    f"no registered variant's; built as {self.arch} with them")
        if self.candidates:
            return (f"the weights ({sizes}) fit {len(self.candidates)} registered models: "
                    f"{', '.join(self.candidates)}; pass --arch NAME to pick one")
        return f"the weights ({sizes}) fit no registered model family; pass --arch NAME"


def shown_fields(sd: dict[str, torch.Tensor]) -> tuple[str | None, dict[str, Any]]:
    """``(family or None, config fields the shapes fix)`` for a state dict in vitzoo's names."""
    if "cls_token" not in sd or not any(k.startswith("blocks.") for k in sd):
        return None, {}
    D = int(sd["cls_token"].shape[-1])
    out: dict[str, Any] = {"embed_dim": D, "depth": 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))}
    if "blocks.0.mlp.fc1.weight" in sd:
        out["mlp_ratio"] = sd["blocks.0.mlp.fc1.weight"].shape[0] / D
    if "head.weight" in sd:
        out["num_classes"] = int(sd["head.weight"].shape[0])
    grid = None
    if any(k.startswith("tokens_to_token.") for k in sd):
        family = "t2t"
        out["tokens_type"] = "performer" if "tokens_to_token.attention1.kqv.weight" in sd else "transformer"
        if "tokens_to_token.project.weight" in sd:
            out["token_dim"] = int(sd["tokens_to_token.project.weight"].shape[1]) // 9  # 3x3 soft split
        out["qkv_bias"] = "blocks.0.attn.qkv.bias" in sd
        grid = _grid(sd.get("pos_embed"), prefix=1)
        if grid:
            out["img_size"] = grid * _T2T_STRIDE
        return family, out
    if "patch_embed.proj.weight" in sd:
        out["patch_size"] = int(sd["patch_embed.proj.weight"].shape[-1])
        out["in_chans"] = int(sd["patch_embed.proj.weight"].shape[1])
    tables = [v for k, v in sd.items() if k.endswith("relative_position_bias_table")]
    if tables or "blocks.0.attn.q_bias" in sd or "blocks.0.gamma_1" in sd:
        family = "beit"
        if tables:
            out["num_heads"] = int(tables[0].shape[1])
            side = (math.isqrt(int(tables[0].shape[0]) - 3) + 1) // 2  # (2g - 1)^2 + 3 rows
            grid = side if (2 * side - 1) ** 2 + 3 == tables[0].shape[0] else None
        grid = _grid(sd.get("pos_embed"), prefix=1) or grid
    else:
        family = None  # ViT or DeiT: the same network
        out["distilled"] = "dist_token" in sd
        out["qkv_bias"] = "blocks.0.attn.qkv.bias" in sd
        grid = _grid(sd.get("pos_embed"), prefix=2 if out["distilled"] else 1)
    if grid and "patch_size" in out:
        out["img_size"] = grid * out["patch_size"]
    return family, out


def _grid(pos_embed: torch.Tensor | None, prefix: int) -> int | None:
    if pos_embed is None or pos_embed.dim() != 3:
        return None
    side = math.isqrt(int(pos_embed.shape[1]) - prefix)
    return side if side * side == pos_embed.shape[1] - prefix else None


def detect_arch(sd: dict[str, torch.Tensor], layout_family: str | None = None,
                given: dict[str, Any] | None = None) -> Detection:
    """The registered model ``sd`` is (see the module docstring). ``layout_family``: the family the
    file's layout implies, if any; ``given``: config fields the caller chose (they count as the file's)."""
    family, shown = shown_fields(sd)
    shown = {**shown, **{k: v for k, v in (given or {}).items() if k in (*SIZE_FIELDS, *TRAIT_FIELDS, "img_size")}}
    if family is None and shown:
        family = layout_family if layout_family in ("vit", "deit") else "vit/deit"
    if family is None:
        return Detection(None, shown)
    names = [n for fam in family.split("/") for n in list_models(FAMILIES[fam])]
    names = [n for n in names if all(getattr(get_entry(n).cfg, k, shown[k]) == shown[k] for k in TRAIT_FIELDS
                                     if k in shown)]
    if not names:
        return Detection(family, shown)
    ranked = sorted((_distance(get_entry(n).cfg, shown), get_entry(n).cfg.img_size, n) for n in names)
    exact = ranked[0][0][0] == 0
    networks: dict[tuple, str] = {}  # one name per network: of a variant at several resolutions, none
    for d, _, n in ranked:           # the file's (which is taken anyway), the smallest
        if d == ranked[0][0]:
            networks.setdefault((n.rsplit("_", 1)[0], dataclasses.replace(get_entry(n).cfg, img_size=0)), n)
    best = list(networks.values())
    if len(best) > 1:
        return Detection(family, shown, candidates=tuple(sorted(best)), exact=exact)
    return Detection(family, shown, arch=best[0], candidates=(best[0],), exact=exact)


def _distance(cfg: Any, shown: dict[str, Any]) -> tuple[int, int, float]:
    """(size fields that differ, resolution differs, how far the sizes are): smaller fits better."""
    differ = [k for k in SIZE_FIELDS if k in shown and hasattr(cfg, k) and getattr(cfg, k) != shown[k]]
    other_res = int("img_size" in shown and cfg.img_size != shown["img_size"])
    far = sum(abs(math.log(shown[k] / getattr(cfg, k))) for k in ("embed_dim", "depth") if k in shown)
    return len(differ), other_res, round(far, 6)


def choose_arch(sd: dict[str, torch.Tensor], source: str, layout_family: str | None = None,
                given: dict[str, Any] | None = None) -> Detection:
    """:func:`detect_arch`, raising a UserError (naming the candidates) unless one model fits, or when a
    scaled model's head count is neither shown nor given."""
    found = detect_arch(sd, layout_family, given)
    if found.arch is None:
        raise UserError(f"{source} records no architecture, and {found.sentence()}")
    if not found.exact and "num_heads" not in found.shown:
        heads = get_entry(found.arch).cfg.num_heads
        raise UserError(f"{source}: a {found.family} with sizes no registered variant has ({found.sizes()}), and "
                        f"its weights do not show the head count: give it (vitzoo convert ... --set num_heads=N, "
                        f"or num_heads=N in Python; the nearest variant, {found.arch}, has {heads}), or --arch NAME")
    return found


def applied_fields(found: Detection) -> dict[str, Any]:
    """The shown fields a model built for the detected name takes from the file (sizes, not traits)."""
    keep = (*SIZE_FIELDS, "img_size", "num_classes", "in_chans", "qkv_bias")
    return {k: v for k, v in found.shown.items() if k in keep and hasattr(get_entry(found.arch).cfg, k)}
