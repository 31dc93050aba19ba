"""Every converter fixture gives its source framework's logits through every entry point (issue 30, item 1).

The fixtures (tests/fixtures/convert, made by MindSpore 2.10, PaddlePaddle 3.3.1, transformers 5.23 and
timm 1.0.31 themselves: make_fixtures.py) carry the logits their framework computed. Each goes through

- ``load_model(FILE)``, no architecture named (detected or recorded);
- ``vitzoo convert FILE out.pt`` (no ``--arch``) and then ``create_model(arch, num_classes=N,
  pretrained="out.pt")``, the README's route: the options the converted file records (the source's GELU
  and LayerNorm epsilon, a 21k pre-logits layer) must survive it;
- ``create_model(arch, pretrained=FILE)`` directly, for the files that record their sizes.

Only the head count is passed where the weights do not show it (ViT / DeiT / T2T-ViT; BEiT's relative
position tables and Google's attention kernels show it). Also the merge rule itself: the caller's explicit
arguments override the file's, with a one-line note.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import vitzoo
from vitzoo.checkpoint import load_checkpoint
from vitzoo.cli import main as cli
from vitzoo.models import create_model, load_model
from vitzoo.models.convert import read_weights

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
ATOL = 1e-5
HEADS = {"num_heads": 2}  # what the weights of the tiny ViT / DeiT / T2T fixtures do not show
CASES = {  # fixture file or folder -> (input size, options the weights cannot show)
    "ms_vit_base.ckpt": (16, HEADS), "ms_deit.ckpt": (16, HEADS), "ms_deit_distilled.ckpt": (16, HEADS),
    "ms_t2t_performer.ckpt": (32, HEADS), "ms_t2t_transformer.ckpt": (32, HEADS), "ms_beit.ckpt": (16, {}),
    "pd_deit.pdparams": (16, HEADS), "pd_deit_distilled.pdparams": (16, HEADS),
    "hf_vit": (16, {}), "hf_vit_bin": (16, {}), "hf_vit_model": (16, {}), "hf_deit": (16, {}),
    "hf_deit_teacher": (16, {}), "hf_beit": (16, {}), "hf_beit_model": (16, {}), "timm_hub_deit": (16, {}),
}
RECORD_SIZES = [name for name in CASES if name.startswith(("hf_", "timm_hub"))]  # config.json beside them


def fixed_input(size: int) -> torch.Tensor:
    """The input the fixtures were run on (make_fixtures.fixed_input: the same formula)."""
    i = np.arange(2 * 3 * size * size, dtype=np.float64)
    return torch.from_numpy((np.sin(i * 0.37) + 0.5 * np.cos(i * 0.011)).reshape(2, 3, size, size).astype(np.float32))


def expected(name: str) -> torch.Tensor:
    path = FIXTURES / name / "logits.npy" if (FIXTURES / name).is_dir() else FIXTURES / f"{name.split('.')[0]}.logits.npy"
    return torch.from_numpy(np.load(path))


def output(model: torch.nn.Module, name: str) -> torch.Tensor:
    """What the source network output: logits, or a headless model's features (see fixtures.json)."""
    x = fixed_input(CASES[name][0])
    with torch.no_grad():
        model.eval()
        if name == "hf_vit_model":  # the last hidden state, after the final LayerNorm
            return model.forward_features(x)
        if name == "hf_beit_model":  # the pooler output: LayerNorm of the mean patch token
            return model.forward_head(model.forward_features(x), pre_logits=True)
        return model(x)


