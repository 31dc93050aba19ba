"""MindSpore ``.ckpt`` files of the model zoo's seeds (research/cv DeiT, T2T-ViT, beit, vit_base), read and
written without MindSpore.

The file is one protobuf message (mindspore/ccsrc/utils/checkpoint.proto)::

    message Checkpoint { repeated Value value = 1; }
    message Value { string tag = 1; TensorProto tensor = 2; }
    message TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3; }

with ``tensor_content`` the raw little-endian array and ``tensor_type`` "Float32", "Int64", ... (a large
tensor may be split over several values with the same tag; ``append_dict`` entries such as ``epoch_num``
are 0-d values, skipped). The schema is built here as a descriptor; parsing cannot run code.

Parameter names are the networks' attribute paths, MindSpore's ``nn.LayerNorm`` calling its parameters
``gamma`` / ``beta`` and ``nn.Dense`` storing ``(out, in)`` as torch does. The seeds' layouts, by family:

* DeiT (src/model/layers): timm's names (``blocks.N.attn.qkv``, ``head_dist``, ...); ``attn.q/k/v`` split
  projections are fused when found. Numerics: exact GELU, LayerNorm eps 1e-6; eval returns the mean of
  both heads for distilled models (vitzoo's default too).
* ViT-B/16 (vit_base/src/modeling_ms.py): ``transformer.embeddings.{position_embeddings, cls_token,
  patch_embeddings}``, ``transformer.encoder.layer.N.{attention_norm, ffn_norm, attn.{query,key,value,out},
  ffn.fc1, ffn.fc2}``, ``transformer.encoder.encoder_norm``, ``head``. Numerics: ``nn.GELU()`` is the tanh
  approximation in MindSpore, LayerNorm eps 1e-6.
* T2T-ViT (src/t2t_vit.py, src/layers): official names, the Token Performer's MLP as ``mlp.fc1/fc2``, the
  fixed tensors as parameters (``pos_embed``, Performer ``w``, and ``soft_split*.out``, an all-zero buffer
  of the custom Unfold, dropped on read and written back). Numerics: ``norm_layer=nn.LayerNorm`` with
  MindSpore's default eps 1e-7 everywhere, tanh GELU (``approximate_gelu`` default), backbone scale
  ``head_dim ** -0.5`` (these are not the official PyTorch releases).
* BEiT (src/vit.py, src/layers): unilm's names; each relative-position table comes with its
  ``relative_position_index`` parameter built by ``ms.ops.meshgrid`` with MindSpore's default ``xy``
  indexing, i.e. with the row / column offsets swapped against unilm's ``ij`` table. The table is
  re-ordered through the file's own index (so either convention reads right); written back in the seed's.
  Numerics: tanh GELU (``disable_approximate_gelu: False``), LayerNorm eps 1e-6.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from torch import nn

from vitzoo.checkpoint import atomic_write
from vitzoo.errors import UserError
from vitzoo.models.beit import relative_position_index
from vitzoo.models.convert.weights import Weights

NAME = "MindSpore .ckpt"
SUFFIX = ".ckpt"

# ------------------------------------------------------------------------------ protobuf schema


def _message_classes():
    f = descriptor_pb2.FileDescriptorProto(name="vitzoo_mindspore_checkpoint.proto", package="vitzoo_ms",
                                           syntax="proto2")
    T = descriptor_pb2.FieldDescriptorProto
    tensor = f.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, type=T.TYPE_INT64, label=T.LABEL_REPEATED)
    tensor.field.add(name="tensor_type", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    tensor.field.add(name="tensor_content", number=3, type=T.TYPE_BYTES, label=T.LABEL_OPTIONAL)
    ckpt = f.message_type.add(name="Checkpoint")
    value = ckpt.nested_type.add(name="Value")
    value.field.add(name="tag", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    value.field.add(name="tensor", number=2, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                    type_name=".vitzoo_ms.TensorProto")
    ckpt.field.add(name="value", number=1, type=T.TYPE_MESSAGE, label=T.LABEL_REPEATED,
                   type_name=".vitzoo_ms.Checkpoint.Value")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("vitzoo_ms.Checkpoint"))


_CHECKPOINT = _message_classes()
_DTYPES = {"Float32": np.float32, "Float16": np.float16, "Float64": np.float64, "Int64": np.int64,
           "Int32": np.int32, "Int16": np.int16, "Int8": np.int8, "UInt8": np.uint8, "Bool": np.bool_,
           "BFloat16": np.uint16}  # bfloat16: the upper half of a float32


def read_ckpt(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{tag: array}`` of a MindSpore checkpoint; 0-d and non-numeric ``append_dict`` entries left out."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"checkpoint not found: {path}" if isinstance(e, FileNotFoundError) else f"{path}: {e}") from e
    msg = _CHECKPOINT()
    try:
        msg.ParseFromString(data)
    except DecodeError as e:
        raise UserError(f"{path}: not a MindSpore checkpoint (not a protobuf Checkpoint message: {e})") from e
    parts: dict[str, tuple[list[int], str, list[bytes]]] = {}
    for value in msg.value:
        t = value.tensor
        if value.tag in parts:  # a large tensor written in slices
            parts[value.tag][2].append(t.tensor_content)
        else:
            parts[value.tag] = (list(t.dims), t.tensor_type, [t.tensor_content])
    out = {}
    for tag, (dims, kind, chunks) in parts.items():
        if not dims or kind not in _DTYPES:
            continue  # epoch_num, step_num, learning rate, strings ...
        content = b"".join(chunks)
        dtype = np.dtype(_DTYPES[kind])
        count = int(np.prod(dims))
        if len(content) != count * dtype.itemsize:
            raise UserError(f"{path}: parameter {tag} holds {len(content)} bytes for shape {tuple(dims)} "
                            f"{kind} (a truncated or corrupt file)")
        arr = np.frombuffer(content, dtype=dtype).reshape(dims)
        if kind == "BFloat16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[tag] = arr
    if not out:
        raise UserError(f"{path}: not a MindSpore checkpoint (no parameters found)")
    return out


def write_ckpt(path: str | os.PathLike, tensors: dict[str, np.ndarray]):
    """Write ``{tag: array}`` as MindSpore's ``save_checkpoint`` does (one value per parameter)."""
    names = {np.dtype(v): k for k, v in _DTYPES.items() if k != "BFloat16"}
    msg = _CHECKPOINT()
    for tag, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        value = msg.value.add(tag=tag)
        value.tensor.dims.extend(arr.shape)
        value.tensor.tensor_type = names[arr.dtype]
        value.tensor.tensor_content = arr.tobytes()
    data = msg.SerializeToString()
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


