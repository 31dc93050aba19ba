"""vitzoo.deploy.onnx_runtime on ONNX files vitzoo did not write: defaults, sizes and bad input (CPU, seconds).

Files written by ``vitzoo export`` (with metadata) are covered by test_export.py, and the ``eval-onnx`` /
``infer-onnx`` commands against their PyTorch counterparts by test_eval_infer.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vitzoo.deploy.metadata import default_data_config
from vitzoo.deploy.onnx_runtime import (
    class_names_of,
    create_session,
    data_config_for,
    fixed_batch,
    providers_for,
    run_session,
    session_metadata,
)
from vitzoo.errors import UserError


@pytest.fixture(scope="module")
def foreign_onnx(tmp_path_factory):
    """A 3x48x40 classifier exported by plain torch.onnx (no vitzoo metadata), with a dynamic batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.Flatten(), nn.Linear(4 * 6 * 5, 7)).eval()
    path = tmp_path_factory.mktemp("foreign") / "foreign.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(2, 3, 48, 40),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return model, path


def test_foreign_file_gets_default_preprocessing_at_graph_size(foreign_onnx):
    model, path = foreign_onnx
    session = create_session(path, "CPU")
    assert session_metadata(session) == {} and class_names_of(session) == []
    assert fixed_batch(session) is None
    config = data_config_for(session)
    assert config == {**default_data_config(48, 40), "input_size": (3, 48, 40)}
    assert config["mean"] == pytest.approx((0.485, 0.456, 0.406)) and config["crop_pct"] == 0.875
    x = torch.randn(3, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert np.abs(run_session(session, x.numpy()) - model(x).numpy()).max() < 1e-5


def test_image_size_must_match_a_fixed_graph(foreign_onnx):
    session = create_session(foreign_onnx[1], "CPU")
    with pytest.raises(UserError, match="--image-size 64 does not match"):
        data_config_for(session, image_size=64)


def test_bad_files_and_devices_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        create_session(tmp_path / "missing.onnx", "CPU")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(UserError, match="cannot be loaded by ONNX Runtime"):
        create_session(junk, "CPU")
    with pytest.raises(UserError, match="unknown device"):
        providers_for("TPU")
    assert providers_for("cpu") == ["CPUExecutionProvider"]
