"""ONNX Runtime helpers: sessions, metadata, preprocessing and batched runs for exported vitzoo models.

The preprocessing comes from the ``data_config`` that :mod:`vitzoo.deploy.export` stores in the file's
``metadata_props`` (the record :mod:`vitzoo.deploy.metadata` defines), and goes through the same
``build_eval_transform`` the PyTorch commands use, so ``eval-onnx`` / ``infer-onnx`` reproduce ``eval`` /
``infer`` without extra flags. ONNX files from elsewhere (no vitzoo metadata) fall back to
:func:`~vitzoo.deploy.metadata.default_data_config` at the input size in the graph.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vitzoo.data import ImageFolderDataset, Loader, build_eval_transform, relay_collate
from vitzoo.data.workers import worker_init
from vitzoo.deploy.metadata import default_data_config, parse_metadata
from vitzoo.deploy.openvino_runtime import OpenVINOSession
from vitzoo.errors import UserError


def providers_for(device: str) -> list[str]:
    """'CPU' | 'GPU' | 'auto' -> ORT execution providers (GPU needs onnxruntime-gpu's CUDA provider)."""
    import onnxruntime as ort  # here, not at the top: only running a session needs it (~0.2 s to import)

    device = (device or "auto").upper()
    available = ort.get_available_providers()
    if device in ("GPU", "CUDA"):
        if "CUDAExecutionProvider" not in available:
            raise UserError("-m GPU: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); "
                            "use -m CPU")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "AUTO" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device not in ("CPU", "AUTO"):
        raise UserError(f"unknown device {device!r} for ONNX Runtime; use CPU or GPU")
    return ["CPUExecutionProvider"]


ENGINES = ("onnxruntime", "openvino")
ENGINE_HELP = ("what runs the file: onnxruntime (default), or openvino (Intel CPUs; pip install openvino): "
               "measured 4.7x ONNX Runtime's fp32 on a Xeon with AMX, in bf16 there")
ONNX_PRECISION_HELP = ("openvino only: its inference precision; auto = OpenVINO's choice (bf16 on a CPU with "
                       "bf16 units, else fp32), kept where it times faster than fp32 here (once per CPU and "
                       "file); fp32 gives ONNX Runtime's numbers. ONNX Runtime runs the file's own types")


def add_engine_args(p) -> None:
    """--engine and --precision of eval-onnx / infer-onnx."""
    p.add_argument("--engine", default="onnxruntime", choices=ENGINES, help=ENGINE_HELP)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help=ONNX_PRECISION_HELP)


def open_model(path: str | os.PathLike, device: str = "auto", engine: str = "onnxruntime", precision: str = "auto",
               threads: int | None = None, announce: bool = True):
    """A session for ``path`` in ``engine``: ONNX Runtime's, or an :class:`OpenVINOSession` with the same
    interface. What runs it is printed once on stderr when ``announce``."""
    if engine == "onnxruntime":
        if precision != "auto":
            raise UserError("--precision applies to --engine openvino; ONNX Runtime runs the file's own types "
                            "(vitzoo export --fp16 / --quantize int8 choose them)")
        return create_session(path, device, threads)
    if engine != "openvino":
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if (device or "auto").upper() in ("GPU", "CUDA"):
        raise UserError("--engine openvino runs on the CPU here; use -m CPU, or --engine onnxruntime for a GPU")
    session = OpenVINOSession(path, precision, threads)
    if announce:
        print(session.describe(), file=sys.stderr, flush=True)
    return session


def create_session(path: str | os.PathLike, device: str = "auto", threads: int | None = None):
    import onnxruntime as ort  # here, not at the top: only running a session needs it (~0.2 s to import)

    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: ORT warns about unused initialisers etc.
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers_for(device))
    except UserError:
        raise
    except Exception as e:  # protobuf parse errors, unsupported opset, ...
        raise UserError(f"{path}: cannot be loaded by ONNX Runtime ({str(e).splitlines()[0]})") from e


