"""MindSpore ``.ckpt`` files of the model zoo seeds (models/convert/mindspore_ckpt.py), without MindSpore.

Fixtures (tests/fixtures/convert/ms_*.ckpt) were written by ``mindspore.save_checkpoint`` (MindSpore
2.10.0) from the vit_base seed's own network code and from MindSpore re-implementations of the DeiT,
T2T-ViT and BEiT seeds (make_fixtures.py), with the logits those networks gave in eval mode.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitzoo.cli import main as cli
from vitzoo.errors import UserError
from vitzoo.models import load_model
from vitzoo.models.beit import relative_position_index
from vitzoo.models.convert import detect, mindspore_ckpt, read_weights

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
TINY = {"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
T2T = {"img_size": 32, "embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "token_dim": 8}
CASES = {  # fixture -> (arch, config, input size)
    "ms_vit_base": ("vit_base_patch16_224", {"num_heads": 2, "img_size": 16}, 16),
    "ms_deit": ("deit_tiny_patch16_224", TINY, 16),
    "ms_deit_distilled": ("deit_tiny_distilled_patch16_224", TINY, 16),
    "ms_t2t_performer": ("t2t_vit_7", T2T, 32),
    "ms_t2t_transformer": ("t2t_vit_t_14", T2T, 32),
    "ms_beit": ("beit_base_patch16_224", TINY, 16),
}


def fixed_input(size: int) -> torch.Tensor:
    """The input the fixtures were run on (make_fixtures.fixed_input: the same formula)."""
    i = np.arange(2 * 3 * size * size, dtype=np.float64)
    return torch.from_numpy((np.sin(i * 0.37) + 0.5 * np.cos(i * 0.011)).reshape(2, 3, size, size).astype(np.float32))


def logits(model, size):
    with torch.no_grad():
        return model.eval()(fixed_input(size))


@pytest.mark.parametrize("name", sorted(CASES))
def test_seed_checkpoints_give_the_seed_logits(name):
    arch, kwargs, size = CASES[name]
    path = FIXTURES / f"{name}.ckpt"
    assert detect(None, str(path)) is mindspore_ckpt
    model, meta = load_model(path, arch=arch, **kwargs)
    assert meta == {}
    expected = torch.from_numpy(np.load(FIXTURES / f"{name}.logits.npy"))
    torch.testing.assert_close(logits(model, size), expected, atol=1e-5, rtol=0)


def test_numerics_recorded_per_seed():
    assert read_weights(FIXTURES / "ms_deit.ckpt").numerics == {"gelu_approximate": False, "norm_eps": 1e-6}
    assert read_weights(FIXTURES / "ms_vit_base.ckpt").numerics == {"gelu_approximate": True, "norm_eps": 1e-6}
    assert read_weights(FIXTURES / "ms_t2t_performer.ckpt").numerics == {"gelu_approximate": True, "norm_eps": 1e-7}
    assert read_weights(FIXTURES / "ms_vit_base.ckpt").arch == "vit_base_patch16_224"  # the only seed ViT


def test_beit_table_follows_the_files_index():
    """The seed builds its index with meshgrid 'xy': the same table read through it equals unilm's order."""
    arrays = mindspore_ckpt.read_ckpt(FIXTURES / "ms_beit.ckpt")
    stored = torch.tensor(arrays["blocks.0.attn.relative_position_bias.relative_position_index"])
    assert torch.equal(stored, mindspore_ckpt.xy_relative_position_index((4, 4)))
    assert not torch.equal(stored, relative_position_index((4, 4)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_write_back_gives_the_seed_file(tmp_path, name, capsys):
    """vitzoo -> --to mindspore: the same parameter names, shapes, dtypes and values the seed wrote."""
    arch, kwargs, _ = CASES[name]
    sets = [a for k, v in kwargs.items() for a in ("--set", f"{k}={v}")]
    vz = tmp_path / "vz.pt"
    assert cli(["convert", str(FIXTURES / f"{name}.ckpt"), str(vz), "--arch", arch, *sets]) == 0
    back = tmp_path / "back.ckpt"
    assert cli(["convert", str(vz), str(back)]) == 0  # the suffix picks the MindSpore writer
    assert "(MindSpore .ckpt)" in capsys.readouterr().out
    source, written = mindspore_ckpt.read_ckpt(FIXTURES / f"{name}.ckpt"), mindspore_ckpt.read_ckpt(back)
    assert sorted(written) == sorted(source)
    for tag, value in source.items():
        assert written[tag].dtype == value.dtype and written[tag].shape == value.shape, tag
        np.testing.assert_allclose(written[tag], value, rtol=0, atol=0, err_msg=tag)


def test_target_numerics_are_reported(tmp_path, capsys):
    model_file = tmp_path / "deit.pt"
    assert cli(["convert", str(FIXTURES / "ms_deit.ckpt"), str(model_file), "--arch", "deit_tiny_patch16_224",
                *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]]) == 0
    # written for the vit_base seed (tanh GELU): the logit difference that causes is stated
    assert cli(["convert", str(model_file), str(tmp_path / "x.ckpt"), "--to", "mindspore"]) == 0
    capsys.readouterr()
    vit = tmp_path / "vit.pt"
    assert cli(["convert", str(FIXTURES / "hf_vit"), str(vit)]) == 0
    assert cli(["convert", str(vit), str(tmp_path / "vit.ckpt")]) == 0
    assert "the target network computes with gelu_approximate=True" in capsys.readouterr().out


def test_bad_files(tmp_path, capsys):
    data = (FIXTURES / "ms_deit.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\xff\xfe not a checkpoint at all")
    for path in (cut, junk):
        with pytest.raises(UserError, match="MindSpore checkpoint|truncated or corrupt"):
            read_weights(path)
        assert cli(["convert", str(path), str(tmp_path / "o.pt"), "--arch", "deit_tiny_patch16_224"]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # another architecture: the mismatching names are listed
    assert cli(["convert", str(FIXTURES / "ms_t2t_performer.ckpt"), str(tmp_path / "o.pt"),
                "--arch", "deit_tiny_patch16_224"]) == 2
    assert "does not fit deit_tiny_patch16_224" in capsys.readouterr().err
