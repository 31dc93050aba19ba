"""Packed linears (models/packed.py) against F.linear and the unpacked model: same numbers, inference only."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitzoo.runtime.cpu as C
import vitzoo.runtime.precision as P
from vitzoo.errors import UserError
from vitzoo.models import create_model
from vitzoo.models.layers import Mlp
from vitzoo.runtime import int8, packed
from vitzoo.runtime.int8 import int8_available, quantize_activations
from vitzoo.runtime.packed import (
    Int8Linear,
    PackedLinear,
    ResidualFusedBlock,
    calibrate_int8,
    pack_linears,
    packing_available,
)

pytestmark = pytest.mark.skipif(not packing_available(), reason="torch built without oneDNN")
# oneDNN's bf16 path needs AVX512-BW/VL/DQ or AVX-NE-CONVERT: an AVX2-only CPU runs the bf16 cases in fp32 only
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not packing_available(torch.bfloat16), reason="this CPU has no oneDNN bf16 path"))
DTYPES = [torch.float32, BF16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_is_f_linear(dtype, bias):
    torch.manual_seed(0)
    linear = nn.Linear(48, 40, bias=bias).to(dtype)
    weight = linear.weight.detach().clone()
    packed = PackedLinear.from_linear(linear)
    assert packed is linear and set(packed.state_dict()) == ({"weight", "bias"} if bias else {"weight"})
    for shape in [(5, 48), (2, 7, 48)]:  # any batch: the packing is not tied to one
        x = torch.randn(*shape).to(dtype)
        with torch.inference_mode():
            got = packed(x)
        want = F.linear(x, weight, linear.bias)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_gelu_within_one_step_of_the_unfused_mlp(dtype):
    torch.manual_seed(0)
    mlp = Mlp(64, 256).to(dtype).eval()
    x = torch.randn(3, 11, 64).to(dtype)
    with torch.inference_mode():
        want = mlp(x)
        pack_linears(mlp)
        got = mlp(x)
    assert isinstance(mlp.act, nn.Identity) and mlp.fc1.gelu == "none" and isinstance(mlp.fc2, PackedLinear)
    # GELU of the fp32 accumulator, rounded once: at most one bf16 step (2^-7 relative) from rounding twice
    step, floor = (2**-7, 2e-2) if dtype == torch.bfloat16 else (1e-5, 1e-5)
    assert ((got.float() - want.float()).abs() <= want.float().abs() * step + floor).all()


def test_token_performer_mlp_fuses_its_gelu_and_keeps_its_keys():
    torch.manual_seed(0)
    model = create_model("t2t_vit_7", img_size=64, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    keys = model.state_dict().keys()
    with torch.inference_mode():
        want = model(x)
        pack_linears(model)
        got = model(x)
    mlp = model.tokens_to_token.attention1.mlp
    assert mlp[0].gelu == "none" and isinstance(mlp[1], nn.Identity) and model.state_dict().keys() == keys
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _beit_with_its_own_numbers(dtype=torch.float32, **kw):
    """A small BEiT whose q / v biases and layer scales are random (negative entries too), not their init."""
    model = create_model("beit_base_patch16_224", **({"img_size": 32, "num_classes": 5, "depth": 2} | kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_bias", "v_bias", "gamma_1", "gamma_2")):
                p.copy_(torch.randn_like(p) * 0.5)
    return model.to(dtype).eval()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "beit_base_patch16_224"])
def test_residual_adds_fuse_in_blocks(name, dtype):
    """DeiT's blocks, and BEiT's with their layer scales folded into the output layers and their q / k / v
    biases into the packed qkv layer (models/packed.py: fold): the unpacked model's numbers."""
    torch.manual_seed(0)
    model = (_beit_with_its_own_numbers(dtype) if name.startswith("beit") else
             create_model(name, img_size=32, num_classes=5, depth=2).to(dtype).eval())
    x = torch.randn(2, 3, 32, 32).to(dtype)
    keys = model.state_dict().keys()
    with torch.inference_mode():
        want = model(x)
        pack_linears(model)
        got = model(x)
    assert isinstance(model.blocks[0], ResidualFusedBlock) and model.state_dict().keys() == keys
    if name.startswith("beit"):
        assert model.blocks[0].attn.qkv.bias_override is not None and model.blocks[0].mlp.fc2.gain is not None
    # each fused op rounds once where the unfused model rounds twice: a few bf16 steps over two blocks
    tol = {"atol": 0.05, "rtol": 0.02} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(got.float(), want.float(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_to_reads_the_residual_and_is_the_sum(dtype):
    torch.manual_seed(0)
    linear = PackedLinear.from_linear(nn.Linear(32, 16).to(dtype))
    x, residual = torch.randn(2, 5, 32).to(dtype), torch.randn(2, 5, 16).to(dtype)
    before = residual.clone()
    with torch.inference_mode():
        got = linear.add_to(x, residual)
    assert torch.equal(residual, before)
    want = before.float() + F.linear(x.float(), linear.weight.float(), linear.bias.float())
    step, floor = (2**-7, 1e-2) if dtype == torch.bfloat16 else (1e-5, 1e-5)
    assert ((got.float() - want).abs() <= want.abs() * step + floor).all()


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "beit_base_patch16_224"])
def test_packed_model_trains_through_the_fallback(name):
    torch.manual_seed(0)
    model = (_beit_with_its_own_numbers() if name.startswith("beit") else
             create_model(name, img_size=32, num_classes=5)).train()
    ref = copy.deepcopy(model)
    pack_linears(model)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)  # autograd records: plain F.linear (+ GELU, x gain), so gradients flow
    out.sum().backward()
    want = ref(x)
    want.sum().backward()
    torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-6)
    grads = {n: p.grad for n, p in model.named_parameters()}
    for n, p in ref.named_parameters():  # every parameter's gradient, BEiT's layer scales and q bias too
        torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)
    assert model.blocks[0].mlp.fc1.weight.grad is not None
    with torch.inference_mode():  # the packed path: the same function
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)


