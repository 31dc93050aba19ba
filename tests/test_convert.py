"""`vitzoo convert` and the detector registry (vitzoo.models.convert): official release layouts ->
vitzoo checkpoints, checked by logits equality.

Nothing can be downloaded, so each test writes a file in the official layout itself from a reference
model (timm for ViT/DeiT/BEiT, whose keys the releases use; our own T2T-ViT for T2T) and checks that the
converted checkpoint reproduces the reference logits. Loading semantics (T2T scale, EMA, wrappers) are
in test_convert_load.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from vitzoo.checkpoint import load_checkpoint, save_checkpoint
from vitzoo.cli import main as cli
from vitzoo.errors import UserError
from vitzoo.models import create_model, load_model
from vitzoo.models.convert import LAYOUTS, beit, detect, native, npz, read_weights, t2t
from vitzoo.models.convert import timm as timm_layout

TINY = {"img_size": 32, "patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 3}
SETS = ["--set", "patch_size=4", "--set", "embed_dim=48", "--set", "depth=2", "--set", "num_heads=3",
        "--img-size", "32"]
X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _logits(model: torch.nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _convert_and_load(src, dst, *extra) -> torch.nn.Module:
    assert cli(["convert", str(src), str(dst), *extra]) == 0
    model, meta = load_model(dst)
    assert meta["format"] == "vitzoo" and meta["arch"] and meta["data_config"]["input_size"] == [3, 32, 32]
    return model


@pytest.mark.parametrize("arch", ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_deit_pth_model_wrapper(tmp_path, arch, suffix):
    ref = timm.create_model(arch, num_classes=7, **TINY).eval()
    src = tmp_path / "deit.pth"
    torch.save({"model": ref.state_dict(), "epoch": 299}, src)  # the DeiT release wrapper
    model = _convert_and_load(src, tmp_path / f"out{suffix}", "--arch", arch, *SETS)
    assert model.num_classes == 7  # the head width is taken from the file
    torch.testing.assert_close(_logits(model), _logits(ref), atol=1e-5, rtol=0)


def test_pth_head_reinit_and_missing_arch(tmp_path, capsys):
    ref = timm.create_model("deit_tiny_patch16_224", num_classes=7, **TINY).eval()
    src = tmp_path / "deit.pth"
    torch.save({"model": ref.state_dict()}, src)
    model = _convert_and_load(src, tmp_path / "out.pt", "--arch", "deit_tiny_patch16_224",
                              "--num-classes", "3", *SETS)
    assert model.num_classes == 3
    assert "classifier re-initialised" in capsys.readouterr().out
    # the backbone is the file's
    torch.testing.assert_close(model.forward_features(X), ref.forward_features(X), atol=1e-5, rtol=0)
    assert cli(["convert", str(src), str(tmp_path / "x.pt")]) == 2  # no --arch for an official file
    assert "--arch" in capsys.readouterr().err


@pytest.mark.parametrize("shared", [False, True])
def test_beit_pth_relative_position_index_and_shared_table(tmp_path, shared):
    kw = dict(TINY, use_abs_pos_emb=False, use_rel_pos_bias=not shared, use_shared_rel_pos_bias=shared,
              init_values=0.1)
    ref = timm.create_model("beit_base_patch16_224", num_classes=5, **kw).eval()
    with torch.no_grad():  # non-zero bias tables, so a mis-mapped table would change the logits
        for name, p in ref.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0, 0.5)
    sd = dict(ref.state_dict())
    # official BEiT files carry the (derived) index buffers, which timm keeps non-persistent
    for name, buf in ref.named_buffers():
        if name.endswith("relative_position_index"):
            sd[name] = buf
    assert any(k.endswith("relative_position_index") for k in sd)
    if shared:
        assert "rel_pos_bias.relative_position_bias_table" in sd
    src = tmp_path / "beit.pth"
    torch.save({"model": sd}, src)
    model = _convert_and_load(src, tmp_path / "beit.pt", "--arch", "beit_base_patch16_224", *SETS)
    state = load_checkpoint(tmp_path / "beit.pt")["model"]
    assert not any(k.endswith("relative_position_index") for k in state)
    torch.testing.assert_close(_logits(model), _logits(ref), atol=1e-5, rtol=0)


def test_t2t_pth_tar_ema_and_module_prefix(tmp_path):
    torch.manual_seed(0)
    kw = {"img_size": 32, "embed_dim": 48, "depth": 2, "num_heads": 3}
    ref = create_model("t2t_vit_7", num_classes=6, **kw).eval()
    ema = {f"module.{k}": v for k, v in ref.state_dict().items()}
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in ema.items()}
    src = tmp_path / "t2t.pth.tar"
    torch.save({"state_dict": other, "state_dict_ema": ema, "epoch": 309}, src)
    sets = ["--set", "embed_dim=48", "--set", "depth=2", "--set", "num_heads=3", "--img-size", "32"]
    model = _convert_and_load(src, tmp_path / "t2t.pt", "--arch", "t2t_vit_7", "--use-ema", *sets)
    # official T2T weights were trained with attention scale embed_dim**-0.5: the model is built with it
    assert model.model_kwargs["qk_scale"] == pytest.approx(48 ** -0.5)
    released = create_model("t2t_vit_7", num_classes=6, qk_scale=48 ** -0.5, **kw)
    released.load_state_dict(ref.state_dict())
    torch.testing.assert_close(_logits(model), _logits(released), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ Google .npz
def _to_google_npz(sd: dict[str, torch.Tensor], heads: int, path, pre_logits: int = 0) -> None:
    """Write a timm ViT state dict with the names/layouts of Google's ViT-B_16.npz (the inverse mapping)."""
    a = {k: v.detach().numpy() for k, v in sd.items()}
    d = a["cls_token"].shape[-1]
    g = {"embedding/kernel": a["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
         "embedding/bias": a["patch_embed.proj.bias"], "cls": a["cls_token"],
         "Transformer/posembed_input/pos_embedding": a["pos_embed"],
         "Transformer/encoder_norm/scale": a["norm.weight"], "Transformer/encoder_norm/bias": a["norm.bias"],
         "head/kernel": a["head.weight"].T, "head/bias": a["head.bias"]}
    depth = 1 + max(int(k.split(".")[1]) for k in a if k.startswith("blocks."))
    for i in range(depth):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        att = p + "MultiHeadDotProductAttention_1/"
        g[p + "LayerNorm_0/scale"], g[p + "LayerNorm_0/bias"] = a[b + "norm1.weight"], a[b + "norm1.bias"]
        g[p + "LayerNorm_2/scale"], g[p + "LayerNorm_2/bias"] = a[b + "norm2.weight"], a[b + "norm2.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w = a[b + "attn.qkv.weight"][j * d:(j + 1) * d]  # (out, in)
            g[att + n + "/kernel"] = w.T.reshape(d, heads, d // heads)
            g[att + n + "/bias"] = a[b + "attn.qkv.bias"][j * d:(j + 1) * d].reshape(heads, d // heads)
        g[att + "out/kernel"] = a[b + "attn.proj.weight"].T.reshape(heads, d // heads, d)
        g[att + "out/bias"] = a[b + "attn.proj.bias"]
        for r in (0, 1):
            g[p + f"MlpBlock_3/Dense_{r}/kernel"] = a[b + f"mlp.fc{r + 1}.weight"].T
            g[p + f"MlpBlock_3/Dense_{r}/bias"] = a[b + f"mlp.fc{r + 1}.bias"]
    if pre_logits:
        rng = np.random.default_rng(0)
        g["pre_logits/kernel"] = rng.normal(size=(d, d)).astype(np.float32)
        g["pre_logits/bias"] = np.zeros(d, np.float32)
    np.savez(path, **g)


@pytest.fixture(scope="module")
def vit_ref():
    torch.manual_seed(1)
    return timm.create_model("vit_base_patch16_224", num_classes=10, **TINY).eval()


def test_npz_round_trip(tmp_path, vit_ref):
    src = tmp_path / "ViT-tiny.npz"
    _to_google_npz(vit_ref.state_dict(), heads=3, path=src)
    # the file really is in Google's layout: timm's own .npz reader rebuilds the reference from it
    check = timm.create_model("vit_base_patch16_224", num_classes=10, **TINY).eval()
    timm.models.vision_transformer._load_weights(check, str(src))
    torch.testing.assert_close(_logits(check), _logits(vit_ref), atol=1e-5, rtol=0)

    model = _convert_and_load(src, tmp_path / "vit.pt", "--arch", "vit_base_patch16_224", *SETS)
    assert model.num_classes == 10
    torch.testing.assert_close(_logits(model), _logits(vit_ref), atol=1e-5, rtol=0)


def test_npz_21k_pre_logits_dropped_for_finetuning(tmp_path, vit_ref, capsys):
    src = tmp_path / "ViT-21k.npz"
    _to_google_npz(vit_ref.state_dict(), heads=3, path=src, pre_logits=True)
    model = _convert_and_load(src, tmp_path / "vit.safetensors", "--arch", "vit_base_patch16_224",
                              "--num-classes", "4", *SETS)
    out = capsys.readouterr().out
    assert "pre_logits" in out and "re-initialised" in out
    assert model.num_classes == 4
    torch.testing.assert_close(model.forward_features(X), vit_ref.forward_features(X), atol=1e-5, rtol=0)


def test_npz_21k_keeps_pre_logits_with_its_head(tmp_path, vit_ref):
    """Google's 21k model: head(tanh(pre_logits(class token))). Kept head -> kept layer -> same logits."""
    src = tmp_path / "ViT-21k.npz"
    _to_google_npz(vit_ref.state_dict(), heads=3, path=src, pre_logits=True)
    g = np.load(src)
    kernel, bias = torch.from_numpy(g["pre_logits/kernel"]), torch.from_numpy(g["pre_logits/bias"])
    with torch.no_grad():
        cls = vit_ref.forward_features(X)[:, 0]
        google = vit_ref.head(torch.tanh(cls @ kernel + bias))  # Dense kernels are (in, out)
    model = _convert_and_load(src, tmp_path / "vit21k.pt", "--arch", "vit_base_patch16_224", *SETS)
    assert model.model_kwargs["representation_size"] == kernel.shape[1]
    torch.testing.assert_close(_logits(model), google, atol=1e-5, rtol=0)


def test_npz_errors(tmp_path, capsys):
    bad = tmp_path / "other.npz"
    np.savez(bad, foo=np.zeros(3))
    assert cli(["convert", str(bad), str(tmp_path / "o.pt"), "--arch", "vit_base_patch16_224"]) == 2
    assert "not a Google ViT .npz" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    assert cli(["convert", str(junk), str(tmp_path / "o.pt"), "--arch", "vit_base_patch16_224"]) == 2


# ------------------------------------------------------------------------------- detector registry
def _layout_fixtures(tmp_path, vit_ref) -> dict[str, tuple]:
    """One small file per layout, written the way its source writes it: name -> (path, layout module)."""
    deit = timm.create_model("deit_tiny_patch16_224", num_classes=7, **TINY).state_dict()
    beit_sd = dict(timm.create_model("beit_base_patch16_224", num_classes=5, **TINY).state_dict())
    beit_sd["blocks.0.attn.relative_position_index"] = torch.zeros(65, 65, dtype=torch.long)  # unilm keeps it
    t2t_sd = create_model("t2t_vit_7", img_size=32, embed_dim=48, depth=2, num_heads=3).state_dict()
    files = {
        "vitzoo.pt": ({"model": deit, "meta": {"arch": "deit_tiny_patch16_224"}}, native),
        "deit.pth": ({"model": deit, "epoch": 299}, timm_layout),
        "bare.pth": (deit, timm_layout),
        "timm_train.pth.tar": ({"state_dict": {f"module.{k}": v for k, v in deit.items()}}, timm_layout),
        "t2t.pth.tar": ({"state_dict_ema": {f"module.{k}": v for k, v in t2t_sd.items()}, "epoch": 309}, t2t),
        "t2t_model.pth": ({"model": t2t_sd}, t2t),
        "beit.pth": ({"model": beit_sd}, beit),
        "beit_module.pth": ({"module": beit_sd}, beit),
    }
    out = {}
    for name, (obj, layout) in files.items():
        path = tmp_path / name
        if layout is native:
            save_checkpoint(path, obj)
        else:
            torch.save(obj, path)
        out[name] = (path, layout)
    _to_google_npz(vit_ref.state_dict(), heads=3, path=tmp_path / "ViT.npz")
    out["ViT.npz"] = (tmp_path / "ViT.npz", npz)
    return out


def test_detect_finds_each_layout(tmp_path, vit_ref):
    for layout in LAYOUTS:  # the interface every layout module has
        assert isinstance(layout.NAME, str) and callable(layout.detect) and callable(layout.read)
    assert LAYOUTS[-1] is timm_layout  # the catch-all (any dict holding tensors) is tried last
    for name, (path, layout) in _layout_fixtures(tmp_path, vit_ref).items():
        obj = None if layout is npz else load_checkpoint(path)
        assert detect(obj, path) is layout, name
        weights = read_weights(path)
        assert weights.layout.startswith(layout.NAME) and weights.source == str(path), name
        assert not any(k.startswith("module.") or k.endswith("relative_position_index")
                       for k in weights.state_dict), name
    # an already loaded dict is detected the same way
    assert detect({"model": {"tokens_to_token.project.weight": torch.zeros(1)}}) is t2t


def test_unknown_layout_names_the_known_ones(tmp_path, capsys):
    path = tmp_path / "notes.pth"
    torch.save({"epoch": 3, "notes": "no tensors here"}, path)
    with pytest.raises(UserError, match="not a known checkpoint layout") as err:
        read_weights(path)
    message = str(err.value)
    assert str(path) in message and "epoch, notes" in message and "\n" not in message
    assert all(layout.NAME in message for layout in LAYOUTS)
    assert cli(["convert", str(path), str(tmp_path / "o.pt"), "--arch", "deit_tiny_patch16_224"]) == 2
    assert "known: vitzoo checkpoint; Google ViT .npz" in capsys.readouterr().err


def test_npz_needs_no_arch_and_a_bare_pth_lists_the_candidates(tmp_path, vit_ref, capsys):
    src = tmp_path / "ViT.npz"
    _to_google_npz(vit_ref.state_dict(), heads=3, path=src)  # the heads are in the kernels' shapes
    model = _convert_and_load(src, tmp_path / "o.pt")
    assert "architecture detected from the weights" in capsys.readouterr().out
    torch.testing.assert_close(_logits(model), _logits(vit_ref), atol=1e-5, rtol=0)
    # a bare timm state dict: ViT and DeiT are the same network with other preprocessing, and the heads
    # do not show: both are named, and --arch asked for
    bare = tmp_path / "bare.pth"
    torch.save(vit_ref.state_dict(), bare)
    assert cli(["convert", str(bare), str(tmp_path / "b.pt"), "--set", "num_heads=3"]) == 2
    err = capsys.readouterr().err
    assert "vit_tiny_patch16_224" in err and "deit_tiny_patch16_224" in err and "--arch" in err

