"""T2T-ViT: published parameter counts, the official key layout, the T2T layers against their written-out
math, the attention-scale switch of official files, position-table rebuild, training hooks.

Logit parity with the official implementation (yitu-opensource/T2T-ViT) was measured out of tree; this
file checks what pins the same behaviour without their code: key names/shapes, counts, formulas.
"""
from __future__ import annotations

import math

import pytest
import torch

from vitzoo import create_model, list_models
from vitzoo.checkpoint import save_checkpoint
from vitzoo.models.registry import build_config
from vitzoo.models.t2t_vit import (
    SOFT_SPLITS,
    TokenAttention,
    TokenPerformer,
    released_qk_scale,
    sinusoid_table,
    soft_split,
    soft_split_sizes,
)

# ../shared/seeds/README.md (the MindSpore tables print the 5-class trainable counts).
SEED_COUNTS = {  # name: {num_classes: (trainable, parameters + fixed buffers)}
    "t2t_vit_19": {1000: (39_085_070, 39_177_422), 5: (38_638_315, None)},
    "t2t_vit_t_14": {1000: (21_465_422, 21_541_070), 5: (21_082_347, None)},
}
# #params (M) of the official README tables; the official count includes the requires_grad=False
# tensors (sinusoid table, Performer features), i.e. our parameters + buffers.
README_MILLIONS = {
    "t2t_vit_7": 4.3, "t2t_vit_10": 5.9, "t2t_vit_12": 6.9, "t2t_vit_14": 21.5, "t2t_vit_19": 39.2,
    "t2t_vit_24": 64.1, "t2t_vit_t_14": 21.5, "t2t_vit_t_19": 39.2, "t2t_vit_t_24": 64.1,
}
SMALL = {"img_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 2, "token_dim": 16}


def counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters())
    return trainable, trainable + sum(b.numel() for b in model.buffers())