def test_a_copy_is_unpacked_and_keeps_the_state_dict():
    model = pack_linears(create_model("deit_tiny_patch16_224", img_size=32, num_classes=5).eval())
    twin = copy.deepcopy(model)
    assert twin.blocks[0].mlp.fc1.packed is None and twin.blocks[0].mlp.fc1.gelu == "none"
    assert twin.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(twin(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("flags, fp32_packs", [({"avx512_bf16", "amx_bf16"}, True), (set(), False)])
def test_the_policy_packs_on_a_cpu_where_it_was_measured(monkeypatch, flags, fp32_packs):
    monkeypatch.setattr(P, "_decided", {})
    monkeypatch.setattr(C, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(P, "packing_available", lambda dtype: True)  # as on a CPU with oneDNN's bf16 path
    cpu = torch.device("cpu")
    assert P.inference_precision("bf16", cpu, announce=False).pack
    assert P.inference_precision("fp32", cpu, announce=False).pack == fp32_packs  # timm's ops where unmeasured
    assert not P.packs_linears(torch.device("cuda"), torch.bfloat16)
    if packing_available(torch.bfloat16):  # this CPU can run it
        model = P.inference_precision("bf16", cpu, announce=False).cast_model(
            create_model("deit_tiny_patch16_224", img_size=32, num_classes=5).eval())
        assert isinstance(model.head, PackedLinear) and model.head.weight.dtype == torch.bfloat16


def test_bf16_is_not_packed_where_onednn_has_no_bf16_path(monkeypatch):
    """An AVX2-only CPU: oneDNN refuses to pack a bf16 weight, so bf16 runs timm's ops (no crash)."""

    monkeypatch.setattr(P, "_decided", {})
    monkeypatch.setattr(C, "cpu_flags", lambda: frozenset({"avx2"}))
    no_bf16 = lambda dtype: dtype != torch.bfloat16
    monkeypatch.setattr(P, "packing_available", no_bf16)
    monkeypatch.setattr(packed, "packing_available", no_bf16)
    bf16 = P.inference_precision("bf16", torch.device("cpu"), announce=False)
    assert not bf16.pack
    model = create_model("deit_tiny_patch16_224", img_size=32, num_classes=5).bfloat16().eval()
    assert pack_linears(model) is model and type(model.head) is nn.Linear
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 32, 32).bfloat16()).shape == (1, 5)


# --- int8 --------------------------------------------------------------------------------------------------
INT8 = pytest.mark.skipif(not int8_available(), reason="torch without oneDNN's int8 ops, or not an x86 CPU")
# 8-bit weights only where the CPU sums int8 products in int32 (VNNI, AMX-int8): elsewhere oneDNN's VPMADDUBSW
# saturates, and the policy gives 7 bits (precision.int8_precision), as these tests do
VNNI = bool(C.int8_units())
POLICY_BITS = 8 if VNNI else 7


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


def test_quantize_activations_keeps_zero_and_lands_within_half_a_step():
    torch.manual_seed(0)
    for x in (torch.randn(3, 50, 16) * 4, torch.rand(100) + 1.0, -torch.rand(7, 9), torch.zeros(4, 4)):
        q, scale, zero_point = quantize_activations(x)
        assert q.dtype == torch.uint8 and q.shape == x.shape and 0 <= zero_point <= 255
        back = (q.float() - zero_point) * scale
        assert (back - x).abs().max().item() <= scale / 2 + 1e-6 * (1 + x.abs().max().item())
        assert q.max() <= 255 and bool((q[x == 0] == zero_point).all())  # zero exact
    # the top of the range: rounding up never wraps around to 0
    with pytest.raises(UserError, match="NaN or inf"):  # one line, not a ValueError from round(nan)
        quantize_activations(torch.tensor([1.0, float("nan")]))
    for top in (3.0, 1.0 / 3, 254.0 / 7):
        q, _, _ = quantize_activations(torch.tensor([-1.0, 0.0, top]))
        assert 253 <= int(q[2]) <= 255 and int(q[0]) <= 1  # the zero point rounds: half a step either way


def test_quantize_activations_fallback_is_the_fast_path(monkeypatch):
    """Where torch no longer has quantized tensors the float arithmetic gives the codes it gave: ``x / scale``
    rounded half to even, then the zero point added (exact halves included, for odd and even zero points),
    saturating the same way; on random inputs a rare step apart (one rounding there, two here)."""
    if not int8._quantize_per_tensor_works():
        pytest.skip("this torch has no quantized tensors: the fallback is the only path")
    torch.manual_seed(0)
    x = torch.randn(197, 384) * 3
    fast, scale, zero_point = quantize_activations(x)
    monkeypatch.setattr(int8, "_quantize_per_tensor_works", lambda: False)
    slow, scale_slow, zero_point_slow = quantize_activations(x)
    assert (scale, zero_point) == (scale_slow, zero_point_slow) and fast.dtype == slow.dtype == torch.uint8
    assert (fast.int() - slow.int()).abs().max() <= 1 and (fast != slow).float().mean() < 1e-4
    halves = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 1e9, -1e9])  # exact halves, and far past the range
    for zero_point, want in ((127, [125, 125, 127, 127, 129, 129, 255, 0]), (128, [126, 126, 128, 128, 130, 130, 255, 0])):
        assert int8._to_uint8_by_float(halves, 1.0, zero_point).tolist() == want
        assert int8._bytes_of(torch.quantize_per_tensor(halves, 1.0, zero_point, torch.quint8)).tolist() == want


