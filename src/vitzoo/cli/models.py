"""`vitzoo models`: the registered model names as a table (family, input, width/depth/heads, params).

``PATTERN`` is a shell-style filter (``'deit_*'``); a pattern without wildcards matches as a substring
(``vitzoo models distilled``). ``--params`` builds every listed model on PyTorch's *meta* device (shapes,
no memory, no initialisation arithmetic), so counting even the large models takes a moment, not minutes.
Counts are the trainable parameters (what the papers' tables quote); fixed tensors that travel in the
state dict (T2T-ViT's Performer random features and sinusoid table) are shown apart as ``fixed``.
"""
from __future__ import annotations

import argparse
from typing import Any

from vitzoo.errors import UserError, nearest
from vitzoo.models import create_model, get_entry, list_models

FAMILIES = {"vit": "ViT", "deit": "DeiT", "t2t": "T2T-ViT", "beit": "BEiT"}


def family_of(name: str, model_cls: type | None = None) -> str:
    """Human family name from the registered name's prefix (DeiT and ViT share one class)."""
    fam = FAMILIES.get(name.split("_", 1)[0])
    return fam or (model_cls.__name__ if model_cls is not None else "?")


def count_params(name: str) -> tuple[int, int]:
    """(trainable parameters, fixed persistent float buffers) of ``name``, built on the meta device."""
    import torch


    with torch.device("meta"):
        model = create_model(name)
    n_params = sum(p.numel() for p in model.parameters())
    param_names = {n for n, _ in model.named_parameters()}
    n_fixed = sum(t.numel() for k, t in model.state_dict().items()
                  if k not in param_names and t.is_floating_point())
    return n_params, n_fixed


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
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain aligned text table; counts with thousands separators and in millions."""
    cols = ["name", "family", "input", "patch", "embed_dim", "depth", "heads"]
    if rows and "params" in rows[0]:
        cols += ["params", "params (M)", "fixed"]
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo models", description=__doc__.split("\n\n")[0],
                                epilog="examples: vitzoo models; vitzoo models 'deit_*' --params; "
                                       "vitzoo models t2t --params")
    p.add_argument("pattern", nargs="?", default=None, metavar="PATTERN",
                   help="shell-style filter ('deit_*'); without wildcards, a substring ('distilled')")
    p.add_argument("--params", action="store_true",
                   help="also count parameters (built on the meta device: fast, no memory)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    pattern = args.pattern
    if pattern and not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    names = list_models(pattern)
    if not names:
        raise UserError(f"no registered model matches '{args.pattern}'{nearest(args.pattern, list_models())}")
    rows = [describe(n, args.params) for n in names]
    print(format_table(rows))
    print(f"\n{len(rows)} model(s)" + ("" if args.params else "; add --params for parameter counts"))
    return 0
