"""BEiT pre-training: the model, the masks, the targets, `vitzoo pretrain` and the hand-over to fine-tuning.

Parity of the model with unilm's ``modeling_pretrain.py`` (same weights, mask and labels: same logits and
loss) is checked outside CI by ``benchmarks/parity_beit_pretrain.py``, which imports the authors' code.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vitzoo.checkpoint import load_checkpoint
from vitzoo.checkpoint.store import list_checkpoints
from vitzoo.cli import main as cli
from vitzoo.data import make_shapes_dataset
from vitzoo.errors import UserError
from vitzoo.mim.masking import BlockMaskGenerator
from vitzoo.mim.targets import PixelTarget
from vitzoo.mim.task import mim_criterion
from vitzoo.models import create_model, load_model
from vitzoo.models.beit_mim import build_mim_model

TINY = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_FLAG = "{patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 64, 32, size=32, seed=0, num_classes=4,
                               progress=False)


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--model", "beit_base_patch16_224", "--model_overrides", TINY_FLAG, "--input_size", "32",
            "--mim_target", "pixels", "--min_mask_patches", "4", "--data_path", str(data), "--output_dir", str(out),
            "--batch_size", "16", "--num_workers", "0", "--epochs", "1", "--warmup_epochs", "0", "--lr", "1e-3",
            "--unscale_lr", "true", "--amp_level", "O0", "--device", "cpu", "--print_loss_every", "1", *extra]


# ------------------------------------------------------------------------------------------ model
def test_mim_model_keys_are_unilms_and_it_predicts_only_masked_positions():
    model = build_mim_model("beit_base_patch16_224", 100, **TINY).eval()
    keys = set(model.state_dict())
    assert {"mask_token", "lm_head.weight", "rel_pos_bias.relative_position_bias_table", "norm.weight"} <= keys
    assert not any(k.startswith(("head.", "fc_norm.")) or k.endswith("attn.relative_position_bias_table")
                   for k in keys)
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, :10], mask[1, 5:12] = True, True
    assert model(x, mask).shape == (17, 100)
    assert model(x, mask, return_all_tokens=True).shape == (2, 64, 100)
    with torch.no_grad():  # no mask = the plain encoder
        assert torch.equal(model.forward_masked(x, None), model.forward_features(x))


def test_masked_patches_enter_the_blocks_as_the_mask_token():
    model = build_mim_model("beit_base_patch16_224", 10, **TINY).eval()
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    mask = torch.zeros(1, 64, dtype=torch.bool)
    mask[0, [3, 9]] = True
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x, mask)
        tokens = model.patch_embed(x)
    blocks_in = seen["x"][0, 1:]  # (N, D): the class token first
    assert torch.equal(blocks_in[3], model.mask_token[0, 0]) and torch.equal(blocks_in[9], model.mask_token[0, 0])
    assert torch.equal(blocks_in[~mask[0]], tokens[0][~mask[0]])


# ------------------------------------------------------------------------------------------ masks
def test_block_masks_reach_the_ratio_in_blocks_and_are_seeded():
    gen = BlockMaskGenerator.from_ratio((14, 14), 0.4, 16, None, 0.3)
    random.seed(0)
    masks = [gen() for _ in range(200)]
    counts = torch.tensor([int(m.sum()) for m in masks], dtype=torch.float)
    assert counts.max() <= 78 + 16 and abs(counts.mean().item() - 78) < 8  # about 40% of 196
    random.seed(0)
    assert torch.equal(gen(), masks[0])
    # blocks, not scattered patches: most masked patches have a masked neighbour
    m = masks[0]
    neighbours = torch.zeros_like(m)
    neighbours[1:] |= m[:-1]
    neighbours[:-1] |= m[1:]
    neighbours[:, 1:] |= m[:, :-1]
    neighbours[:, :-1] |= m[:, 1:]
    assert (m & neighbours).sum() >= 0.9 * m.sum()


def test_pixel_target_is_maes_patchify_normalised_per_patch():
    x = torch.randn(2, 3, 8, 8)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 1] = True
    target = PixelTarget(4, normalize=True)(x, torch.zeros(0), mask)
    # MAE models_mae.py patchify: (N, 3, h, p, w, q) -> nhwpqc
    ref = torch.einsum("nchpwq->nhwpqc", x.reshape(2, 3, 2, 4, 2, 4)).reshape(2, 4, 48)[:, 1]
    ref = (ref - ref.mean(-1, keepdim=True)) / (ref.var(-1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(target, ref, atol=1e-6)


# ------------------------------------------------------------------------------------------ the command
def test_pretrain_then_fine_tune_and_probe_from_the_checkpoint(shapes, tmp_path, capsys):
    out = tmp_path / "pt"
    assert cli(pretrain_args(shapes, out)) == 0
    captured = capsys.readouterr()
    assert "eval results: {'Loss':" in captured.out + captured.err
    assert (out / "pictures" / "epoch_001.png").stat().st_size > 1000  # inputs, masks, reconstructions
    ckpt = list_checkpoints(out / "checkpoints")[-1]
    meta = load_checkpoint(ckpt)["meta"]
    assert meta["task"] == "pretrain" and meta["mim"]["target"] == "pixels" and meta["arch"] == "beit_base_patch16_224"
    encoder, _ = load_model(ckpt)  # the encoder alone: mask token and LM head dropped
    assert encoder.num_classes == 0 and not hasattr(encoder, "lm_head")
    ft = tmp_path / "ft"
    assert cli(["train", "--model", "beit_base_patch16_224", "--model_overrides", TINY_FLAG, "--input_size", "32",
                "--num_classes", "4", "--pretrained", str(ckpt), "--data_path", str(shapes), "--output_dir", str(ft),
                "--batch_size", "16", "--num_workers", "0", "--epochs", "1", "--amp_level", "O0", "--device", "cpu",
                "--layer_decay", "0.65"]) == 0
    ft_meta = load_checkpoint(list_checkpoints(ft / "checkpoints")[-1])["meta"]
    assert ft_meta["epoch"] == 1 and ft_meta["task"] == "classify"  # the pre-training's epochs not continued
    tuned = load_checkpoint(list_checkpoints(ft / "checkpoints")[0])["model"]
    assert "blocks.1.attn.relative_position_bias_table" in tuned and "mask_token" not in tuned


def test_unilm_pretraining_file_loads_for_fine_tuning(tmp_path):
    """unilm's layout: {"model": sd} with the relative_position_index buffers; shared table -> every block."""
    mim = build_mim_model("beit_base_patch16_224", 8192, **TINY)
    sd = dict(mim.state_dict())
    sd["rel_pos_bias.relative_position_index"] = mim.rel_pos_bias.relative_position_index
    path = tmp_path / "beit_pt.pth"
    torch.save({"model": sd}, path)
    model = create_model("beit_base_patch16_224", num_classes=3, pretrained=str(path), **{k: v for k, v in
                                                                                          TINY.items()})
    table = sd["rel_pos_bias.relative_position_bias_table"]
    for blk in model.blocks:
        assert torch.equal(blk.attn.relative_position_bias_table, table)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_pretrain_refuses_a_model_that_is_not_beit_and_a_missing_tokenizer(shapes, tmp_path, capsys):
    assert cli(pretrain_args(shapes, tmp_path / "a", "--model", "deit_tiny_patch16_224")) == 2
    assert "built for BEiT models" in capsys.readouterr().err
    args = pretrain_args(shapes, tmp_path / "b", "--mim_target", "dall-e")
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "vitzoo convert encoder.pkl" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli(pretrain_args(shapes, tmp_path / "c", "--mim_target", "tokenizer", "--tokenizer_path",
                             str(tmp_path / "missing.safetensors"))) == 2
    assert "tokenizer_path: file not found" in capsys.readouterr().err
    assert cli(pretrain_args(shapes, tmp_path / "d", "--augment_on", "device")) == 2
    assert "augment_on: device is for classification training" in capsys.readouterr().err


