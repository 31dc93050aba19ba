"""torch.distributed set-up for runs launched with ``torchrun`` (any number of processes and nodes).

``torchrun`` exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; a plain ``python``
launch has none of them and runs as a single process. NCCL is used for CUDA, gloo for CPU.
Only rank 0 writes files (checkpoints, logs, metrics): callers ask :func:`is_main`.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from vitzoo.errors import UserError


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return get_rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile / DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:LOCAL_RANK when a GPU is visible, else cpu; 'cuda' without a GPU is a user error."""
    device = (device or "auto").lower()
    if device in ("gpu",):
        device = "cuda"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("device: cuda was requested but no CUDA GPU is visible (use --device cpu)")
        return torch.device("cuda", local_rank if device == "cuda" else int(device.split(":")[1]))
    if device != "cpu":
        raise UserError(f"device: expected auto, cuda or cpu, got {device!r}")
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> tuple[int, int, int, torch.device]:
    """Join the process group if launched by torchrun; return (rank, world_size, local_rank, device).

    ``timeout_s`` bounds how long a collective waits for a process that hangs (a dead one is noticed at
    once: its sockets close).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not is_dist():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s), **kwargs)
    elif dev.type == "cuda":
        torch.cuda.set_device(dev)
    return rank, world_size, local_rank, dev


class PeerLost(UserError):
    """Another process of the run died or hung: this one stops too, saying so, instead of waiting forever."""


def is_peer_error(e: BaseException) -> bool:
    """A failed collective (gloo/NCCL: connection reset, timeout) rather than a bug in this process."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(
        w in text for w in ("Connection reset", "Connection closed", "Broken pipe", "timed out", "NCCL", "gloo"))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (no-op in a single process); returns ``t``."""
    if is_dist():
        try:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        except RuntimeError as e:
            raise PeerLost(lost_message(e)) from None
    return t


def all_gather_objects(obj: object) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_dist():
        return [obj]
    out: list = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(out, obj)
    except RuntimeError as e:
        raise PeerLost(lost_message(e)) from None
    return out


def lost_message(e: BaseException) -> str:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    first = first.split("] ", 1)[-1].split(". This is typically", 1)[0]  # drop gloo's source path and advice
    return f"rank {get_rank()}: another process of this run stopped or hung ({first})"


def cleanup() -> None:
    """Leave the process group (after a barrier, unless a peer is gone: then nobody would arrive)."""
    if is_dist():
        try:
            dist.barrier()
        except RuntimeError:
            pass
        dist.destroy_process_group()
