"""Running one `imgcls train` as several processes under ``torchrun``: torch.distributed's own
process group and DistributedDataParallel, no home-made layer. Rank 0 writes the run; every
rank reads its shard of the same per-epoch order (see ``data.loader``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (NCCL on GPUs, gloo on
    CPUs); a plain single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def broadcast(obj: T, info: DistInfo) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not info.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: T, info: DistInfo) -> list[T]:
    """Every rank's ``obj``, in rank order."""
    if not info.active:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def finish(info: DistInfo) -> None:
    if info.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def weights_checksum(model: torch.nn.Module) -> float:
    """A number that differs when the parameters differ (to prove the ranks agree). Buffers
    are left out: DDP broadcasts rank 0's BatchNorm statistics before every step, and rank 0's
    are the ones saved."""
    with torch.no_grad():
        return float(sum(p.double().abs().sum() * (i + 1)
                         for i, p in enumerate(model.parameters())))
