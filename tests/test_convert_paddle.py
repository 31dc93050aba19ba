"""PaddleViT ``.pdparams`` files (models/convert/pdparams.py), read without Paddle and never run.

Fixtures (tests/fixtures/convert/pd_*.pdparams) were written by ``paddle.save`` (paddlepaddle 3.3.1) from
PaddleViT's own DeiT code (make_fixtures.py), with the logits that network gave in eval mode.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vitzoo.cli import main as cli
from vitzoo.errors import UserError
from vitzoo.models import load_model
from vitzoo.models.convert import detect, pdparams, read_weights

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
TINY = {"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
CASES = {"pd_deit": "deit_tiny_patch16_224", "pd_deit_distilled": "deit_tiny_distilled_patch16_224"}


def fixed_input(size: int = 16) -> torch.Tensor:
    """The input the fixtures were run on (make_fixtures.fixed_input: the same formula)."""
    i = np.arange(2 * 3 * size * size, dtype=np.float64)
    return torch.from_numpy((np.sin(i * 0.37) + 0.5 * np.cos(i * 0.011)).reshape(2, 3, size, size).astype(np.float32))


@pytest.mark.parametrize("name", sorted(CASES))
def test_paddlevit_deit_gives_paddles_logits(name):
    path = FIXTURES / f"{name}.pdparams"
    assert detect(None, str(path)) is pdparams
    model, _ = load_model(path, arch=CASES[name], **TINY)
    with torch.no_grad():
        out = model.eval()(fixed_input())
    torch.testing.assert_close(out, torch.from_numpy(np.load(FIXTURES / f"{name}.logits.npy")), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_write_back_gives_paddles_file(tmp_path, name):
    vz = tmp_path / "vz.pt"
    assert cli(["convert", str(FIXTURES / f"{name}.pdparams"), str(vz), "--arch", CASES[name], *SETS]) == 0
    back = tmp_path / "back.pdparams"
    assert cli(["convert", str(vz), str(back), "--to", "paddle"]) == 0
    assert back.read_bytes()[:2] == b"\x80\x02"  # pickle protocol 2, as paddle.save writes state dicts
    source, written = pdparams.read_pdparams(FIXTURES / f"{name}.pdparams"), pdparams.read_pdparams(back)
    assert sorted(written) == sorted(source)
    for key, value in source.items():
        assert written[key].shape == value.shape and written[key].dtype == value.dtype, key
        np.testing.assert_array_equal(written[key], value, err_msg=key)


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_malicious_pickle_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(pickle.dumps({"cls_token": np.zeros((1, 1, 16), np.float32), "x": _Evil(marker)}, protocol=2))
    with pytest.raises(UserError, match=r"refused: it needs (posix|os)\.system"):
        read_weights(evil)
    assert cli(["convert", str(evil), str(tmp_path / "o.pt"), "--arch", "deit_tiny_patch16_224"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "nothing was run" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_bad_files(tmp_path, capsys):
    data = (FIXTURES / "pd_deit.pdparams").read_bytes()
    cut = tmp_path / "cut.pdparams"
    cut.write_bytes(data[: len(data) // 2])
    junk = tmp_path / "junk.pdparams"
    junk.write_bytes(b"PK\x03\x04 this is no pickle")
    for path in (cut, junk):
        assert cli(["convert", str(path), str(tmp_path / "o.pt"), "--arch", "deit_tiny_patch16_224"]) == 2
        err = capsys.readouterr().err
        assert "not a readable .pdparams" in err and len(err.strip().splitlines()) == 1
    # another architecture: the mismatching tensors are named
    assert cli(["convert", str(FIXTURES / "pd_deit.pdparams"), str(tmp_path / "o.pt"), "--arch",
                "deit_tiny_patch16_224"]) == 2
    assert "differ in shape" in capsys.readouterr().err
