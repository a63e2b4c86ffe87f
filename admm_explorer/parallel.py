"""Data-parallel runs under torchrun: one process per device, DistributedDataParallel, rank 0 writes.

    torchrun --nproc_per_node=N -m admm_explorer run recipe.yaml --out DIR

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain run is a world of one and never touches
torch.distributed. Every rank holds the whole model and the same ADMM state: each trains on its shard of
every global batch (data.BatchPlan), DDP averages the gradients, so the weights stay identical on every
rank and so do the Z-step, U-step, rho schedule and masks computed from them. The per-batch figures,
evaluations and the stop flag are summed over ranks; only rank 0 writes the run folder.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def sum(self, t: Tensor) -> Tensor:
        """t summed over ranks (in place; t itself in a world of one)."""
        if self.size > 1:
            torch.distributed.all_reduce(t)
        return t

    def close(self) -> None:
        """Leave the process group (at the end of a torchrun command; NCCL warns, or waits, otherwise)."""
        if self.size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    @contextmanager
    def rank_zero_first(self):
        """Rank 0 runs the block before the others (a download, a cache it fills); they follow after it."""
        if self.size > 1 and not self.main:
            torch.distributed.barrier()
        yield
        if self.size > 1 and self.main:
            torch.distributed.barrier()

    def share(self, obj):
        """Rank 0's obj on every rank (any picklable object)."""
        if self.size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        return box[0]


SINGLE = World()


def world() -> World:
    """This process's place in a torchrun launch, joining the process group on the first call (gloo for CPU
    tensors, NCCL for CUDA ones when CUDA is there); a world of one outside torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return SINGLE
    dist = torch.distributed
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def cross_rank_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, world: World) -> Tensor:
    """BatchNorm in training mode over the global batch of every rank: what one process gives on the whole
    batch. On CUDA this is torch's SyncBatchNorm function. On the CPU, where that has no kernel, the same
    scheme in plain ops: each rank's count, mean and variance per channel (two passes over its shard), one
    all-gather of them, and the global mean and variance combined from the gathered values (Chan et al.'s
    parallel variance: no sum of squares that cancels when the mean is large beside the spread);
    torch.distributed.nn's all_gather is differentiable, so the gradient sees the global statistics too.
    In float32 whatever the autocast dtype. x: (N, C, ...)."""
    factor = bn.momentum
    if bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative average, as BatchNorm
            factor = 1.0 / bn.num_batches_tracked.item()
    running = (bn.running_mean, bn.running_var) if bn.track_running_stats else (None, None)
    if x.is_cuda:
        from torch.nn.modules._functions import SyncBatchNorm

        return SyncBatchNorm.apply(x, bn.weight, bn.bias, *running, bn.eps, factor or 0.0,
                                   torch.distributed.group.WORLD, world.size)
    from torch.distributed.nn.functional import all_gather

    dims = [0, *range(2, x.dim())]
    channels = x.shape[1]
    shape = (1, channels, *[1] * (x.dim() - 2))
    x32 = x.float()
    local_mean = x32.mean(dims)
    local_var = (x32 - local_mean.view(shape)).square().mean(dims)
    count = torch.full((channels,), x.numel() / channels, device=x.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in torch 2.14, still the autograd one
        counts, means, variances = torch.stack(all_gather(torch.stack([count, local_mean, local_var]))).unbind(1)
    n = counts.sum(0)  # (C,), every entry the global count
    mean = (counts * means).sum(0) / n
    var = (counts * (variances + (means - mean).square())).sum(0) / n  # biased, as BN normalises
    if bn.track_running_stats:
        with torch.no_grad():
            bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), factor)
            bn.running_var.lerp_((var.detach() * n / (n - 1)).to(bn.running_var.dtype), factor)
    y = (x32 - mean.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(x.dtype)


@contextmanager
def data_parallel(model: nn.Module, world: World, device: torch.device):
    """While open: the model wrapped in DistributedDataParallel (yielded), every BatchNorm in it normalising
    over the global batch; the bare model (a world of one) otherwise. The bare module keeps its Parameters,
    so the ADMM penalty, MaskGuard's hooks and the optimiser act on the same tensors DDP reduces.
    Buffers are not broadcast: the running statistics are computed from global sums, equal on every rank."""
    if world.size == 1:
        yield model
        return
    from torch.nn.parallel import DistributedDataParallel

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        train_forward = type(bn).forward

        def forward(x, bn=bn, train_forward=train_forward):
            return cross_rank_batch_norm(bn, x, world) if bn.training else train_forward(bn, x)

        bn.forward = forward
    try:
        yield DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      forward_sync_buffers=False)
    finally:
        for bn in norms:
            del bn.forward