# ----------------------------------------------------------------------------- names and layouts
_VIT_SEED = [(r"^transformer\.embeddings\.position_embeddings$", "pos_embed"),
             (r"^transformer\.embeddings\.cls_token$", "cls_token"),
             (r"^transformer\.embeddings\.patch_embeddings\.", "patch_embed.proj."),
             (r"^transformer\.encoder\.encoder_norm\.", "norm."),
             (r"^transformer\.encoder\.layer\.(\d+)\.attention_norm\.", r"blocks.\1.norm1."),
             (r"^transformer\.encoder\.layer\.(\d+)\.ffn_norm\.", r"blocks.\1.norm2."),
             (r"^transformer\.encoder\.layer\.(\d+)\.ffn\.", r"blocks.\1.mlp."),
             (r"^transformer\.encoder\.layer\.(\d+)\.attn\.query\.", r"blocks.\1.attn.q."),
             (r"^transformer\.encoder\.layer\.(\d+)\.attn\.key\.", r"blocks.\1.attn.k."),
             (r"^transformer\.encoder\.layer\.(\d+)\.attn\.value\.", r"blocks.\1.attn.v."),
             (r"^transformer\.encoder\.layer\.(\d+)\.attn\.out\.", r"blocks.\1.attn.proj.")]
_PERFORMER_MLP = re.compile(r"^(tokens_to_token\.attention\d\.)mlp\.fc([12])\.")
NUMERICS = {  # what each seed network computes with (see the module docstring)
    "deit": {"gelu_approximate": False, "norm_eps": 1e-6},
    "vit": {"gelu_approximate": True, "norm_eps": 1e-6},
    "t2t": {"gelu_approximate": True, "norm_eps": 1e-7},
    "beit": {"gelu_approximate": True, "norm_eps": 1e-6},
}