def test_pretrain_curves_and_resume_continue_the_run(shapes, tmp_path):
    out = tmp_path / "pt"
    assert cli(pretrain_args(shapes, out)) == 0
    assert cli(pretrain_args(shapes, out, "--epochs", "2", "--resume", "auto")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["val_loss"] > 0 for r in rows)
    assert cli(["plot", str(out), "--output", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_masked_token_loss_is_cross_entropy_on_masked_positions_only():
    logits, labels = torch.randn(5, 7), torch.randint(0, 7, (5,))
    assert torch.equal(mim_criterion("tokens")(None, (logits, labels), None), F.cross_entropy(logits, labels))


def test_pretrain_with_a_trained_tokenizer_reports_masked_token_accuracy(shapes, tmp_path, capsys):
    tok = tmp_path / "tok"
    assert cli(["train-tokenizer", "--data_path", str(shapes), "--input_size", "64", "--codebook_size", "16",
                "--tokenizer_width", "8", "--epochs", "1", "--batch_size", "16", "--num_workers", "0",
                "--output_dir", str(tok), "--device", "cpu"]) == 0
    out = tmp_path / "pt"
    assert cli(pretrain_args(shapes, out, "--mim_target", "tokenizer", "--tokenizer_path",
                             str(tok / "tokenizer.safetensors"))) == 0
    captured = capsys.readouterr()
    assert "'MIM-Acc':" in captured.out + captured.err
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= row["val_mim_acc"] <= 1.0
    assert (out / "pictures" / "epoch_001.png").is_file()
    ckpt = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert ckpt["model"]["lm_head.weight"].shape[0] == 16  # one output per visual token
    # a tokenizer grid that does not fit the patch grid is one clear line
    assert cli(pretrain_args(shapes, tmp_path / "bad", "--mim_target", "tokenizer", "--tokenizer_path",
                             str(tok / "tokenizer.safetensors"), "--second_input_size", "48")) == 2
    assert "token grid" in capsys.readouterr().err


def test_pretrain_with_the_dall_e_target_from_the_converted_pickle(shapes, tmp_path, capsys):
    """The released-encoder path end to end, on the small dall_e fixture (vocab 128): convert, pre-train."""
    fixture = Path(__file__).parent / "fixtures" / "dall_e" / "encoder_small.pkl"
    weights = tmp_path / "dall_e_encoder.safetensors"
    assert cli(["convert", str(fixture), str(weights)]) == 0
    out = tmp_path / "pt"
    assert cli(pretrain_args(shapes, out, "--mim_target", "dall-e", "--tokenizer_path", str(weights))) == 0
    ckpt = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert ckpt["meta"]["mim"]["target"] == "dall-e" and ckpt["model"]["lm_head.weight"].shape[0] == 128
    captured = capsys.readouterr()
    assert "'MIM-Acc':" in captured.out + captured.err


@pytest.mark.parametrize("grid, ratio, min_patches, says", [
    ((4, 4), 0.99, 16, "use min_mask_patches <= 9"),  # BEiT's 16-patch blocks on a 32 px input, 8 px patches
    ((4, 4), 0.01, 2, "masks no patch"),
])
def test_a_mask_that_could_never_mask_a_patch_is_refused(grid, ratio, min_patches, says):
    with pytest.raises(UserError, match=says):
        BlockMaskGenerator.from_ratio(grid, ratio, min_patches, None, 0.3)
    BlockMaskGenerator.from_ratio((14, 14), 0.4, 16, None, 0.3)  # BEiT's own setting passes


def test_a_mask_that_falls_far_short_of_its_ratio_is_said_without_moving_the_seeded_stream(monkeypatch):
    from vitzoo.mim import masking

    said = []
    monkeypatch.setattr(masking.log, "warning", lambda msg, *args: said.append(msg % args))
    random.seed(5)
    before = random.getstate()
    beit = BlockMaskGenerator.from_ratio((14, 14), 0.4, 16, None, 0.3)  # BEiT's setting: 78 of 78 patches
    assert beit.average_masked() > 0.95 * beit.num_masked and said == []
    short = BlockMaskGenerator.from_ratio((4, 4), 0.3, 16, None, 0.3)  # 16-patch blocks barely fit 4x4
    assert short.average_masked() < 0.5 * short.num_masked
    assert len(said) == 1 and "a 4x4 grid of patches" in said[0] and "not the 5 mask_ratio 0.30" in said[0]
    assert random.getstate() == before
