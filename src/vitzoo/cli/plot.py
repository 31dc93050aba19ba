"""`vitzoo plot`: training curves (loss, top-1/top-5, lr) of one or more runs in one PNG.

Each argument is a run folder (its ``metrics.jsonl``, as ``vitzoo train`` writes it: one JSON object per
epoch with epoch, step, train_loss, lr, val_loss, val_top1, val_top5, img_per_sec, time) or the JSONL file
itself. Missing keys and null values are skipped; an unparsable line (e.g. the half-written last line of
a file copied while a run was writing) is ignored with a warning. Several runs are drawn in one figure
to compare them (one colour per run).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vitzoo.errors import UserError
from vitzoo.viz.draw import draw_curves

METRICS_FILE = "metrics.jsonl"


def resolve_metrics_path(arg: str) -> Path:
    """A run folder -> its metrics.jsonl (searched one level down too); a file -> itself."""
    path = Path(arg)
    if path.is_dir():
        direct = path / METRICS_FILE
        if direct.is_file():
            return direct
        found = sorted(path.glob(f"*/{METRICS_FILE}"))
        if len(found) == 1:
            return found[0]
        if found:
            raise UserError(f"{path} holds several runs ({', '.join(str(f.parent) for f in found[:4])}); "
                            "pass one of them (or several, to compare)")
        raise UserError(f"no {METRICS_FILE} in {path} (is it a `vitzoo train` output folder?)")
    if not path.is_file():
        raise UserError(f"no such file or folder: {path}")
    return path


def read_metrics(path: Path) -> list[dict]:
    """The JSON-object lines of ``path``; blank / unparsable / non-object lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a metrics file (metrics.jsonl is text: one JSON object per line)") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        print(f"vitzoo plot: {path}: ignored {bad} unparsable line(s)", file=sys.stderr)
    if not rows:
        raise UserError(f"{path} holds no metrics (empty file or no JSON object lines)")
    return rows


def run_label(path: Path, taken: set[str]) -> str:
    """Short unique label: the run folder's name (or the file's stem), made unique with the parents."""
    parts = path.parent.parts if path.name == METRICS_FILE else (path.parent / path.stem).parts
    for n in range(1, len(parts) + 1):
        label = "/".join(parts[-n:]) or path.stem
        if label not in taken:
            return label
    return str(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo plot", description=__doc__.split("\n\n")[0],
                                epilog="examples: vitzoo plot output/deit_tiny; "
                                       "vitzoo plot run_a run_b --output compare.png; "
                                       "vitzoo plot run_a --keys train_loss img_per_sec")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_METRICS_JSONL",
                   help="run folder(s) holding metrics.jsonl, or metrics JSONL file(s)")
    p.add_argument("--output", default=None,
                   help="PNG to write (default: curves.png in the run folder; compare.png for several runs)")
    p.add_argument("--keys", nargs="+", default=None,
                   help="draw these metric keys, one panel each (default: loss, top-1/top-5, lr panels)")
    p.add_argument("--x", default="epoch", choices=("epoch", "step", "time"), help="x axis (default: epoch)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    runs: dict[str, list[dict]] = {}
    paths = [resolve_metrics_path(a) for a in args.runs]
    for path in paths:
        runs[run_label(path, set(runs))] = read_metrics(path)
    if args.output:
        output = Path(args.output)
    else:
        output = paths[0].parent / ("curves.png" if len(paths) == 1 else "compare.png")
    if output.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"--output must end in .png, .pdf or .svg, got {output}")
    out = draw_curves(runs, output, keys=args.keys, x_key=args.x)
    rows = sum(len(r) for r in runs.values())
    print(f"wrote {out} ({len(runs)} run(s), {rows} row(s))")
    return 0
