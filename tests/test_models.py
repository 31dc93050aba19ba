"""Model zoo: registry-driven checks against timm (the numerical reference) and the published figures."""
from __future__ import annotations

import logging

import pytest
import timm
import torch

from vitzoo import create_model, list_models
from vitzoo.checkpoint import load_checkpoint, save_checkpoint
from vitzoo.errors import UserError
from vitzoo.models import load_model
from vitzoo.models.beit import relative_position_index, resize_rel_pos_table

TIMM_NAMES = [n for n in list_models() if not n.startswith("t2t_")]

# Figures printed by the seeds (../shared/seeds/README.md), DeiT Table 1 (arXiv:2012.12877) and PaddleViT.
PUBLISHED_EXACT = {"beit_base_patch16_224": 86_530_984}
PUBLISHED_TENTHS = {"deit_tiny_distilled_patch16_224": 5.9, "deit_small_distilled_patch16_224": 22.4}
PUBLISHED_MILLIONS = {
    "deit_tiny_patch16_224": 5, "deit_small_patch16_224": 22, "deit_base_patch16_224": 86,
    "deit_tiny_distilled_patch16_224": 6, "deit_small_distilled_patch16_224": 22,
    "deit_base_distilled_patch16_224": 87, "deit_base_patch16_384": 87, "vit_large_patch16_224": 304,
}


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_seed_name():
    names = set(list_models())
    expected = {f"deit_{s}_patch16_224" for s in ("tiny", "small", "base")}
    expected |= {f"deit_{s}_distilled_patch16_224" for s in ("tiny", "small", "base")}
    expected |= {"deit_base_patch16_384", "deit_base_distilled_patch16_384"}
    expected |= {f"vit_{s}_patch16_{r}" for s in ("tiny", "small", "base", "large") for r in (224, 384)}
    expected |= {"vit_base_patch32_224", "vit_base_patch32_384"}
    expected |= {"beit_base_patch16_224", "beit_base_patch16_384", "beit_large_patch16_224",
                 "beit_large_patch16_384", "beit_large_patch16_512"}
    assert expected <= names
    assert list_models("deit_*_distilled_*") == sorted(n for n in names if n.startswith("deit") and "distilled" in n)


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_param_count_equals_timm(name):
    with torch.device("meta"):
        ours, ref = count(create_model(name)), count(timm.create_model(name))
    assert ours == ref
    if name in PUBLISHED_EXACT:
        assert ours == PUBLISHED_EXACT[name]
    if name in PUBLISHED_TENTHS:
        assert round(ours / 1e6, 1) == PUBLISHED_TENTHS[name]
    if name in PUBLISHED_MILLIONS:
        assert abs(ours / 1e6 - PUBLISHED_MILLIONS[name]) < 1.0  # Table 1 gives whole millions


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_state_dict_loads_strictly_and_logits_match(name):
    """Full width, two blocks, a 4x4 patch grid: same weights -> same logits as timm (fp32)."""
    patch = 32 if "patch32" in name else 16
    kw = {"img_size": 4 * patch, "depth": 2}
    torch.manual_seed(0)
    ref = timm.create_model(name, **kw).eval()
    ours = create_model(name, **kw).eval()
    with torch.no_grad():  # non-zero rel-pos tables / biases so they are actually tested
        for v in ref.state_dict().values():
            if v.is_floating_point() and v.abs().sum() == 0:
                v.normal_(std=0.02)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 4 * patch, 4 * patch)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-4


def test_distilled_forward_semantics():
    m = create_model("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=7).eval()
    x = torch.randn(3, 3, 32, 32)
    mean = m(x)
    assert mean.shape == (3, 7)
    m.set_distilled_training(True)
    cls, dist = m(x)  # still in eval mode: the switch, not the mode, decides the return type
    assert torch.allclose((cls + dist) / 2, mean, atol=1e-6)
    m.train()
    assert isinstance(m(x), tuple)
    m.set_distilled_training(False)
    assert isinstance(m(x), torch.Tensor)
    with pytest.raises(ValueError):
        create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=1).set_distilled_training(True)


