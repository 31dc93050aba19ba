"""`vitzoo download TAG...`: fill the weights cache ahead of time (for compute nodes without internet).

Each argument is what ``--pretrained`` accepts: a tag (``deit_small_patch16_224.fb_in1k``), an architecture
with a default tag, ``hf-hub:org/repo`` or a URL. Hub repos and URL files land in one folder, the hub
cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``). Copy that folder to the
cluster, point ``HF_HUB_CACHE`` at it there and set ``HF_HUB_OFFLINE=1``: every command then loads the
same names from the cache without a request. ``--all`` fetches every tag of the table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vitzoo.errors import UserError
from vitzoo.models.hub import resolve
from vitzoo.models.url_download import cache_root
from vitzoo.models.weights_table import TAGS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo download", description=__doc__.split("\n\n")[0],
                                epilog="example: vitzoo download deit_small_patch16_224.fb_in1k "
                                       "regnety_160.deit_in1k; then copy the cache folder it prints")
    p.add_argument("names", nargs="*", metavar="TAG",
                   help="weights tag, architecture (its default tag), hf-hub:org/repo or URL")
    p.add_argument("--all", action="store_true", help="every tag of `vitzoo models --pretrained` (tens of GB)")
    return p


def size_of(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)  # hub snapshots are symlinks: stat follows them


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(TAGS) if args.all else args.names
    if not names:
        raise UserError("name at least one weights tag (`vitzoo models --pretrained` lists them), or --all")
    for name in names:
        path = Path(resolve(name))
        if not path.exists():
            raise UserError(f"{name}: not a weights tag, hf-hub:org/repo or URL (and no such file)")
        print(f"{name}: {path} ({size_of(path) / 1e6:.1f} MB)")
    print(f"cache: {cache_root()} (copy it across and set HF_HUB_CACHE to it, HF_HUB_OFFLINE=1)")
    return 0
