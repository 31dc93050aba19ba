"""`vitzoo models`: the registered model names as a table (family, input, width/depth/heads, params, the
published weights each has, with their top-1), and with ``--pretrained`` the published weights alone
(:mod:`vitzoo.models.weights_table`: one row per tag, with top-5, license and source).

``PATTERN`` is a shell-style filter (``'deit_*'``); a pattern without wildcards matches as a substring
(``vitzoo models distilled``). ``--params`` builds every listed model on PyTorch's *meta* device (shapes,
no memory, no initialisation arithmetic), so counting even the large models takes a moment, not minutes.
Counts are the trainable parameters (what the papers' tables quote); fixed tensors that travel in the
state dict (T2T-ViT's Performer random features and sinusoid table) are shown apart as ``fixed``. GFLOPs
are multiply-adds of one image at the tag's resolution (as DeiT, T2T-ViT and PaddleViT count FLOPs),
counted by ``torch.utils.flop_counter`` on the meta device.
"""
from __future__ import annotations

import argparse
import fnmatch
from typing import Any

from vitzoo.errors import UserError, nearest
from vitzoo.models import create_model, get_entry, list_models
from vitzoo.models.weights_table import TAGS, Tag, tags_for

FAMILIES = {"vit": "ViT", "deit": "DeiT", "t2t": "T2T-ViT", "beit": "BEiT"}


def family_of(name: str, model_cls: type | None = None) -> str:
    """Human family name from the registered name's prefix (DeiT and ViT share one class)."""
    fam = FAMILIES.get(name.split("_", 1)[0])
    return fam or (model_cls.__name__ if model_cls is not None else "?")


def count_params(name: str, num_classes: int = 1000) -> tuple[int, int]:
    """(trainable parameters, fixed persistent float buffers) of ``name``, built on the meta device."""
    import torch

    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    param_names = {n for n, _ in model.named_parameters()}
    n_fixed = sum(t.numel() for k, t in model.state_dict().items()
                  if k not in param_names and t.is_floating_point())
    return n_params, n_fixed


def count_gflops(name: str, img_size: int) -> float:
    """Multiply-adds (x 1e9) of one ``img_size`` image through ``name``, on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), torch.no_grad():
        model = create_model(name, img_size=img_size).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, img_size, img_size))
    return counter.get_total_flops() / 2 / 1e9  # the counter counts a multiply-add as 2 FLOPs


def describe_tag(tag: Tag, with_params: bool = False) -> dict[str, Any]:
    """One row of the weights table: the tag, its published accuracy, resolution, license and sources."""
    row: dict[str, Any] = {
        "tag": tag.tag,
        "top-1": f"{tag.top1:g}" if tag.top1 is not None else "-",
        "top-5": f"{tag.top5:g}" if tag.top5 is not None else "-",
        "input": tag.input_size,
        "classes": tag.num_classes or "none",
        "license": tag.license,
        "from": "+".join(k for k, v in (("hub", tag.hub), ("url", tag.url)) if v),
    }
    if with_params:
        registered = tag.arch in list_models()
        row["params (M)"] = f"{count_params(tag.arch, tag.num_classes)[0] / 1e6:.1f}" if registered else "-"
        row["GFLOPs"] = f"{count_gflops(tag.arch, tag.input_size):.1f}" if registered else "-"
    return row


def describe(name: str, with_params: bool = False) -> dict[str, Any]:
    """One table row for ``name`` (read from its registered config; nothing is built without params)."""
    entry = get_entry(name)
    cfg = entry.cfg
    if hasattr(cfg, "tokens_type"):  # T2T-ViT has no patch size: its tokeniser is the T2T module
        patch = f"t2t/{cfg.tokens_type}"
    else:
        patch = str(getattr(cfg, "patch_size", "?"))
    row: dict[str, Any] = {
        "name": name,
        "family": family_of(name, entry.model_cls) + (" (distilled)" if getattr(cfg, "distilled", False) else ""),
        "input": int(entry.data_config["input_size"][-1]),
        "patch": patch,
        "embed_dim": cfg.embed_dim,
        "depth": cfg.depth,
        "heads": cfg.num_heads,
    }
    if with_params:
        row["params"], row["fixed"] = count_params(name)
    row["weights (top-1)"] = weights_cell(name)
    return row


def weights_cell(name: str) -> str:
    """The tags published for ``name`` (the part after the dot), each with its ImageNet top-1; '-' if none."""
    tags = tags_for(name)
    return ", ".join(t.tag.split(".", 1)[1] + (f" {t.top1:g}" if t.top1 is not None else "") for t in tags) or "-"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain aligned text table; counts with thousands separators and in millions."""
    cols = ["name", "family", "input", "patch", "embed_dim", "depth", "heads"]
    if rows and "params" in rows[0]:
        cols += ["params", "params (M)", "fixed"]
    cols.append("weights (top-1)")
    cells = []
    for r in rows:
        c = {k: str(r[k]) for k in cols if k in r}
        if "params" in r:
            c["params"] = f"{r['params']:,}"
            c["params (M)"] = f"{r['params'] / 1e6:.2f}"
            c["fixed"] = f"{r['fixed']:,}" if r["fixed"] else "-"
        cells.append(c)
    width = {k: max([len(k)] + [len(c[k]) for c in cells]) for k in cols}
    right = {"input", "embed_dim", "depth", "heads", "params", "params (M)", "fixed"}

    def line(values: dict[str, str]) -> str:
        return "  ".join(values[k].rjust(width[k]) if k in right else values[k].ljust(width[k])
                         for k in cols).rstrip()

    out = [line({k: k for k in cols}), line({k: "-" * width[k] for k in cols})]
    return "\n".join(out + [line(c) for c in cells])