def session_metadata(session) -> dict[str, Any]:
    """The vitzoo metadata of a session's model (parsed JSON values), {} for foreign files."""
    return parse_metadata(dict(session.get_modelmeta().custom_metadata_map or {}))


def _input(session):
    inp = session.get_inputs()[0]
    return inp, (np.float16 if "float16" in inp.type else np.float32)


def fixed_batch(session) -> int | None:
    """The graph's batch size if it is fixed (export --batch N), else None."""
    b = _input(session)[0].shape[0]
    return b if isinstance(b, int) and b > 0 else None


def data_config_for(session, image_size: int | None = None) -> dict[str, Any]:
    """Eval preprocessing: the recorded data_config, else the graph's input size + ImageNet defaults.

    ``image_size`` (the seed's ``--image-size``) overrides the size; it must match a graph with a fixed
    spatial size, which every exported ViT has (the position embedding fixes the token count).
    """
    meta = session_metadata(session)
    dc = dict(meta.get("data_config") or {})
    shape = _input(session)[0].shape
    graph_hw = [s if isinstance(s, int) else None for s in shape[2:4]] if len(shape) == 4 else [None, None]
    if not dc:
        dc = default_data_config(graph_hw[0] or 224, graph_hw[1] or 224)
    dc["input_size"] = tuple(int(s) for s in dc["input_size"])
    if image_size:
        if graph_hw[0] and graph_hw[0] != image_size:
            raise UserError(f"--image-size {image_size} does not match the model's fixed input "
                            f"{graph_hw[0]}x{graph_hw[1]}")
        dc["input_size"] = (3, int(image_size), int(image_size))
    for k in ("mean", "std"):
        dc[k] = tuple(float(v) for v in dc[k])
    return dc


def run_session(session, x: np.ndarray) -> np.ndarray:
    """Logits (float32) for a batch; pads/splits to the graph's batch size when it is fixed."""
    inp, dtype = _input(session)
    x = np.ascontiguousarray(x, dtype=dtype)
    fixed = fixed_batch(session)
    if fixed is None or x.shape[0] == fixed:
        return np.asarray(session.run(None, {inp.name: x})[0], dtype=np.float32)
    outs = []
    for i in range(0, x.shape[0], fixed):
        chunk = x[i:i + fixed]
        n = chunk.shape[0]
        if n < fixed:  # zero-pad the tail; the padded rows are dropped below
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), dtype)], 0)
        outs.append(np.asarray(session.run(None, {inp.name: chunk})[0], dtype=np.float32)[:n])
    return np.concatenate(outs, 0)


def class_names_of(session) -> list[str]:
    return [str(c) for c in session_metadata(session).get("class_names") or []]


def evaluate_folder(session, root: str | os.PathLike, data_config: dict, class_names: list[str], *,
                    batch_size: int = 32, num_workers: int = 0, prefetch: int = 16) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (fractions, rounded as the seeds print) of ``session`` on ``root/<class>/*``.

    Uses the data module's folder dataset (same file order, same bad-file policy: skip) and eval transform
    as ``vitzoo eval``, so both commands see identical tensors.
    """
    found = {d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith(".")} \
        if os.path.isdir(root) else set()
    classes = class_names if class_names and found and found <= set(class_names) else None
    ds = ImageFolderDataset(root, build_eval_transform(data_config), classes=classes)
    # relay_collate relays bad files found in worker processes back to the dataset's bad_files;
    # --prefetch N (the seed's option) = batches decoded ahead in all, spread over the workers
    loader = Loader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=relay_collate,
                    worker_init_fn=worker_init(), prefetch_factor=max(1, prefetch // max(1, num_workers)) if num_workers else None)
    correct1 = correct5 = total = 0
    for x, y in loader:
        logits = run_session(session, x.numpy())
        k = min(5, logits.shape[1])
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        y = y.numpy()
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(1).sum())
        total += len(y)
    if total == 0:
        raise UserError(f"no images evaluated in {root}")
    return {"Top1-Acc": round(correct1 / total, 6), "Top5-Acc": round(correct5 / total, 6), "num_samples": total,
            "bad_files": dict(ds.bad_files)}
