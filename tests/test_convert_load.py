"""Loading through vitzoo.models.convert: the architecture is decided before building, never changed after.

An official T2T-ViT file implies the attention scale its weights were trained with (embed_dim ** -0.5);
``create_model(pretrained=)`` / ``load_model`` build with it, and ``load_pretrained`` refuses a model built
otherwise instead of switching it. Also the state-dict wrappers (stated once in vitzoo.constants) and the
distillation teacher, which reads files through the same unwrapping.
"""
from __future__ import annotations

import pytest
import timm
import torch

from vitzoo.constants import EMA_WRAPPERS, STATE_DICT_WRAPPERS
from vitzoo.engine.teacher import build_teacher
from vitzoo.errors import UserError
from vitzoo.models import create_model, load_model, load_pretrained
from vitzoo.models.convert import t2t, unwrap_state_dict
from vitzoo.models.registry import build_config

SMALL = {"img_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 2, "token_dim": 16}
RELEASED = 64**-0.5  # embed_dim ** -0.5, as the official builders set for pretrained=True
DEFAULT = 32**-0.5  # head_dim ** -0.5


@pytest.fixture
def official_t2t(tmp_path):
    """(source model, path of its weights in the official release layout)."""
    torch.manual_seed(0)
    src = create_model("t2t_vit_7", num_classes=5, **SMALL).eval()
    path = tmp_path / "81.7_T2T_ViT_7.pth.tar"
    ema = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict_ema": ema, "epoch": 309}, path)
    return src, path


def test_official_t2t_file_builds_with_the_released_scale(official_t2t):
    src, path = official_t2t
    x = torch.randn(2, 3, 32, 32)
    released = create_model("t2t_vit_7", num_classes=5, qk_scale=RELEASED, **SMALL).eval()
    released.load_state_dict(src.state_dict())
    built = create_model("t2t_vit_7", num_classes=5, pretrained=str(path), **SMALL).eval()
    loaded, meta = load_model(path, arch="t2t_vit_7", **SMALL)
    assert meta == {} and loaded.num_classes == 5  # the classifier width is the file's
    for model in (built, loaded):
        assert [b.attn.scale for b in model.blocks] == [RELEASED, RELEASED]
        assert model.cfg.qk_scale == RELEASED and model.model_kwargs["qk_scale"] == RELEASED
        with torch.no_grad():
            assert torch.equal(model(x), released(x))
    assert src.cfg.qk_scale is None and src.blocks[0].attn.scale == DEFAULT


def test_loading_never_switches_a_built_model(official_t2t):
    _, path = official_t2t
    model = create_model("t2t_vit_7", num_classes=5, **SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=f"needs the model built with qk_scale={RELEASED!r}") as err:
        load_pretrained(model, path)
    assert str(path) in str(err.value) and "T2T-ViT" in str(err.value)
    assert model.cfg.qk_scale is None and "qk_scale" not in model.model_kwargs
    assert model.blocks[0].attn.scale == DEFAULT
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # built with the override the file implies, or with a scale the caller chose: loads
    load_pretrained(create_model("t2t_vit_7", num_classes=5, qk_scale=RELEASED, **SMALL), path)
    chosen = create_model("t2t_vit_7", num_classes=5, qk_scale=0.3, pretrained=str(path), **SMALL)
    assert chosen.blocks[0].attn.scale == 0.3


def test_t2t_arch_overrides_follow_the_variant():
    assert t2t.arch_overrides(build_config("t2t_vit_14")) == {"qk_scale": 384**-0.5}
    # the official t2t_vit_14_wide builder uses 512 ** -0.5 with embed_dim 768
    assert t2t.arch_overrides(build_config("t2t_vit_14_wide")) == {"qk_scale": 512**-0.5}
    assert t2t.arch_overrides(build_config("t2t_vit_14", qk_scale=0.1)) == {}
    assert t2t.arch_overrides(build_config("deit_tiny_patch16_224")) == {}


def test_unwrap_state_dict_uses_the_shared_wrapper_keys():
    sd = {"w": torch.zeros(2), "b": torch.ones(1)}
    ema = {"w": torch.full((2,), 3.0), "b": torch.ones(1)}
    for key in STATE_DICT_WRAPPERS:
        wrapped = {key: {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
        assert unwrap_state_dict(wrapped).keys() == sd.keys()
    for key in EMA_WRAPPERS:
        both = {"state_dict": sd, key: ema}
        assert torch.equal(unwrap_state_dict(both)["w"], sd["w"])
        assert torch.equal(unwrap_state_dict(both, use_ema=True)["w"], ema["w"])
    assert unwrap_state_dict(sd).keys() == sd.keys()  # a bare state dict
    with pytest.raises(UserError, match="no tensors found .*top-level keys: epoch, args"):
        unwrap_state_dict({"epoch": 3, "args": {"lr": 0.1}})


def test_teacher_reads_wrapped_files_and_names_the_bad_one(tmp_path):
    ref = timm.create_model("test_vit", num_classes=3).eval()
    good = tmp_path / "teacher.pth"
    torch.save({"model": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 1}, good)
    teacher = build_teacher("test_vit", str(good), num_classes=3)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in teacher.state_dict().items())
    bad = tmp_path / "notes.pth"
    torch.save({"epoch": 1}, bad)
    with pytest.raises(UserError, match=f"teacher_path: {bad}: no tensors found"):
        build_teacher("test_vit", str(bad), num_classes=3)
