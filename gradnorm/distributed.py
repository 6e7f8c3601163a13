"""Data-parallel helpers for ``torchrun``. Every function is the identity in a single process.

Under ``torchrun --nproc_per_node=N`` each process trains on its slice of the global batch
(``trainer.batch_size`` samples per process) and DistributedDataParallel averages the network's
gradients. What the balancers need of the global batch (the task losses, the per-task gradients at
W) they average with :func:`all_reduce_mean`; docs/scaling.md explains the choices.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

from gradnorm.checks import ConfigError

__all__ = [
    "all_reduce_mean",
    "all_reduce_sum",
    "any_process",
    "barrier",
    "broadcast_object",
    "check_same_on_all_ranks",
    "cleanup",
    "is_initialized",
    "is_main_process",
    "rank",
    "setup",
    "world_size",
]


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


def any_process(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every process when ``flag`` is true on at least one (e.g. a stop signal arrived)."""
    if world_size() == 1:
        return bool(flag)
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def check_same_on_all_ranks(t: Tensor, what: str) -> None:
    """Raise ``RuntimeError`` unless ``t`` is bit-identical on every process (a cheap invariant check)."""
    if world_size() == 1:
        return
    reference = t.detach().clone()
    dist.broadcast(reference, src=0)
    differs = any_process(not torch.equal(reference, t), device=t.device)
    if differs:
        raise RuntimeError(f"{what} differ across processes: rank {rank()} has {t.tolist()}, "
                           f"rank 0 has {reference.tolist()}")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every process (any picklable object)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def setup(device: str = "auto", backend: str | None = None) -> torch.device:
    """Pick the device and, under ``torchrun`` (WORLD_SIZE > 1), join the process group.

    Each process uses ``cuda:LOCAL_RANK`` on GPUs; the backend is NCCL on GPUs and Gloo on CPUs
    unless ``backend`` names one (checked by ``config.TrainerSettings``). The tasks of a submitit job (a Hydra sweep on SLURM with
    ``hydra.launcher.tasks_per_node`` > 1) form one data-parallel run in the same way.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={device} but no CUDA device is available; use trainer.device=cpu or auto")
    if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR"):
        _export_submitit_ranks()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and device.startswith("cuda:"):
        raise ConfigError(f"trainer.device={device} pins one GPU, but torchrun started {world} processes; "
                          "use trainer.device=cuda or auto (process r takes cuda:LOCAL_RANK)")
    if world > 1 and not is_initialized():
        backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    if device == "cuda":
        return torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    return torch.device(device)


def _export_submitit_ranks() -> None:
    """In a submitit job of several tasks, set the variables torchrun would set (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from the job's environment."""
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
