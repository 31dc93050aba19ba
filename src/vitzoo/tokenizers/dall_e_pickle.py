"""Read the released DALL-E ``encoder.pkl`` without running it: a pickled module -> a plain state dict.

The file is ``torch.save(encoder)`` of a whole ``dall_e.encoder.Encoder`` module, so ``torch.load`` would
import the ``dall_e`` package and let the pickle call whatever it names. Here a restricted
:class:`pickle.Unpickler` (the "Restricting Globals" recipe of the Python docs) resolves every name the
pickle asks for against a fixed table, :data:`ALLOWED`, and nothing else:

- the module classes the real file holds (dall_e's ``Encoder``, ``EncoderBlock``, ``Conv2d``; torch's
  ``Sequential``, ``ReLU``, ``MaxPool2d``, ``Identity``) become inert stand-ins: an empty object that
  records the state the pickle gives it (its ``__dict__``: ``_modules``, ``_parameters``, ...) and runs
  nothing of the class it stands for;
- torch's tensor-rebuilding functions and storage types become our own functions that only record
  (storage key, dtype, offset, size, stride); the bytes are read afterwards, bounds-checked, into new
  tensors;
- ``OrderedDict``, ``set`` and ``torch.device`` (plain containers and a device name) are the only real
  callables.

Any other name (``os.system``, ``builtins.eval``, an unknown class) stops the read at that opcode with
one line naming the file and the name: nothing was imported or called. We do not use
``torch.load(weights_only=True)`` with allow-listed stand-ins because for the legacy format torch then
imports the stand-ins' source to compare it with the pickled one (a warning and a patch-file path), and
its unpickler's internals change between torch versions; this reader is a page of code we control.

Both ``torch.save`` formats are read: the zip archive (torch >= 1.6: ``<name>/data.pkl`` +
``<name>/data/<key>``) and the legacy stream (magic number, protocol, sys info, the object, the storage
keys, then each storage as an int64 element count and its bytes), which stores each module class with
its source as a persistent id. Layouts: torch/serialization.py (``_save``, ``_legacy_save``).
"""
from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from vitzoo.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL = 1001  # torch/serialization.py PROTOCOL_VERSION
ROOT_CLASS = "dall_e.encoder.Encoder"
MODULE_CLASSES = (ROOT_CLASS, "dall_e.encoder.EncoderBlock", "dall_e.utils.Conv2d",
                  "torch.nn.modules.container.Sequential", "torch.nn.modules.activation.ReLU",
                  "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.linear.Identity")
MAX_DEPTH = 16  # module nesting; the encoder's is 4 (blocks.group_1.block_1.res_path)
MARKERS = (b"dall_e.encoder", b"dall_e.decoder", b"dall_e.utils")  # dall_e module names in GLOBAL opcodes
SNIFF_BYTES = 1 << 22  # the legacy format pickles the object (names, keys) before the tensor bytes
STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                  "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                  "BoolStorage": torch.bool}


class _Refused(Exception):
    """The pickle named something outside ALLOWED (carries the dotted name)."""


class InertModule:
    """Stands in for a pickled nn.Module class: keeps the state the pickle sets, runs nothing."""

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


@dataclass(frozen=True)
class StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class TensorRef:
    storage: StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> TensorRef:
    """Replaces torch._utils._rebuild_tensor_v2: (storage, offset, size, stride, requires_grad, hooks[, meta])."""
    if not isinstance(storage, StorageRef):
        raise _Refused(f"a tensor built from {type(storage).__name__}")
    return TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored) -> TensorRef:
    """Replaces torch._utils._rebuild_parameter(_with_state): a Parameter is its data here."""
    return data


def _device(*args) -> str:
    return ":".join(str(a) for a in args)


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {}
    for dotted in MODULE_CLASSES:
        module, _, name = dotted.rpartition(".")
        table[(module, name)] = type(f"Inert{name}", (InertModule,), {"qualified_name": dotted})
    table.update({("torch", name): StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()})
    table.update({("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
                  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
                  ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
                  ("collections", "OrderedDict"): OrderedDict, ("torch", "device"): _device,
                  ("builtins", "set"): set, ("__builtin__", "set"): set})  # protocol 2 writes __builtin__
    return table


ALLOWED = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves names only from ALLOWED; storages become StorageRefs (their bytes are read later)."""

    def __init__(self, file, allowed: dict | None = None) -> None:
        super().__init__(file)
        self.allowed = ALLOWED if allowed is None else allowed
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise _Refused(f"{module}.{name}")
        return self.allowed[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0] if isinstance(pid, tuple) and pid else None
        if kind == "module" and isinstance(pid[1], type) and issubclass(pid[1], InertModule):
            return pid[1]  # legacy format: (module, class, source file, source); the source is ignored
        if kind != "storage" or not isinstance(pid[1], StorageType) or len(pid) not in (5, 6):
            raise _Refused(f"persistent id {str(pid)[:60]}")
        if len(pid) == 6 and pid[5] is not None:  # legacy storage view (torch < 1.0 files)
            raise _Refused("a legacy storage view")
        key, numel = str(pid[2]), int(pid[4])
        ref = self.storages.setdefault(key, StorageRef(key, pid[1].dtype, numel))
        if ref.dtype != pid[1].dtype or ref.numel != numel:
            raise _Refused(f"storage {key} declared twice with different types")
        return ref


# ------------------------------------------------------------------------------------------ reading
def pickle_bytes(path: str) -> bytes:
    """The part of a torch.save file that holds class names and keys (of a zip: data.pkl, not the tensors)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
            return zf.read(pkl[0]) if len(pkl) == 1 else b""
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)


