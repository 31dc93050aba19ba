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
    from vitzoo.viz.draw import _series

    rows = read_metrics(write_metrics(tmp_path / "m.jsonl"))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    xs, ys = _series(rows, "val_loss", "epoch")  # the null at epoch 2 is skipped
    assert xs == [1.0, 3.0, 4.0] and ys == pytest.approx([2.2, 2.2 / 3, 2.2 / 4])


@pytest.mark.parametrize("name, content, culprit", [
    ("missing.jsonl", None, "missing.jsonl"),
    ("empty.jsonl", "", "empty.jsonl"),
    ("junk.jsonl", "not json\n[1, 2]\n", "junk.jsonl"),
    ("run", "folder", "metrics.jsonl"),  # a folder without metrics.jsonl
    ("model.pth", b"PK\x03\x04\xa0\xff binary", "model.pth is not a metrics file"),
])
def test_plot_user_errors_are_one_line(tmp_path, capsys, name, content, culprit):
    target = tmp_path / name
    if content == "folder":
        target.mkdir()
    elif isinstance(content, bytes):
        target.write_bytes(content)
    elif content is not None:
        target.write_text(content)
    assert cli(["plot", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vitzoo plot: error:") and culprit in err[-1]
    assert not any("Traceback" in line for line in err), err


def test_curves_say_val_and_draw_the_lr_per_update(tmp_path, monkeypatch):
    """Issue 13, item 8: the accuracy legend did not say "val" and the lr was one point per epoch, so a
    one-epoch warmup was invisible. The trainer's rows now carry ``lr_steps``; the plot draws them."""
    from types import SimpleNamespace

    from vitzoo.engine.reporting import EpochStats, MetricsFile
    from vitzoo.viz import draw as visualize

    metrics = MetricsFile(tmp_path, enabled=True)
    step = 0
    for epoch in (1, 2):
        stats = EpochStats()
        for _ in range(4):
            step += 1
            stats.add(SimpleNamespace(loss=1.0, losses=1, samples=8, skipped=False, global_step=step, lr=0.1 * step,
                                      data_seconds=0.0))
        metrics.add(stats.row(epoch, step, 0.1 * step, {"Loss": 1.0, "Top1-Acc": 0.5, "Top5-Acc": 1.0}))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["lr_steps"] == [[1, 0.1], [2, 0.2], [3, pytest.approx(0.3)], [4, 0.4]]
    assert "lr_steps" not in (tmp_path / "metrics.csv").read_text()  # the CSV keeps one value per cell

    figures = []
    monkeypatch.setattr(visualize, "save_figure", lambda fig, path, dpi=110: figures.append(fig) or path)
    visualize.draw_curves({"run": rows}, tmp_path / "curves.png")
    axes = {ax.get_title(): ax for ax in figures[0].axes}
    assert [t.get_text() for t in axes["accuracy"].get_legend().get_texts()] == ["val top-1", "val top-5"]
    (lr_line,) = axes["learning rate"].lines
    assert lr_line.get_label() == "lr (per update)"
    assert list(lr_line.get_xdata()) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]  # x in epochs
    old_rows = [{k: v for k, v in r.items() if k != "lr_steps"} for r in rows]  # files written before
    visualize.draw_curves({"run": old_rows}, tmp_path / "old.png")
    assert {ax.get_title(): ax for ax in figures[1].axes}["learning rate"].lines[0].get_label() == "lr (end of epoch)"