@INT8
@pytest.mark.parametrize("bits", [pytest.param(8, marks=pytest.mark.skipif(not VNNI, reason="no VNNI: 8 bits saturate")), 7])
@pytest.mark.parametrize("gelu", [None, "none", "tanh"])
def test_int8_linear_is_f_linear_within_quantization(bits, gelu):
    torch.manual_seed(0)
    linear = nn.Linear(64, 40)
    weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
    layer = Int8Linear.from_linear(linear, gelu=gelu, weight_bits=bits)
    assert layer is linear and set(layer.state_dict()) == {"weight", "bias"}
    # weights per output channel: the largest of each row is the largest code, 127 (8 bits) or 63 (7)
    torch.testing.assert_close(layer.weight_scale * (2 ** (bits - 1) - 1), weight.abs().amax(1))
    for shape in [(5, 64), (2, 7, 64)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            got = layer(x)
        want = F.linear(x, weight, bias)
        want = want if gelu is None else F.gelu(want, approximate=gelu)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert 1e-5 < _relative_error(got, want) < (0.02 if bits == 8 else 0.04)  # int8, and close
    x = torch.randn(3, 64, requires_grad=True)  # autograd records: the fp32 layer, exactly
    want = F.linear(x, weight, bias)
    torch.testing.assert_close(layer(x), want if gelu is None else F.gelu(want, approximate=gelu))


@INT8
def test_int8_add_to_reads_the_residual_and_is_the_sum():
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(32, 16), weight_bits=POLICY_BITS)
    x, residual = torch.randn(2, 5, 32), torch.randn(2, 5, 16)
    before = residual.clone()
    with torch.inference_mode():
        got, alone = layer.add_to(x, residual), layer(x)
    assert torch.equal(residual, before)
    torch.testing.assert_close(got, before + alone, atol=1e-5, rtol=1e-5)