def names_dall_e(head: bytes) -> bool:
    """Whether pickle bytes name a dall_e class (a pickled module, which only this reader may open)."""
    return any(m in head for m in MARKERS)


def _unpickle(file, path: str, allowed: dict | None = None) -> tuple[Any, dict[str, StorageRef]]:
    unpickler = RestrictedUnpickler(file, allowed)
    try:
        return unpickler.load(), unpickler.storages
    except _Refused as e:
        raise UserError(f"{path}: refused: it asks for {e}, which is not part of a DALL-E encoder file; "
                        "nothing in it was run") from None
    except Exception as e:  # truncated stream, bad opcode, wrong argument types, ...
        raise UserError(f"{path}: not a readable DALL-E encoder pickle ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''})") from e


def _read_zip(path: str) -> tuple[Any, dict[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise UserError(f"{path}: a zip file but not a torch.save archive (no <name>/data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and zf.read(f"{prefix}byteorder").strip() != b"little":
            raise UserError(f"{path}: big-endian torch archive; not supported")
        root, storages = _unpickle(io.BytesIO(zf.read(pkl[0])), path)
        try:
            return root, {k: zf.read(f"{prefix}data/{k}") for k in storages}
        except KeyError as e:
            raise UserError(f"{path}: truncated torch archive (missing record {e})") from None


def _read_legacy(path: str) -> tuple[Any, dict[str, bytes]]:
    plain: dict = {}  # the header pickles are plain values: no name is allowed
    with open(path, "rb") as f:
        if _unpickle(f, path, plain)[0] != LEGACY_MAGIC:
            raise UserError(f"{path}: not a torch.save file (neither a zip archive nor the legacy format)")
        if _unpickle(f, path, plain)[0] != LEGACY_PROTOCOL:
            raise UserError(f"{path}: unknown legacy torch.save protocol")
        sys_info = _unpickle(f, path, plain)[0]
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise UserError(f"{path}: big-endian torch file; not supported")
        root, storages = _unpickle(f, path)
        keys = _unpickle(f, path, plain)[0]
        data = {}
        for key in keys if isinstance(keys, list) else []:
            head = f.read(8)
            count = struct.unpack("<q", head)[0] if len(head) == 8 else -1
            ref = storages.get(str(key))
            if ref is None or count != ref.numel:
                raise UserError(f"{path}: corrupt legacy torch file (storage {key})")
            data[ref.key] = f.read(count * ref.dtype.itemsize)
    return root, data


def _tensor(ref: TensorRef, data: dict[str, bytes], path: str) -> torch.Tensor:
    """A new tensor from a storage's bytes, after checking the view lies inside the storage."""
    st = ref.storage
    if not isinstance(st, StorageRef) or not all(isinstance(v, int) and v >= 0
                                                 for v in (ref.offset, *ref.size, *ref.stride)):
        raise UserError(f"{path}: corrupt tensor record {str(ref)[:120]}")
    raw = data.get(st.key, b"")
    extent = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) + 1
    ok = len(raw) == st.numel * st.dtype.itemsize and len(ref.size) == len(ref.stride)
    if not ok or math.prod(ref.size) > st.numel or (all(ref.size) and extent > st.numel):
        raise UserError(f"{path}: corrupt tensor (storage {st.key}: {st.numel} elements, view {ref})")
    base = torch.frombuffer(bytearray(raw), dtype=st.dtype) if raw else torch.empty(0, dtype=st.dtype)
    return torch.as_strided(base, ref.size, ref.stride, ref.offset).clone()


def _table(state: dict, name: str, path: str) -> dict:
    table = state.get(name) or {}
    if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
        raise UserError(f"{path}: malformed module state ({name} is a {type(table).__name__})")
    return table


def _state_dict(node: Any, data: dict[str, bytes], path: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """nn.Module.state_dict's walk over the inert tree: own parameters, persistent buffers, then children."""
    if prefix.count(".") > MAX_DEPTH:  # the pickle memo can make a module its own child
        raise UserError(f"{path}: malformed module tree (deeper than {MAX_DEPTH} at {prefix[:80]}...)")
    state = node.state if isinstance(node, InertModule) else {}
    skip = state.get("_non_persistent_buffers_set") or set()
    buffers = {k: v for k, v in _table(state, "_buffers", path).items() if k not in skip}
    out: dict[str, torch.Tensor] = {}
    for name, ref in [*_table(state, "_parameters", path).items(), *buffers.items()]:
        if isinstance(ref, TensorRef):
            out[prefix + name] = _tensor(ref, data, path)
        elif ref is not None:
            raise UserError(f"{path}: {prefix + name} is a {type(ref).__name__}, not a tensor")
    for name, child in _table(state, "_modules", path).items():
        if child is not None:
            out.update(_state_dict(child, data, path, f"{prefix}{name}."))
    return out


def read_dall_e_pickle(path: str) -> dict[str, torch.Tensor]:
    """The state dict (dall_e's key names) of a pickled ``dall_e.encoder.Encoder``, either torch.save
    format, executing nothing from the file; one-line UserError for anything else."""
    path = str(path)
    root, data = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    if getattr(root, "qualified_name", None) != ROOT_CLASS:
        what = getattr(root, "qualified_name", None) or type(root).__name__
        raise UserError(f"{path}: holds a {what}, not a {ROOT_CLASS} module")
    return _state_dict(root, data, path)
