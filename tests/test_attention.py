"""`vitzoo attention` and the attention-rollout arithmetic of vitzoo.viz.draw (CPU, seconds)."""
from __future__ import annotations

import pytest
import torch

from vitzoo.cli import main as cli
from vitzoo.viz.draw import attention_rollout, class_token_map, to_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 48, "num_heads": 3}


def png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


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


def test_output_with_an_image_suffix_is_a_file(tmp_path, tiny_checkpoint, capsys):
    """Issue 13, item 9: `--output attn.png` made a folder attn.png/ holding 000002_attention.png."""
    images = write_images(tmp_path / "imgs")
    out = tmp_path / "attn.png"
    assert cli(["attention", str(images / "red.png"), "--checkpoint", str(tiny_checkpoint), "--output", str(out)]) == 0
    assert out.is_file() and out.read_bytes()[:8] == PNG_MAGIC
    assert f"wrote 1 attention map(s) to {out}" in capsys.readouterr().err
    # several images and one file name: refused before anything is drawn
    assert cli(["attention", str(images), "--recursive", "--checkpoint", str(tiny_checkpoint), "--output",
                str(tmp_path / "many.png")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"vitzoo attention: error: --output {tmp_path / 'many.png'} names one file, but there are 3 images: "
        f"give a folder instead (e.g. --output {tmp_path / 'many'}/), which gets one PNG per image")
    assert not (tmp_path / "many.png").exists()