def test_custom_variant_and_bad_names():
    m = create_model("deit_small_patch16_224", img_size=32, patch_size=4, depth=6, embed_dim=96, num_heads=3,
                     num_classes=10)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(m.blocks) == 6 and m.pos_embed.shape == (1, 65, 96)
    assert m.model_kwargs["img_size"] == 32 and m.data_config["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="deit_tiny_patch16_224"):
        create_model("deit_tiny_patch16_244")
    with pytest.raises(ValueError, match="embed_dim"):
        create_model("deit_tiny_patch16_224", embed_dims=96)
    with pytest.raises(ValueError, match="expects int"):
        create_model("deit_tiny_patch16_224", depth="six")
    with pytest.raises(ValueError, match="divisible"):
        create_model("deit_tiny_patch16_224", embed_dim=100)


def test_t2t_family_is_registered():
    names = set(list_models("t2t_*"))
    assert {"t2t_vit_7", "t2t_vit_14", "t2t_vit_19", "t2t_vit_24", "t2t_vit_t_14", "t2t_vit_t_24",
            "t2t_vit_14_resnext", "t2t_vit_14_wide"} <= names


def _timm_file(tmp_path, name, wrapper, **kw):
    torch.manual_seed(1)
    ref = timm.create_model(name, **kw).eval()
    sd = ref.state_dict()
    path = tmp_path / f"{name}.pth"
    torch.save(wrapper(sd), path)
    return ref, path


def test_official_deit_file_loads_unchanged(tmp_path):
    ref, path = _timm_file(tmp_path, "deit_tiny_distilled_patch16_224", lambda sd: {"model": sd, "epoch": 299},
                           img_size=64, depth=2)
    ours = create_model("deit_tiny_distilled_patch16_224", img_size=64, depth=2, pretrained=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5


def test_official_beit_file_with_index_buffers_and_module_wrapper(tmp_path):
    def beit_layout(sd):  # the release carries the derived index buffers under a "module" wrapper
        sd = dict(sd)
        for i in range(2):
            sd[f"blocks.{i}.attn.relative_position_index"] = relative_position_index((4, 4))
        for k, v in sd.items():
            if k.endswith("relative_position_bias_table"):
                v.normal_(std=0.02)
        return {"module": sd}

    ref, path = _timm_file(tmp_path, "beit_base_patch16_224", beit_layout, img_size=64, depth=2)
    ref.load_state_dict({k: v for k, v in torch.load(path, weights_only=True)["module"].items()
                         if "index" not in k})
    ours = create_model("beit_base_patch16_224", img_size=64, depth=2, pretrained=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-4


def test_beit_shared_table_expands_into_blocks(tmp_path):
    src = create_model("beit_base_patch16_224", img_size=64, depth=2, embed_dim=64, num_heads=2,
                       use_shared_rel_pos_bias=True, use_rel_pos_bias=False)
    with torch.no_grad():
        src.rel_pos_bias.relative_position_bias_table.normal_()
    path = tmp_path / "pt.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = create_model("beit_base_patch16_224", img_size=64, depth=2, embed_dim=64, num_heads=2, pretrained=str(path))
    for blk in dst.blocks:
        assert torch.equal(blk.attn.relative_position_bias_table, src.rel_pos_bias.relative_position_bias_table)


def test_resize_head_and_resolution_is_logged(tmp_path, caplog):
    src = create_model("deit_tiny_patch16_224", img_size=64, depth=1, num_classes=1000)
    path = tmp_path / "src.pt"
    save_checkpoint(path, {"model": src.state_dict(), "meta": {"arch": src.arch, "model_kwargs": src.model_kwargs}})
    with caplog.at_level(logging.INFO, logger="vitzoo"):
        dst = create_model("deit_tiny_patch16_224", img_size=96, depth=1, num_classes=10, pretrained=str(path))
    assert dst.pos_embed.shape == (1, 37, 192) and dst.head.out_features == 10
    assert "resized pos_embed" in caplog.text and "classifier re-initialised" in caplog.text
    assert torch.equal(dst.cls_token, src.cls_token) and torch.equal(dst.pos_embed[:, :1], src.pos_embed[:, :1])
    # the same resampling as timm's reference helper (bicubic, no antialias, class token kept)
    from timm.layers import resample_abs_pos_embed

    ref = resample_abs_pos_embed(src.pos_embed.detach(), (6, 6), num_prefix_tokens=1, antialias=False)
    assert torch.allclose(dst.pos_embed.detach(), ref, atol=1e-6)


def test_beit_rel_pos_table_resize_keeps_cls_entries():
    table = torch.randn((2 * 4 - 1) ** 2 + 3, 3)
    out = resize_rel_pos_table(table, (6, 6))
    assert out.shape == ((2 * 6 - 1) ** 2 + 3, 3)
    assert torch.equal(out[-3:], table[-3:])
    m = create_model("beit_base_patch16_224", img_size=96, depth=1, embed_dim=48, num_heads=3)
    assert m.blocks[0].attn.relative_position_bias_table.shape == out.shape


def test_load_model_round_trip_and_ema(tmp_path):
    m = create_model("beit_base_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=48, num_heads=3,
                     num_classes=5)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in m.state_dict().items()}
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": m.state_dict(), "ema": ema,
                           "meta": {"arch": m.arch, "model_kwargs": m.model_kwargs, "class_names": list("abcde")}})
    loaded, meta = load_model(path)
    assert meta["class_names"] == list("abcde") and loaded.num_classes == 5
    assert torch.equal(loaded.head.weight, m.head.weight)
    loaded_ema, _ = load_model(path, use_ema=True)
    assert torch.equal(loaded_ema.head.weight, m.head.weight + 1)
    st = tmp_path / "w.safetensors"
    save_checkpoint(st, {"model": m.state_dict(), "meta": {"arch": m.arch, "model_kwargs": m.model_kwargs}})
    again, _ = load_model(st)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), m.eval()(x))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224", "beit_base_patch16_224"])
