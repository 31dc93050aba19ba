"""The architecture read off a file's weight names and shapes (models/convert/detect.py; issue 30, item 2).

Registry-driven: every registered model's own state dict (built on the meta device: shapes, no memory)
is recognised as that model, by family, size, distilled head, T2T variant and resolution; the pairs the
weights cannot tell apart are listed together. And every converter fixture converts without ``--arch``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitzoo.checkpoint import load_checkpoint
from vitzoo.cli import main as cli
from vitzoo.errors import UserError
from vitzoo.models.convert import read_weights
from vitzoo.models.convert.detect import choose_arch, detect_arch, shown_fields
from vitzoo.models.registry import build_model, get_entry, list_models

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
PREFIX_FAMILY = {"vit_": "vit", "deit_": "deit", "t2t_": "t2t", "beit_": "beit"}
# the same sizes, other head counts: the weights do not show heads outside BEiT
SAME_WEIGHTS = {"t2t_vit_14", "t2t_vit_14_resnext"}


def registered_state_dict(name: str, **kwargs) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return build_model(name, **kwargs).state_dict()


def family_of(name: str) -> str:
    return next(family for prefix, family in PREFIX_FAMILY.items() if name.startswith(prefix))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_is_recognised(name):
    found = detect_arch(registered_state_dict(name), family_of(name))
    assert found.exact
    if name in SAME_WEIGHTS:
        assert found.arch is None and set(found.candidates) == SAME_WEIGHTS
        assert "t2t_vit_14, t2t_vit_14_resnext" in found.sentence() and "--arch" in found.sentence()
    else:
        assert found.arch == name, found.sentence()
        assert f"detected from the weights: {name}" in found.sentence()


def test_what_the_shapes_show():
    family, shown = shown_fields(registered_state_dict("deit_small_distilled_patch16_224", num_classes=7))
    assert family is None  # ViT or DeiT: one network
    assert shown == {"embed_dim": 384, "depth": 12, "mlp_ratio": 4.0, "num_classes": 7, "patch_size": 16,
                     "in_chans": 3, "distilled": True, "qkv_bias": True, "img_size": 224}
    performer = shown_fields(registered_state_dict("t2t_vit_19", img_size=384))
    assert performer[0] == "t2t" and performer[1]["tokens_type"] == "performer"
    assert performer[1]["token_dim"] == 64 and performer[1]["img_size"] == 384
    transformer = shown_fields(registered_state_dict("t2t_vit_t_14"))[1]
    assert transformer["tokens_type"] == "transformer" and transformer["qkv_bias"] is False
    beit = shown_fields(registered_state_dict("beit_large_patch16_512"))
    assert beit[0] == "beit" and beit[1]["num_heads"] == 16 and beit[1]["img_size"] == 512  # relative tables


def test_resolution_and_ambiguity():
    # the resolution picks the variant; ViT and DeiT share a network, so a bare file names both
    assert detect_arch(registered_state_dict("deit_base_patch16_224", img_size=384), "deit").arch == "deit_base_patch16_384"
    both = detect_arch(registered_state_dict("deit_base_patch16_224"))
    assert both.arch is None and both.candidates == ("deit_base_patch16_224", "vit_base_patch16_224")
    with pytest.raises(UserError, match="fit 2 registered models: deit_base_patch16_224, vit_base_patch16_224"):
        choose_arch(registered_state_dict("deit_base_patch16_224"), "x.pth")
    # a head count the caller gives tells the two T2T-ViT-14 apart
    assert detect_arch(registered_state_dict("t2t_vit_14"), "t2t", {"num_heads": 32}).arch == "t2t_vit_14_resnext"
    # a resolution no variant has: the smallest of the otherwise equal variants (the table is the file's)
    assert detect_arch(registered_state_dict("vit_small_patch16_224", img_size=96), "vit").arch == "vit_small_patch16_224"


def test_scaled_models_and_files_that_fit_nothing():
    sd = registered_state_dict("deit_tiny_patch16_224", embed_dim=32, depth=3, num_heads=4, num_classes=3)
    with pytest.raises(UserError, match=r"do not show the head count: give it \(vitzoo convert ... --set num_heads=N, "
                                        r"or num_heads=N in Python; the nearest variant, deit_tiny_patch16_224, has 3\)"):
        choose_arch(sd, "scaled.ckpt", "deit")
    found = choose_arch(sd, "scaled.ckpt", "deit", {"num_heads": 4})
    assert found.arch == "deit_tiny_patch16_224" and not found.exact
    assert "no registered variant's; built as deit_tiny_patch16_224" in found.sentence()
    with pytest.raises(UserError, match="fit no registered model family; pass --arch NAME"):
        choose_arch({"conv.weight": torch.zeros(4, 3, 3, 3)}, "resnet.pth")


FIXTURE_FAMILIES = {  # fixture -> what the chosen model must be
    "ms_deit.ckpt": ("deit_", False, None), "ms_deit_distilled.ckpt": ("deit_", True, None),
    "pd_deit.pdparams": ("deit_", False, None), "pd_deit_distilled.pdparams": ("deit_", True, None),
    "ms_t2t_performer.ckpt": ("t2t_", None, "performer"), "ms_t2t_transformer.ckpt": ("t2t_", None, "transformer"),
    "ms_beit.ckpt": ("beit_", None, None), "ms_vit_base.ckpt": ("vit_", False, None),
    "hf_vit": ("vit_", False, None), "hf_deit_teacher": ("deit_", True, None), "hf_beit": ("beit_", None, None),
    "timm_hub_deit": ("deit_", True, None),
}


@pytest.mark.parametrize("name", sorted(FIXTURE_FAMILIES))
def test_every_fixture_converts_without_arch(tmp_path, name, capsys, one_thread):
    prefix, distilled, tokens = FIXTURE_FAMILIES[name]
    heads = [] if "beit" in name or name.startswith(("hf_", "timm_hub")) else ["--set", "num_heads=2"]
    out = tmp_path / "out.pt"
    assert cli(["convert", str(FIXTURES / name), str(out), *heads]) == 0
    printed = capsys.readouterr().out
    arch = load_checkpoint(out)["meta"]["arch"]
    assert arch.startswith(prefix) and f": {arch}," in printed  # the report says which
    cfg = get_entry(arch).cfg
    if distilled is not None:
        assert cfg.distilled is distilled
    if tokens is not None:
        assert cfg.tokens_type == tokens
    if read_weights(FIXTURES / name).arch is None:  # nothing recorded: the detection is reported
        assert "architecture detected from the weights" in printed
