"""`vitzoo plot`: training curves from a run's metrics.jsonl, and how the rows are read (CPU, seconds)."""
from __future__ import annotations

import json

import pytest

from vitzoo.cli import main as cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def write_metrics(path, epochs=4, partial_last_line=True):
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "lr": 1e-3 / e, "val_loss": 2.2 / e,
               "val_top1": 0.2 * e, "val_top5": min(1.0, 0.3 * e), "img_per_sec": 100.0, "time": 3.0 * e}
        if e == 2:
            del row["val_top5"]  # missing keys are tolerated
            row["val_loss"] = None
        rows.append(json.dumps(row))
    text = "\n".join(rows) + "\n" + ('{"epoch": 5, "train_lo' if partial_last_line else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_plot_writes_png_from_run_folder_and_compares_runs(tmp_path, capsys):
    write_metrics(tmp_path / "run_a" / "metrics.jsonl")
    write_metrics(tmp_path / "run_b" / "metrics.jsonl", epochs=6, partial_last_line=False)
    assert cli(["plot", str(tmp_path / "run_a")]) == 0
    single = tmp_path / "run_a" / "curves.png"
    assert single.read_bytes()[:8] == PNG_MAGIC
    assert "unparsable" in capsys.readouterr().err  # the half-written last line is reported, not fatal
    out = tmp_path / "cmp.png"
    assert cli(["plot", str(tmp_path / "run_a"), str(tmp_path / "run_b" / "metrics.jsonl"),
                "--output", str(out), "--keys", "train_loss", "img_per_sec"]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    w, h = png_size(out)
    assert w > h  # two panels side by side


def test_plot_reads_rows_as_written(tmp_path):
    from vitzoo.cli.plot import read_metrics
    from vitzoo.visualize import _series

    rows = read_metrics(write_metrics(tmp_path / "m.jsonl"))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    xs, ys = _series(rows, "val_loss", "epoch")  # the null at epoch 2 is skipped
    assert xs == [1.0, 3.0, 4.0] and ys == pytest.approx([2.2, 2.2 / 3, 2.2 / 4])


@pytest.mark.parametrize("name, content, culprit", [
    ("missing.jsonl", None, "missing.jsonl"),
    ("empty.jsonl", "", "empty.jsonl"),
    ("junk.jsonl", "not json\n[1, 2]\n", "junk.jsonl"),
    ("run", "folder", "metrics.jsonl"),  # a folder without metrics.jsonl
])
def test_plot_user_errors_are_one_line(tmp_path, capsys, name, content, culprit):
    target = tmp_path / name
    if content == "folder":
        target.mkdir()
    elif content is not None:
        target.write_text(content)
    assert cli(["plot", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vitzoo plot: error:") and culprit in err[-1]
    assert not any("Traceback" in line for line in err), err