def format_rows(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """Any rows of strings/numbers as aligned text (numbers right-aligned), or a markdown table."""
    cols = list(rows[0])
    cells = [{k: str(r[k]) for k in cols} for r in rows]
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        return "\n".join(out + ["| " + " | ".join(c[k] for k in cols) + " |" for c in cells])
    width = {k: max([len(k)] + [len(c[k]) for c in cells]) for k in cols}
    right = {k for k in cols if all(c[k].replace(".", "").replace("-", "").isdigit() or c[k] == "-" for c in cells)}

    def line(values: dict[str, str]) -> str:
        return "  ".join(values[k].rjust(width[k]) if k in right else values[k].ljust(width[k])
                         for k in cols).rstrip()

    return "\n".join([line({k: k for k in cols}), line({k: "-" * width[k] for k in cols})] + [line(c) for c in cells])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo models", description=__doc__.split("\n\n")[0],
                                epilog="examples: vitzoo models; vitzoo models 'deit_*' --params; "
                                       "vitzoo models t2t --params")
    p.add_argument("pattern", nargs="?", default=None, metavar="PATTERN",
                   help="shell-style filter ('deit_*'); without wildcards, a substring ('distilled')")
    p.add_argument("--params", action="store_true",
                   help="also count parameters (and with --pretrained GFLOPs; built on the meta device)")
    p.add_argument("--pretrained", action="store_true",
                   help="list the published weights (tags, top-1 / top-5, input, license, hub / url source)")
    p.add_argument("--markdown", action="store_true", help="with --pretrained: a markdown table (the README's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    pattern = args.pattern
    if pattern and not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    if args.pretrained:
        tags = [t for t in TAGS.values() if fnmatch.fnmatch(t.tag, pattern or "*")]
        if not tags:
            raise UserError(f"no weights tag matches '{args.pattern}'{nearest(args.pattern, list(TAGS))}")
        print(format_rows([describe_tag(t, args.params) for t in tags], args.markdown))
        if not args.markdown:
            print(f"\n{len(tags)} tag(s); sources and citations: vitzoo.models.weights_table; "
                  "load one: create_model('TAG', pretrained=True) or --pretrained TAG")
        return 0
    names = list_models(pattern)
    if not names:
        raise UserError(f"no registered model matches '{args.pattern}'{nearest(args.pattern, list_models())}")
    rows = [describe(n, args.params) for n in names]
    print(format_table(rows))
    print(f"\n{len(rows)} model(s)" + ("" if args.params else "; add --params for parameter counts, "
                                                              "--pretrained for the published weights"))
    return 0
