"""Fitting across processes (torchrun): every rank sums its own shard, one all-reduce adds the sums."""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from models.gaussian import RunningStats

CHUNK = 1 << 26  # elements per all-reduce call: bounded communication buffers for WRN-sized sums


def init_from_environment(use_cuda: bool) -> tuple[int, int, torch.device | None]:
    """(rank, world size, this rank's device) under torchrun; (0, 1, None) when run plainly."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    device = None
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    # rank 0 scores and evaluates a category while the others wait for the next all-reduce
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(hours=3))
    return dist.get_rank(), dist.get_world_size(), device


def all_reduce_stats(stats: RunningStats) -> None:
    """After this every rank holds the sums of all ranks' images, expressed around rank 0's shift."""
    shift = stats.shift.clone()
    dist.broadcast(shift, src=0)
    stats.reshift(shift)
    n = torch.tensor([float(stats.n)], dtype=torch.float64, device=stats.sum_z.device)
    dist.all_reduce(n)
    dist.all_reduce(stats.sum_z)
    for chunk in stats.sum_zz.view(-1).split(CHUNK):
        dist.all_reduce(chunk)
    stats.n = int(n.item())


def shard(items: list, rank: int, world: int) -> list:
    """A strided, disjoint share of the items: never padded with duplicates."""
    return items[rank::world]


def end_process_group() -> None:
    """Ends the run's process group. Not with gloo before torch 2.7: there a rank could hang for good in
    destroy_process_group once its peer had destroyed the group and exited (2 of 14 two-process CPU runs on
    torch 2.6); the process's exit releases the group as well."""
    old_gloo = dist.get_backend() == "gloo" and tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 7)
    if not old_gloo:
        dist.destroy_process_group()
