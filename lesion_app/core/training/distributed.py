"""Data-parallel training under ``torchrun`` (PyTorch's DistributedDataParallel), and device choice.

Under ``torchrun`` every process joins one group (:func:`init_distributed`); rank 0 alone validates,
publishes, checkpoints and reports, and broadcasts its decisions (:func:`from_rank0`) so every rank runs the
same epochs. A plain run is a group of one and none of this costs anything.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU when there is one, so the same command trains on a laptop and on a GPU machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when launched by ``torchrun``, else None (a plain single-process run)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: str) -> str:
    """Joins the ``torchrun`` process group and returns this process's device.

    A GPU run uses ``cuda:LOCAL_RANK`` (one GPU per process) over NCCL; a CPU run uses gloo. Without
    ``torchrun`` nothing happens and ``device`` comes back as it was, so plain runs stay single-process.
    """
    env = torchrun_env()
    if env is None:
        return device
    _, _, local_rank = env
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return str(resolved)


def destroy_distributed() -> None:
    """Leaves the process group once every rank is done, so none exits while another still talks to it."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group; ``(0, 1)`` when training in one process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank: the decisions that must not diverge (stop, best epoch) are rank 0's."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