def max_diff(model: torch.nn.Module, name: str) -> float:
    return float((output(model, name) - expected(name)).abs().max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_model_gives_the_source_logits(name, one_thread):
    model, _ = load_model(FIXTURES / name, **CASES[name][1])
    assert max_diff(model, name) <= ATOL


@pytest.mark.parametrize("name", sorted(CASES))
def test_convert_then_create_model_gives_the_source_logits(tmp_path, name, one_thread, capsys):
    out = tmp_path / "out.pt"
    sets = [a for k, v in CASES[name][1].items() for a in ("--set", f"{k}={v}")]
    assert cli(["convert", str(FIXTURES / name), str(out), *sets]) == 0  # no --arch
    meta = load_checkpoint(out)["meta"]
    classes = {} if name.endswith("_model") else {"num_classes": expected(name).shape[-1]}
    model = create_model(meta["arch"], pretrained=str(out), **classes)
    assert max_diff(model, name) <= ATOL
    again, _ = load_model(out)
    assert max_diff(again, name) <= ATOL


@pytest.mark.parametrize("name", RECORD_SIZES)
def test_create_model_from_the_file_itself(name, one_thread):
    arch = read_weights(FIXTURES / name).arch
    assert max_diff(create_model(arch, pretrained=FIXTURES / name), name) <= ATOL


def test_converted_file_keeps_the_source_numerics(tmp_path):
    """The MindSpore ViT-B/16 seed computes with tanh GELU: the converted file records it, and the model
    create_model builds from that file computes with it (it used to be built with exact GELU)."""
    out = tmp_path / "vit.pt"
    assert cli(["convert", str(FIXTURES / "ms_vit_base.ckpt"), str(out), "--set", "num_heads=2"]) == 0
    assert load_checkpoint(out)["meta"]["model_kwargs"]["gelu_approximate"] is True
    model = create_model("vit_base_patch16_224", num_classes=5, pretrained=str(out))
    assert model.cfg.gelu_approximate is True and model.cfg.norm_eps == 1e-6
    assert max_diff(model, "ms_vit_base.ckpt") <= ATOL


SEED_SIZES = {"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
SEED_ROUTE = {  # the issue's walk: convert with --arch, then create_model(arch, sizes, pretrained=out.pt)
    "ms_vit_base.ckpt": ("vit_base_patch16_224", SEED_SIZES),
    "ms_beit.ckpt": ("beit_base_patch16_224", SEED_SIZES),
    "ms_t2t_transformer.ckpt": ("t2t_vit_t_14", {**SEED_SIZES, "img_size": 32, "token_dim": 8, "patch_size": None}),
    "ms_t2t_performer.ckpt": ("t2t_vit_19", {**SEED_SIZES, "img_size": 32, "token_dim": 8, "patch_size": None}),
    "ms_deit.ckpt": ("deit_tiny_patch16_224", SEED_SIZES),
}


@pytest.mark.parametrize("name", sorted(SEED_ROUTE))
def test_the_issues_route_keeps_the_seeds_numerics(tmp_path, name, one_thread):
    """With every size given, only the recorded numerics (tanh GELU, LayerNorm eps) are left to the file:
    dropping them put the logits 1.6e-4 (BEiT) to 5.2e-4 (ViT-B/16) off these fixtures (DeiT, whose
    numerics are PyTorch's, stayed at 1.4e-6)."""
    arch, sizes = SEED_ROUTE[name]
    sizes = {k: v for k, v in sizes.items() if v is not None}
    out = tmp_path / "out.pt"
    assert cli(["convert", str(FIXTURES / name), str(out), "--arch", arch,
                *[a for k, v in sizes.items() for a in ("--set", f"{k}={v}")]]) == 0
    model = create_model(arch, num_classes=5, pretrained=str(out), **sizes)
    assert max_diff(model, name) <= ATOL


def test_converted_npz_keeps_its_pre_logits(tmp_path, one_thread):
    """Google's 21k ViT: head(tanh(pre_logits(class token))). After `vitzoo convert`, create_model from the
    converted file keeps the layer, as create_model from the .npz does."""
    from test_convert import TINY, _to_google_npz  # the inverse of the .npz reader, written against timm's
    torch.manual_seed(1)
    ref = timm.create_model("vit_base_patch16_224", num_classes=10, **TINY).eval()
    src = tmp_path / "ViT-21k.npz"
    _to_google_npz(ref.state_dict(), heads=3, path=src, pre_logits=True)
    g = np.load(src)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        google = ref.head(torch.tanh(ref.forward_features(x)[:, 0] @ torch.from_numpy(g["pre_logits/kernel"])
                                     + torch.from_numpy(g["pre_logits/bias"])))
    out = tmp_path / "vit21k.pt"
    assert cli(["convert", str(src), str(out)]) == 0  # no --arch: the heads are in the kernels' shapes
    arch = load_checkpoint(out)["meta"]["arch"]
    routes = {"npz": create_model("vit_base_patch16_224", num_classes=10, pretrained=str(src), **TINY),
              "converted": create_model(arch, num_classes=10, pretrained=str(out)),
              "load_model": load_model(src)[0]}
    for route, model in routes.items():
        with torch.no_grad():
            assert float((model.eval()(x) - google).abs().max()) <= ATOL, route


def test_callers_arguments_override_the_file_with_a_note(tmp_path, caplog):
    out = tmp_path / "vit.pt"
    assert cli(["convert", str(FIXTURES / "ms_vit_base.ckpt"), str(out), "--set", "num_heads=2"]) == 0
    with caplog.at_level(logging.WARNING, logger="vitzoo"):
        model = create_model("vit_base_patch16_224", num_classes=5, pretrained=str(out), gelu_approximate=False)
    assert model.cfg.gelu_approximate is False  # the caller's explicit argument wins
    notes = [r.getMessage() for r in caplog.records if "gelu_approximate" in r.getMessage()]
    assert len(notes) == 1 and "instead of the file's True" in notes[0] and "\n" not in notes[0]
    assert max_diff(model, "ms_vit_base.ckpt") > ATOL  # and it does change the numerics
    # the rule, as data: registry < file < caller
    from vitzoo.models.convert.options import plan_model
    plan = plan_model(read_weights(out), None, {"norm_eps": 1e-5})
    assert plan.arch == "vit_base_patch16_224" and plan.kwargs["gelu_approximate"] is True  # the file's
    assert plan.kwargs["norm_eps"] == 1e-5 and plan.kwargs["embed_dim"] == 16  # caller's / file's
    assert any("norm_eps=1e-05 (given) instead of the file's 1e-06" in n for n in plan.notes)
    # the same caller argument through the seed file itself (its numerics are implied, not recorded)
    direct, _ = load_model(FIXTURES / "ms_vit_base.ckpt", num_heads=2, gelu_approximate=False)
    assert direct.cfg.gelu_approximate is False


def test_load_model_is_public():
    assert vitzoo.load_model is load_model and "load_model" in vitzoo.__all__
