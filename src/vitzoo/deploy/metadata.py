"""What an exported file records about its model, stated once for the writer and every reader.

:mod:`vitzoo.deploy.export` writes this record into each file and :mod:`vitzoo.deploy.onnx_runtime` reads
it back; both import the keys and the encoding from here, so neither imports the other. The record is
string -> string, the shape ONNX ``metadata_props`` allows, with structured values JSON-encoded:

- ``arch``, ``num_classes``, ``model_kwargs`` (JSON): enough to rebuild the model;
- ``data_config`` (JSON: input_size, crop_pct, mean, std, interpolation) and ``class_names`` (JSON): the
  eval preprocessing and labels, so ONNX Runtime reproduces ``vitzoo eval`` / ``infer`` without flags;
- ``gelu`` (``exact`` | ``tanh``), ``batch`` (``dynamic`` | N), ``dtype`` (``float32`` | ``float16``) and
  ``producer``: how the file was made.

TorchScript and torch.export files carry the same record as JSON in an extra file named ``META_FILE``.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from torch import nn

from vitzoo.constants import IMAGENET_MEAN, IMAGENET_STD
from vitzoo.version import __version__

META_FILE = "vitzoo_meta.json"  # name of the TorchScript / torch.export extra file
INPUT_NAME, OUTPUT_NAME = "input", "logits"  # the graph's input / output names
JSON_KEYS = ("model_kwargs", "data_config", "class_names")  # values stored as JSON text


def default_data_config(height: int = 224, width: int = 224) -> dict[str, Any]:
    """Eval preprocessing for a file that records none (an ONNX model from elsewhere).

    DeiT's eval recipe: ImageNet mean/std, bicubic resize, centre crop of 0.875, at the graph's input size.
    """
    return {"input_size": (3, height, width), "crop_pct": 0.875, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "interpolation": "bicubic"}


def export_metadata(model: nn.Module, meta: dict | None = None, *, fix_gelu: bool = False,
                    batch: str = "dynamic", fp16: bool = False) -> dict[str, str]:
    """The record for ``model``: checkpoint ``meta`` first, the model's own attributes as fallback."""
    meta = meta or {}
    data_config = meta.get("data_config") or getattr(model, "data_config", None) or {}
    data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(data_config).items()}
    return {
        "arch": str(meta.get("arch") or getattr(model, "arch", "") or type(model).__name__),
        "num_classes": str(int(getattr(model, "num_classes", 0) or meta.get("num_classes") or 0)),
        "model_kwargs": json.dumps(meta.get("model_kwargs") or getattr(model, "model_kwargs", {}) or {}),
        "data_config": json.dumps(data_config),
        "class_names": json.dumps(list(meta.get("class_names") or [])),
        "gelu": "tanh" if fix_gelu else "exact",
        "producer": f"vitzoo {__version__} (torch {torch.__version__})",
        "batch": str(batch),
        "dtype": "float16" if fp16 else "float32",
    }


def parse_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`export_metadata`; unknown keys kept as strings, malformed values emptied."""
    out: dict[str, Any] = dict(props)
    for k in JSON_KEYS:
        if k in out:
            try:
                out[k] = json.loads(out[k])
            except (TypeError, ValueError):
                out[k] = {} if k != "class_names" else []
    if "num_classes" in out:
        try:
            out["num_classes"] = int(out["num_classes"])
        except ValueError:
            out["num_classes"] = 0
    return out


def read_torchscript_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The vitzoo metadata of a TorchScript file written by ``vitzoo export`` ({} if none)."""
    extra = {META_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return parse_metadata(json.loads(extra[META_FILE])) if extra[META_FILE] else {}
