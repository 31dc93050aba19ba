"""`vitzoo models`, `vitzoo attention`, `vitzoo plot` and the attention-rollout arithmetic (CPU, seconds)."""
from __future__ import annotations

import json

import pytest
import torch

from vitzoo.cli import main as cli
from vitzoo.visualize import attention_rollout, class_token_map, to_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 48, "num_heads": 3}


@pytest.fixture(autouse=True)
def fresh_cli_logging():
    """The CLI attaches a stderr handler to the 'vitzoo' logger once per process; under pytest it would
    keep writing to an earlier test's (closed) captured stderr. Start each test without it."""
    import logging

    log = logging.getLogger("vitzoo")
    saved = log.handlers[:]
    log.handlers.clear()
    yield
    log.handlers[:] = saved


def png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


# ----------------------------------------------------------------------------------- models
def test_models_lists_names_and_counts_params(capsys):
    from vitzoo import create_model

    assert cli(["models", "deit_tiny*", "--params"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("deit_tiny")}
    assert set(lines) == {"deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"}
    for name, line in lines.items():  # the meta-device count equals a real model's
        expected = sum(p.numel() for p in create_model(name).parameters())
        assert f"{expected:,}" in line.split()
    assert "192" in lines["deit_tiny_patch16_224"].split()  # embed_dim column
    assert "base" not in out


def test_models_substring_filter_and_no_match(capsys):
    assert cli(["models", "distilled"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if "_patch" in line]
    assert names and all("distilled" in n for n in names)
    assert cli(["models", "no_such_model_xyz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_model_xyz" in err


# ---------------------------------------------------------------------------------- rollout
def test_rollout_of_uniform_attention_by_hand():
    # U = all-ones/N (rows sum to 1, U @ U = U). A_hat = (U + I) / 2 per block, so two blocks give
    # (U + I)^2 / 4 = (U + 2U + I) / 4 = 3/4 U + 1/4 I: the class row over the N-1 patches is 3 / (4N).
    N, heads = 5, 2
    U = torch.full((1, heads, N, N), 1.0 / N)
    roll = attention_rollout([U, U])
    assert torch.allclose(roll[0], 0.75 * torch.full((N, N), 1.0 / N) + 0.25 * torch.eye(N))
    cls = class_token_map([U, U], "rollout", num_prefix_tokens=1)
    assert torch.allclose(cls, torch.full((1, N - 1), 3 / (4 * N)))
    # identity attention everywhere: rollout is the identity -> no flow from patches to the class token
    eye = torch.eye(N).expand(1, heads, N, N)
    assert torch.allclose(class_token_map([eye, eye], "rollout"), torch.zeros(1, N - 1))


def test_rollout_order_heads_and_modes_by_hand():
    # 3 tokens (cls, p1, p2). Block 1: both heads send every token to p1 (rows = e1).
    # Block 2: head 0 sends cls to p2, head 1 sends cls to itself; other rows identity.
    e = torch.eye(3)
    b1 = torch.stack([e[[1, 1, 1]], e[[1, 1, 1]]])[None]  # (1, 2, 3, 3)
    b2 = torch.stack([e[[2, 1, 2]], e[[0, 1, 2]]])[None]
    # head mean of block 2: cls row [0.5, 0, 0.5]; + I, renormalised: [0.75, 0, 0.25]; rows 1, 2 = e1, e2.
    # block 1 with identity: rows [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5].
    # cls row of A2 @ A1 = 0.75 * [0.5, 0.5, 0] + 0.25 * [0, 0.5, 0.5] = [0.375, 0.5, 0.125]
    roll = attention_rollout([b1, b2])
    assert torch.allclose(roll[0, 0], torch.tensor([0.375, 0.5, 0.125]))
    assert torch.allclose(roll.sum(-1), torch.ones(1, 3))  # still a flow: rows sum to one
    # last block, head 0 alone: the class token looks only at p2
    assert torch.allclose(class_token_map([b1, b2], "last", head=0), torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(class_token_map([b1, b2], "block:0"), torch.tensor([[1.0, 0.0]]))
    # a distilled model's two prefix tokens are both dropped
    assert class_token_map([b1, b2], "rollout", num_prefix_tokens=2).shape == (1, 1)


def test_to_grid_row_major():
    row = torch.arange(6.0)[None]
    assert to_grid(row, (2, 3))[0, 1].tolist() == [3.0, 4.0, 5.0]
    assert to_grid(torch.arange(16.0)[None]).shape == (1, 4, 4)


# -------------------------------------------------------------------------------- attention
@pytest.fixture
def tiny_checkpoint(tmp_path):
    from vitzoo import create_model
    from vitzoo.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("deit_tiny_distilled_patch16_224", num_classes=3, **TINY)
    meta = {"arch": model.arch, "model_kwargs": model.model_kwargs, "class_names": ["circle", "square", "star"],
            "data_config": {**model.data_config, "input_size": list(model.data_config["input_size"])}}
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, {"model": model.state_dict(), "meta": meta})
    return path


def write_images(folder):
    from PIL import Image

    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(folder / "red.png")
    (folder / "sub").mkdir()
    Image.new("RGB", (50, 50), (40, 40, 200)).save(folder / "sub" / "blue.jpg")
    (folder / "broken.jpg").write_bytes(b"not really a jpeg")
    return folder


def test_attention_writes_pngs_and_skips_bad_images(tmp_path, tiny_checkpoint, capsys):
    images = write_images(tmp_path / "imgs")
    out = tmp_path / "maps"
    code = cli(["attention", str(images), "--checkpoint", str(tiny_checkpoint), "--output", str(out),
                "--recursive"])
    assert code == 0
    captured = capsys.readouterr()
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["red_attention.png", "sub/blue_attention.png"]
    for p in out.rglob("*.png"):
        assert p.read_bytes()[:8] == PNG_MAGIC
        w, h = png_size(p)
        assert w > 2 * h  # three panels side by side
    assert "broken.jpg" in captured.err and "skipped" in captured.err
    assert any(name in captured.out for name in ("circle", "square", "star"))  # class names from meta


def test_attention_block_mode_with_random_model(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (0, 128, 0)).save(tmp_path / "g.png")
    # --arch alone builds a random model: a full-size tiny DeiT (224 input) stays fast enough on CPU
    code = cli(["attention", str(tmp_path / "g.png"), "--arch", "deit_tiny_patch16_224", "--mode", "block:-1",
                "--head", "2", "--output", str(tmp_path / "o")])
    assert code == 0 and (tmp_path / "o" / "g_attention.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("args, culprit", [
    (["{img}", "--checkpoint", "{tmp}/missing.pt"], "missing.pt"),
    (["{tmp}/nothing_here.png", "--arch", "deit_tiny_patch16_224"], "nothing_here.png"),
    (["{img}"], "--checkpoint"),
    (["{img}", "--arch", "deit_tiny_patch16_224", "--mode", "sideways"], "--mode"),
    (["{img}", "--checkpoint", "{ckpt}", "--head", "7"], "--head"),  # the tiny model has 3 heads
    (["{tmp}/broken.jpg", "--arch", "deit_tiny_patch16_224"], "broken.jpg"),
])
def test_attention_user_errors_are_one_line(tmp_path, tiny_checkpoint, capsys, args, culprit):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    argv = [a.format(img=tmp_path / "ok.png", tmp=tmp_path, ckpt=tiny_checkpoint) for a in args]
    assert cli(["attention", *argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vitzoo attention: error:") and culprit in err[-1]
    assert not any("Traceback" in line for line in err), err


# ------------------------------------------------------------------------------------- plot
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