def test_attention_maps_match_fused_path(name):
    m = create_model(name, img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = m.get_attention_maps(x)
    tokens = 16 + (2 if m.distilled else 1)
    assert len(maps) == 2 and maps[0].shape == (2, 3, tokens, tokens)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 3, tokens), atol=1e-5)
    for blk in m.blocks:  # explicit softmax path == SDPA path
        blk.attn.keep_attn = True
    with torch.no_grad():
        explicit = m(x)
    for blk in m.blocks:
        blk.attn.keep_attn = False
    with torch.no_grad():
        assert torch.allclose(explicit, m(x), atol=1e-5)


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, drop_path_rate=0.0)
    b = create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    a(x).sum().backward()
    b(x).sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6), n


def test_gelu_option_and_layer_ids():
    exact = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)
    approx = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, gelu_approximate=True)
    approx.load_state_dict(exact.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        diff = (exact(x) - approx(x)).abs().max().item()
    assert 0 < diff < 1e-2
    assert exact.layer_id("cls_token") == 0 and exact.layer_id("patch_embed.proj.weight") == 0
    assert exact.layer_id("blocks.1.mlp.fc1.weight") == 2 and exact.layer_id("head.weight") == 3
    assert exact.no_weight_decay() == {"cls_token", "pos_embed"}


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_NAMES)
def test_full_size_logits_match_timm(name):
    """The registered architecture as released (all blocks, native resolution) against timm."""
    torch.manual_seed(0)
    ref = timm.create_model(name).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    size = ours.data_config["input_size"][-1]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-4


def test_timm_training_checkpoint_with_args_namespace_loads(tmp_path):
    """timm's train script (used for the T2T-ViT releases) stores its argparse.Namespace in the file."""
    import argparse

    m = create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 309, "arch": "deit_tiny", "args": argparse.Namespace(lr=1e-3, model="x"),
                "state_dict": {"module." + k: v for k, v in m.state_dict().items()}}, path)
    loaded, _ = load_model(path, arch="deit_tiny_patch16_224", img_size=32, patch_size=8, depth=1)
    assert loaded.num_classes == 3 and torch.equal(loaded.head.weight, m.head.weight)