def family_of(tags) -> str:
    tags = list(tags)
    if any(t.startswith("transformer.embeddings.") for t in tags):
        return "vit"
    if any(t.startswith("tokens_to_token.") for t in tags):
        return "t2t"
    if any("relative_position_bias_table" in t or t.endswith("q_bias") for t in tags):
        return "beit"
    return "deit"


def xy_relative_position_index(grid: tuple[int, int]) -> torch.Tensor:
    """The BEiT seed's index: unilm's construction with ``meshgrid(indexing="xy")`` (MindSpore's default),
    which swaps the row and column offsets of every patch pair (square grids)."""
    index = relative_position_index(grid)
    H, W = grid
    n = torch.arange(H * W)
    swap = torch.cat([torch.zeros(1, dtype=torch.long), 1 + (n % W) * H + n // W])  # token (r, c) -> (c, r)
    return index[swap][:, swap]


def reorder_table(table: torch.Tensor, index_from: torch.Tensor, index_to: torch.Tensor) -> torch.Tensor:
    """The table ``t`` with ``t[index_to] == table[index_from]`` for every token pair."""
    out = torch.empty_like(table)
    out[index_to.reshape(-1)] = table[index_from.reshape(-1)]
    if not torch.equal(out[index_to.reshape(-1)], table[index_from.reshape(-1)]):
        raise UserError("the relative_position_index in the file does not match a BEiT grid")
    return out


def _grid(table: torch.Tensor) -> tuple[int, int]:
    side = (round((table.shape[0] - 3) ** 0.5) + 1) // 2
    return side, side


def to_state_dict(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Seed names -> vitzoo names (LayerNorm gamma/beta, fused q/k/v, BEiT tables in unilm's order)."""
    sd: dict[str, torch.Tensor] = {}
    performer = any(t.endswith(".kqv.weight") for t in arrays)  # the Token Transformer's MLP is fc1/fc2 here too
    for tag, arr in arrays.items():
        key = tag
        for pattern, repl in _VIT_SEED:
            key = re.sub(pattern, repl, key)
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))
        if performer:
            key = _PERFORMER_MLP.sub(lambda m: f"{m.group(1)}mlp.{0 if m.group(2) == '1' else 2}.", key)
        key = key.replace(".relative_position_bias.relative_position", ".relative_position")
        if re.match(r"^tokens_to_token\.soft_split\d\.out$", key):
            continue  # the custom Unfold's zero buffer
        sd[key] = torch.from_numpy(np.array(arr))
    for key in [k for k in sd if re.search(r"\.attn\.q\.weight$", k)]:  # split projections -> fused qkv
        p = key[: -len("q.weight")]
        sd[p + "qkv.weight"] = torch.cat([sd.pop(p + f"{n}.weight") for n in "qkv"])
        if p + "q.bias" in sd:
            sd[p + "qkv.bias"] = torch.cat([sd.pop(p + f"{n}.bias") for n in "qkv"])
    for key in [k for k in sd if k.endswith("relative_position_bias_table")]:
        table = sd[key]
        stored = sd.pop(key.replace("bias_table", "index"), None)
        seed_index = stored.long() if stored is not None else xy_relative_position_index(_grid(table))
        sd[key] = reorder_table(table, seed_index, relative_position_index(_grid(table)))
    return sd


def detect(obj: dict | None, path: str | None) -> bool:
    return obj is None and str(path).endswith(SUFFIX)


def read(obj: None, path: str, use_ema: bool) -> Weights:
    arrays = read_ckpt(path)
    family = family_of(arrays)
    sd = to_state_dict(arrays)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    kwargs: dict[str, Any] = {}
    if family == "vit":  # the seed is ViT-B/16 only (any class count); sizes as the file has them
        kwargs = {"embed_dim": int(sd["cls_token"].shape[-1]), "patch_size": int(sd["patch_embed.proj.weight"].shape[-1]),
                  "depth": 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
                  "mlp_ratio": sd["blocks.0.mlp.fc1.weight"].shape[0] / sd["cls_token"].shape[-1]}
    return Weights(sd, f"{NAME} ({family} seed)", path, arch="vit_base_patch16_224" if family == "vit" else None,
                   model_kwargs=kwargs, numerics=NUMERICS[family], family=family)


# ------------------------------------------------------------------------------------- writing
def target_family(model: nn.Module) -> str:
    arch = getattr(model, "arch", "")
    if arch.startswith("t2t"):
        return "t2t"
    if arch.startswith("beit"):
        return "beit"
    return "vit" if arch.startswith("vit_") else "deit"


def target_numerics(model: nn.Module) -> dict[str, Any]:
    """What the seed network this model is written for computes with."""
    return NUMERICS[target_family(model)]


def from_state_dict(model: nn.Module) -> dict[str, np.ndarray]:
    """vitzoo's state dict in the seed's names, with the parameters the seed network has besides."""
    family = target_family(model)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    for key, value in sd.items():
        owner, _, leaf = key.rpartition(".")
        if owner in norms:
            key = f"{owner}.{'gamma' if leaf == 'weight' else 'beta'}"
        if family == "t2t":
            key = re.sub(r"^(tokens_to_token\.attention\d\.)mlp\.([02])\.",
                         lambda m: f"{m.group(1)}mlp.fc{1 if m.group(2) == '0' else 2}.", key)
        if family == "beit" and key.endswith("relative_position_bias_table"):
            grid, prefix = _grid(value), key[: -len("relative_position_bias_table")]
            index = xy_relative_position_index(grid)
            out[prefix + "relative_position_bias.relative_position_bias_table"] = reorder_table(
                value, relative_position_index(grid), index)
            out[prefix + "relative_position_bias.relative_position_index"] = index
            continue
        out[key] = value
    if family == "vit":
        out = _to_vit_seed(out)
    if family == "t2t":  # the custom Unfold's zero buffers: (1, channels * k * k, positions)
        t2t = model.tokens_to_token
        chans = (model.cfg.in_chans, model.cfg.token_dim, model.cfg.token_dim)
        for i, (side, c) in enumerate(zip(t2t.sides, chans)):
            k = (7, 3, 3)[i]
            out[f"tokens_to_token.soft_split{i}.out"] = torch.zeros(1, c * k * k, side * side)
    return {k: v.numpy() for k, v in out.items()}


def _to_vit_seed(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"transformer.embeddings.position_embeddings": sd.pop("pos_embed"),
           "transformer.embeddings.cls_token": sd.pop("cls_token")}
    for key, value in sd.items():
        if key.startswith("patch_embed.proj."):
            out["transformer.embeddings.patch_embeddings." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("norm."):
            out["transformer.encoder.encoder_norm." + key.rsplit(".", 1)[1]] = value
        elif m := re.match(r"^blocks\.(\d+)\.(.+)\.(\w+)$", key):
            i, mod, leaf = m.groups()
            p = f"transformer.encoder.layer.{i}."
            if mod == "attn.qkv":
                for name, part in zip(("query", "key", "value"), value.chunk(3)):
                    out[f"{p}attn.{name}.{leaf}"] = part
            else:
                seed = {"norm1": "attention_norm", "norm2": "ffn_norm", "attn.proj": "attn.out",
                        "mlp.fc1": "ffn.fc1", "mlp.fc2": "ffn.fc2"}
                out[f"{p}{seed[mod]}.{leaf}"] = value
        else:
            out[key] = value
    return out


def write(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, overwrite: bool = False):
    """One file, replaced as a vitzoo checkpoint is (``meta`` and ``overwrite`` are for folder writers)."""
    return write_ckpt(path, from_state_dict(model))
