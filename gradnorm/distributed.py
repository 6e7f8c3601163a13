"""Data-parallel helpers. Every function is the identity in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over processes (a new tensor; ``t`` is left alone)."""
    if world_size() == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over processes (a new tensor; ``t`` is left alone)."""
    if world_size() == 1:
        return t
    return all_reduce_sum(t) / world_size()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


__all__ = [
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "is_initialized",
    "is_main_process",
    "rank",
    "world_size",
]


def setup(device: str = "auto", backend: str | None = None) -> torch.device:
    """Pick the device and, under ``torchrun`` (WORLD_SIZE > 1), join the process group.

    Each process uses ``cuda:LOCAL_RANK`` on GPUs; the backend is NCCL on GPUs and Gloo on CPUs.
    """
    import os

    from gradnorm.config import ConfigError

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={device} but no CUDA device is available; use trainer.device=cpu or auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not is_initialized():
        backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    if device == "cuda":
        return torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    return torch.device(device)


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