@INT8
@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
                                  "beit_base_patch16_224", "t2t_vit_7"])
def test_int8_model_keeps_its_heads_fp32_and_its_predictions(name):
    torch.manual_seed(0)
    kw = {"img_size": 64, "num_classes": 5} | ({} if name.startswith("t2t") else {"depth": 2})
    model = create_model(name, **kw).eval()
    if name.startswith("beit"):  # its layer scales and q / v biases folded into int8 layers: not their init
        model = _beit_with_its_own_numbers(img_size=64)
    x = torch.randn(4, 3, 64, 64)
    keys = model.state_dict().keys()
    with torch.inference_mode():
        want = model(x)
        pack_linears(model, int8_weight_bits=POLICY_BITS)
        got = model(x)
    linears = {n: type(m) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    heads = {n: t for n, t in linears.items() if n.startswith("head")}
    assert heads and all(t is nn.Linear for t in heads.values())  # fp32
    assert all(t is Int8Linear for n, t in linears.items() if n not in heads)
    assert model.state_dict().keys() == keys
    assert 1e-5 < _relative_error(got, want) < 0.1
    twin = copy.deepcopy(model)  # an fp32 copy, as a packed model's
    with torch.inference_mode():
        torch.testing.assert_close(twin(x), want, atol=1e-4, rtol=1e-4)


@INT8
def test_calibrated_int8_is_batch_independent_and_close_to_fp32():
    """Per-call ranges make an image's logits depend on its batch; calibrated ranges (calibrate_int8) do not,
    and stay as close to fp32."""
    torch.manual_seed(0)
    fp32 = create_model("deit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, num_classes=5).eval()
    model = pack_linears(copy.deepcopy(fp32), int8_weight_bits=POLICY_BITS)
    image, others = torch.randn(1, 3, 32, 32), torch.randn(7, 3, 32, 32) * 3  # its batch-mates: wider ranges
    with torch.inference_mode():
        alone, in_batch = model(image), model(torch.cat([image, others]))[:1]
        assert (alone - in_batch).abs().max() > 1e-3  # per-call: the batch moved it
        assert calibrate_int8(model, torch.randn(32, 3, 32, 32).split(8)) == 8  # 4 int8 layers a block, no head
        assert "calibrated" in repr(model.blocks[0].attn.qkv) and type(model.head) is nn.Linear
        alone, in_batch = model(image), model(torch.cat([image, others]))[:1]
        want = fp32(image)
    assert torch.allclose(alone, in_batch, atol=1e-5, rtol=0)
    assert 1e-5 < _relative_error(alone, want) < 0.1


@INT8
def test_calibrated_mlp_passes_its_hidden_layer_as_uint8():
    """fc1's op quantizes its own output to fc2's calibrated range (Int8Linear.quantized_for): the codes
    the separate quantization of the fp32 hidden layer gives, but for rounding (one step at most)."""
    torch.manual_seed(0)
    model = create_model("deit_tiny_patch16_224", img_size=32, patch_size=4, depth=1, num_classes=5).eval()
    pack_linears(model, int8_weight_bits=POLICY_BITS)
    calibrate_int8(model, [torch.randn(8, 3, 32, 32)])
    block, x = model.blocks[0], torch.randn(2, 65, model.embed_dim)
    mlp = block.mlp
    with torch.inference_mode():
        h = block.norm2(x)
        fused = mlp.fc1.quantized_for(h, mlp.fc2)
        separate = mlp.fc2.operands(mlp.fc1(h))[0]
        assert fused.dtype == torch.uint8 and (fused.int() - separate.int()).abs().max() <= 1
        assert (fused != separate).float().mean() < 0.01
        after_attn = block.attn.proj.add_to(block.attn.mix(block.norm1(x), None), x)
        want = mlp.fc2.add_to(mlp.fc1.quantized_for(block.norm2(after_attn), mlp.fc2), after_attn)
        unfused = mlp.fc2.add_to(mlp.fc1(block.norm2(after_attn)), after_attn)
        assert torch.equal(block(x), want)  # the block takes that path
    assert _relative_error(want, unfused) < 1e-3


class _OneOfTwo(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = Int8Linear.from_linear(nn.Linear(16, 8), weight_bits=POLICY_BITS)
        self.unused = Int8Linear.from_linear(nn.Linear(16, 8), weight_bits=POLICY_BITS)

    def forward(self, x):
        return self.used(x)


@INT8
def test_calibrated_int8_saturates_beyond_its_range(monkeypatch):
    """An input past the calibrated range is clamped to it (code 255), on both quantization paths; a layer
    no calibration batch reached keeps per-call ranges."""
    torch.manual_seed(0)
    model = _OneOfTwo()
    assert calibrate_int8(model, [torch.rand(4, 16) * 0.5, torch.rand(4, 16)]) == 1  # inputs in [0, 1)
    linear = model.used
    assert model.unused.input_qparams is None and linear.observed is None
    scale, zero_point = linear.input_qparams
    assert zero_point == 0 and scale == pytest.approx(1 / 254, rel=0.01)
    for works in (True, False):
        monkeypatch.setattr(int8, "_quantize_per_tensor_works", lambda works=works: works)
        codes = linear.operands(torch.tensor([[-5.0, 0.0, 0.25, 50.0] + [0.0] * 12]))[0][0, :4].tolist()
        assert codes[:2] == [0, 0] and abs(codes[2] - 0.25 / scale) <= 0.5 and codes[3] == 255
        with torch.inference_mode():  # and the layer's output is that of the clamped input
            x = torch.rand(3, 16) * 40
            assert torch.allclose(linear(x), linear(x.clamp(max=255 * scale)), atol=1e-6)


@INT8
@pytest.mark.slow  # torch.compile of a small model: ~15 s on 2 cores
def test_torch_compile_takes_an_int8_model():
    """The int8 layers are graph breaks and the heads plain layers, so ``torch.compile`` runs the model
    (a packed fp32 layer it cannot lower: 'weight must be a graph constant')."""
    torch.manual_seed(0)
    model = pack_linears(create_model("deit_tiny_patch16_224", img_size=32, num_classes=5, depth=2).eval(),
                         POLICY_BITS)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        want = model(x)
        got = torch.compile(model)(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


SATURATION = """
import copy, torch
import torch.nn.functional as F
from torch import nn
from vitzoo.runtime.packed import Int8Linear
torch.manual_seed(0)
linear, x = nn.Linear(384, 1152), torch.randn(3152, 384)
want = F.linear(x, linear.weight, linear.bias)
for bits in (8, 7):
    with torch.inference_mode():
        got = Int8Linear.from_linear(copy.deepcopy(linear), weight_bits=bits)(x)
    print(((got - want).norm() / want.norm()).item())
"""


@INT8
def test_seven_bit_weights_keep_a_cpu_without_vnni_from_saturating():
    """oneDNN held to AVX2 (as on a CPU without VNNI) adds pairs of uint8 x int8 products in int16: 8-bit
    weights saturate it, 7-bit ones (what the policy gives such CPUs) do not."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", SATURATION], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    eight, seven = (float(v) for v in out.stdout.split())
    assert seven < 0.03 and eight > 3 * seven, (eight, seven)
