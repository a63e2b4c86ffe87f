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


def cross_rank_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """BatchNorm in training mode over the global batch of every rank: what one process gives on the whole
    batch, as torch's SyncBatchNorm (CUDA only) does. One all-reduce of the per-channel (sum, sum of squares,
    count) forward, and of their gradients backward (torch.distributed.nn keeps it differentiable).
    Statistics in float32 whatever the autocast dtype. x: (N, C, ...)."""
    from torch.distributed.nn.functional import all_reduce

    dims = [0, *range(2, x.dim())]
    channels = x.shape[1]
    x32 = x.float()
    count = torch.full((1,), x.numel() / channels, device=x.device)
    stats = all_reduce(torch.cat([x32.sum(dims), x32.square().sum(dims), count]))
    n = stats[-1]
    mean = stats[:channels] / n
    var = (stats[channels:2 * channels] / n - mean.square()).clamp_min(0)  # biased, as BN normalises
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = (1 / float(bn.num_batches_tracked)) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_((var.detach() * n / (n - 1)).to(bn.running_var.dtype), momentum)
    shape = (1, channels, *[1] * (x.dim() - 2))
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
            return cross_rank_batch_norm(bn, x) if bn.training else train_forward(bn, x)

        bn.forward = forward
    try:
        yield DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      forward_sync_buffers=False)
    finally:
        for bn in norms:
            del bn.forward