def meta_model(name: str, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


@pytest.mark.parametrize("name", sorted(SEED_COUNTS))
def test_seed_parameter_counts(name):
    for num_classes, (trainable, in_all) in SEED_COUNTS[name].items():
        got = counts(meta_model(name, num_classes=num_classes))
        assert got[0] == trainable
        if in_all is not None:
            assert got[1] == in_all


@pytest.mark.parametrize("name", sorted(README_MILLIONS))
def test_readme_parameter_counts(name):
    assert round(counts(meta_model(name))[1] / 1e6, 1) == README_MILLIONS[name]


def test_every_t2t_name_and_its_fixed_tensors():
    names = set(list_models("t2t_*"))
    assert names == set(README_MILLIONS) | {"t2t_vit_14_resnext", "t2t_vit_14_wide"}
    # 32 heads instead of 6 regroup the same weights (the "ResNeXt" variant): same count as T2T-ViT-14
    assert counts(meta_model("t2t_vit_14_resnext")) == counts(meta_model("t2t_vit_14"))
    for name in names:
        m = meta_model(name)
        params = dict(m.named_parameters())
        fixed = {k for k in m.state_dict() if k not in params}
        performer = m.cfg.tokens_type == "performer"
        assert fixed == ({"pos_embed"} | ({f"tokens_to_token.attention{i}.w" for i in (1, 2)} if performer else set()))
        assert m.pos_embed.shape == (1, 14 * 14 + 1, m.embed_dim)
        assert m.no_weight_decay() == {"cls_token"}


# state_dict() of the official t2t_vit_7 (models/t2t_vit.py), names and shapes as observed, in order
OFFICIAL_T2T_VIT_7_HEAD = [
    ("cls_token", (1, 1, 256)), ("pos_embed", (1, 197, 256)),
    *[(f"tokens_to_token.attention{i}.{k}", s) for i, d in ((1, 147), (2, 576)) for k, s in (
        ("w", (32, 64)), ("kqv.weight", (192, d)), ("kqv.bias", (192,)), ("proj.weight", (64, 64)),
        ("proj.bias", (64,)), ("norm1.weight", (d,)), ("norm1.bias", (d,)), ("norm2.weight", (64,)),
        ("norm2.bias", (64,)), ("mlp.0.weight", (64, 64)), ("mlp.0.bias", (64,)), ("mlp.2.weight", (64, 64)),
        ("mlp.2.bias", (64,)))],
    ("tokens_to_token.project.weight", (256, 576)), ("tokens_to_token.project.bias", (256,)),
]
OFFICIAL_BLOCK_256 = [
    ("norm1.weight", (256,)), ("norm1.bias", (256,)), ("attn.qkv.weight", (768, 256)),
    ("attn.proj.weight", (256, 256)), ("attn.proj.bias", (256,)), ("norm2.weight", (256,)),
    ("norm2.bias", (256,)), ("mlp.fc1.weight", (512, 256)), ("mlp.fc1.bias", (512,)),
    ("mlp.fc2.weight", (256, 512)), ("mlp.fc2.bias", (256,)),
]
OFFICIAL_TAIL_256 = [("norm.weight", (256,)), ("norm.bias", (256,)), ("head.weight", (1000, 256)),
                     ("head.bias", (1000,))]
# the Token Transformer's T2T layer (official t2t_vit_t_*), for attention1 (147 in) / attention2 (576 in)
OFFICIAL_TOKEN_TRANSFORMER = [
    ("norm1.weight", "d"), ("norm1.bias", "d"), ("attn.qkv.weight", (192, "d")), ("attn.proj.weight", (64, 64)),
    ("attn.proj.bias", (64,)), ("norm2.weight", (64,)), ("norm2.bias", (64,)), ("mlp.fc1.weight", (64, 64)),
    ("mlp.fc1.bias", (64,)), ("mlp.fc2.weight", (64, 64)), ("mlp.fc2.bias", (64,)),
]


def test_official_key_layout():
    expected = OFFICIAL_T2T_VIT_7_HEAD + [(f"blocks.{i}.{k}", s) for i in range(7) for k, s in OFFICIAL_BLOCK_256]
    expected += OFFICIAL_TAIL_256
    got = [(k, tuple(v.shape)) for k, v in meta_model("t2t_vit_7").state_dict().items()]
    assert got == expected

    sd = meta_model("t2t_vit_t_14").state_dict()
    for i, d in ((1, 147), (2, 576)):
        want = [(f"tokens_to_token.attention{i}.{k}", (d,) if s == "d" else tuple(d if x == "d" else x for x in s))
                for k, s in OFFICIAL_TOKEN_TRANSFORMER]
        assert [(k, tuple(v.shape)) for k, v in sd.items() if k.startswith(f"tokens_to_token.attention{i}.")] == want
    assert "blocks.13.attn.qkv.weight" in sd and "blocks.0.attn.qkv.bias" not in sd  # no qkv bias (official)


@pytest.mark.parametrize("tokens_type", ["performer", "transformer"])
def test_small_custom_variant_shapes(tokens_type):
    assert soft_split_sizes(224) == [56, 28, 14] and soft_split_sizes(32) == [8, 4, 2]
    m = create_model("t2t_vit_14", num_classes=10, tokens_type=tokens_type, **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, 1 + 2 * 2, 64) and m.pos_embed.shape == (1, 5, 64)
    assert m(x).shape == (2, 10) and m.forward_head(feats, pre_logits=True).shape == (2, 64)
    assert m.model_kwargs["tokens_type"] == tokens_type and m.data_config["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="img_size"):
        m(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="performer, transformer"):
        create_model("t2t_vit_7", tokens_type="conv", **SMALL)


@pytest.mark.parametrize("kernel,stride,padding", SOFT_SPLITS)
@pytest.mark.parametrize("side,channels", [(32, 3), (28, 16), (15, 5)])
def test_soft_split_is_nn_unfold_bit_for_bit(kernel, stride, padding, side, channels):
    x = torch.randn(3, channels, side, side, generator=torch.Generator().manual_seed(side), requires_grad=True)
    official = torch.nn.Unfold(kernel, stride=stride, padding=padding)(x).transpose(1, 2)  # (B, L, C*k*k)
    ours = soft_split(x.permute(0, 2, 3, 1), kernel, stride, padding)
    assert ours.shape == official.shape and torch.equal(ours, official)
    upstream = torch.randn_like(ours)  # and the same gradient back to the image (training)
    grad_official, = torch.autograd.grad(official, x, upstream)
    grad_ours, = torch.autograd.grad(ours, x, upstream)
    torch.testing.assert_close(grad_ours, grad_official)


@pytest.mark.parametrize("tokens_type", ["performer", "transformer"])
def test_t2t_module_equals_the_official_unfold_sequence(tokens_type):
    """The whole T2T module against the official code's sequence (models/t2t_vit.py, T2T_module.forward):
    Unfold -> transpose -> layer -> transpose + reshape to an image -> Unfold ..."""
    torch.manual_seed(0)
    t2t = create_model(f"t2t_vit{'_t' if tokens_type == 'transformer' else ''}_14", **SMALL).eval().tokens_to_token
    x = torch.randn(2, 3, 32, 32)
    unfold = [torch.nn.Unfold(k, stride=s, padding=p) for k, s, p in SOFT_SPLITS]
    with torch.no_grad():
        y = unfold[0](x).transpose(1, 2)
        for layer, split in ((t2t.attention1, unfold[1]), (t2t.attention2, unfold[2])):
            y = layer(y)
            side = int(math.sqrt(y.shape[1]))
            y = split(y.transpose(1, 2).reshape(y.shape[0], y.shape[2], side, side)).transpose(1, 2)
        assert torch.equal(t2t(x), t2t.project(y))


def test_sinusoid_table_formula():
    t = sinusoid_table(17, 64)[0].double()
    for pos, ch in ((0, 0), (3, 4), (16, 63), (5, 17)):
        angle = pos / 10000 ** (2 * (ch // 2) / 64)
        assert t[pos, ch].item() == pytest.approx(math.sin(angle) if ch % 2 == 0 else math.cos(angle), abs=1e-6)


def test_performer_equals_its_quadratic_form():
    """The linear-time kernel = the explicit N x N form A_ij = phi(q_i).phi(k_j), y = A v / rowsum(A)."""
    torch.manual_seed(0)
    layer = TokenPerformer(dim=27, in_dim=16, drop=0.0).eval()
    assert layer.w.shape == (8, 16) and not layer.w.requires_grad
    # orthogonal rows scaled by sqrt(m) (official init)
    assert torch.allclose(layer.w @ layer.w.T, 8 * torch.eye(8), atol=1e-4)
    x = layer.norm1(torch.randn(2, 10, 27))
    k, q, v = layer.kqv(x).split(16, dim=-1)

    def phi(z):
        return torch.exp(z @ layer.w.T - (z * z).sum(-1, keepdim=True) / 2) / math.sqrt(8)

    A = phi(q) @ phi(k).transpose(1, 2)  # (B, N, N)
    y = v + layer.proj((A @ v) / (A.sum(-1, keepdim=True) + 1e-8))
    with torch.no_grad():
        assert torch.allclose(layer.attention(x), y, atol=1e-5)


def test_token_attention_scale_and_skip():
    """Token Transformer attention: one head, scale = input width ** -0.5 (official), v as the residual."""
    torch.manual_seed(0)
    attn = TokenAttention(dim=36, in_dim=8).eval()
    assert attn.scale == 36**-0.5 and attn.qkv.bias is None
    x = torch.randn(2, 12, 36)
    q, k, v = attn.qkv(x).split(8, dim=-1)
    ref = v + attn.proj(torch.softmax(q @ k.transpose(1, 2) * 36**-0.5, dim=-1) @ v)
    with torch.no_grad():
        assert torch.allclose(attn(x), ref, atol=1e-5)
        attn.keep_attn = True  # the explicit path gives the same result
        assert torch.allclose(attn(x), ref, atol=1e-5)


def _official_file(tmp_path, model, name="t2t.pth.tar"):
    """An official-release-style file: timm train script's EMA wrapper with DataParallel prefixes."""
    path = tmp_path / name
    torch.save({"state_dict_ema": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 309}, path)
    return str(path)


def test_official_file_switches_to_pretrained_scale(tmp_path):
    torch.manual_seed(0)
    src = create_model("t2t_vit_7", **SMALL).eval()
    path = _official_file(tmp_path, src)
    m = create_model("t2t_vit_7", pretrained=path, **SMALL).eval()
    scale = 64**-0.5  # embed_dim ** -0.5, as the official builders set for pretrained=True
    assert [b.attn.scale for b in m.blocks] == [scale, scale] and src.blocks[0].attn.scale == 32**-0.5
    assert m.cfg.qk_scale == scale and m.model_kwargs["qk_scale"] == scale
    ref = create_model("t2t_vit_7", qk_scale=scale, **SMALL).eval()
    ref.load_state_dict(src.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), ref(x))
    # the recorded kwargs rebuild the same function
    assert create_model("t2t_vit_7", **m.model_kwargs).blocks[0].attn.scale == scale
    # an explicit choice wins; a vitzoo checkpoint keeps the model's own scale
    assert create_model("t2t_vit_7", pretrained=path, qk_scale=0.3, **SMALL).blocks[0].attn.scale == 0.3
    ours = tmp_path / "ours.pth"
    save_checkpoint(ours, {"model": src.state_dict(), "meta": {"arch": "t2t_vit_7"}})
    assert create_model("t2t_vit_7", pretrained=str(ours), **SMALL).blocks[0].attn.scale == 32**-0.5
    # t2t_vit_14_wide: its official builder uses 512 ** -0.5 with embed_dim 768
    assert released_qk_scale(build_config("t2t_vit_14_wide")) == 512**-0.5


def test_sinusoid_table_rebuilt_at_another_size(tmp_path):
    torch.manual_seed(0)
    src = create_model("t2t_vit_t_14", num_classes=5, **SMALL)
    path = _official_file(tmp_path, src)
    m = create_model("t2t_vit_t_14", num_classes=3, pretrained=path, **{**SMALL, "img_size": 64}).eval()
    assert torch.equal(m.pos_embed, sinusoid_table(1 + 4 * 4, 64))
    assert torch.equal(m.tokens_to_token.project.weight, src.tokens_to_token.project.weight)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_backward_and_layer_ids():
    m = create_model("t2t_vit_7", num_classes=4, drop_path_rate=0.1, **SMALL).train()
    m(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert m.layer_id("tokens_to_token.attention1.kqv.weight") == 0 == m.layer_id("cls_token")
    assert m.layer_id("blocks.1.mlp.fc1.weight") == 2 and m.layer_id("head.weight") == m.num_layers() + 1 == 3


def test_attention_maps():
    m = create_model("t2t_vit_t_14", **SMALL).eval()
    maps = m.get_attention_maps(torch.randn(2, 3, 32, 32))
    assert len(maps) == 2 and all(a.shape == (2, 2, 5, 5) for a in maps)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, 5), atol=1e-5)


@pytest.mark.parametrize("tokens_type", ["performer", "transformer"])
def test_grad_checkpointing_same_grads(tokens_type):
    torch.manual_seed(0)
    m = create_model("t2t_vit_7", tokens_type=tokens_type, performer_drop_rate=0.0, **SMALL).train()
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        m.zero_grad()
        m.set_grad_checkpointing(enable)
        m(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    assert m.tokens_to_token.grad_checkpointing
    for n, g in grads[0].items():
        assert torch.allclose(g, grads[1][n], atol=1e-6), n


def test_performer_kernel_stays_fp32_under_autocast():
    m = create_model("t2t_vit_7", **SMALL).eval()
    x = torch.randn(2, 3, 32, 32) * 4
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert torch.isfinite(y).all()
    with torch.no_grad():
        assert (y.float() - m(x)).abs().max() < 0.1 * m(x).abs().max() + 0.05
