"""Data-parallel training under `torchrun`, arranged so that N processes compute what one process does.

- Every process walks the same seeded permutation of the data each epoch; global batch b is split into
  equal contiguous shares, one per rank, so the averaged gradient is the one-process gradient.
- BatchNorm statistics are reduced over the global batch (`GlobalBatchNorm`, which also works with gloo on
  CPU, where torch's SyncBatchNorm refuses to run; on CUDA the same all-reduce goes through nccl, so one
  synchronised BatchNorm serves both).
- The process group has gloo for CPU tensors and, where CUDA exists, nccl for CUDA tensors: torchrun on
  GPUs uses nccl, and a CPU run on a GPU machine still works.
- Parameters outside the DDP module (AutoPrune's gates) get their gradients averaged by hand.
Outside torchrun everything here is a no-op.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_reduce
from torch import nn
from torch.utils.data import Dataset

from .errors import AutoPruneEdgeError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """Join the process group torchrun set up (gloo for CPU tensors, nccl for CUDA ones); single-process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        # nccl communicators are created on the first CUDA collective, so a CPU run never starts one
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size())


def epoch_order(n: int, batch_size: int, *, seed: int, epoch: int, w: World = World()) -> Iterator[list[int]]:
    """This rank's share of each global batch of one epoch, as dataset indices (the last partial batch is
    dropped). A function of (seed, epoch) only, so neither the process count nor loader workers change it."""
    if batch_size % w.size:
        raise AutoPruneEdgeError(f"batch size {batch_size} must be divisible by the {w.size} processes")
    if n < batch_size:
        batch_size = max(w.size, n - n % w.size)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    share = batch_size // w.size
    for start in range(0, n - batch_size + 1, batch_size):
        yield perm[start + w.rank * share: start + (w.rank + 1) * share].tolist()


def steps_per_epoch(dataset: Dataset, batch_size: int) -> int:
    n = len(dataset)
    return max(1, n // batch_size) if n >= batch_size else 1


def average_gradients(params: list[torch.Tensor], w: World) -> None:
    if not w.active:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(w.size)


def broadcast_(tensors: list[torch.Tensor], w: World) -> None:
    if w.active:
        for t in tensors:
            dist.broadcast(t.data, src=0)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across all processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        out_dtype = x.dtype
        x = x.float()  # statistics in fp32 under autocast too (a bf16 sum of squares loses the variance)
        dims = [0] + list(range(2, x.dim()))
        n = x.new_tensor(float(x.numel() // x.shape[1]))
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), n.view(1)])
        stats = all_reduce(stats)
        c = x.shape[1]
        total = stats[-1]
        mean = stats[:c] / total
        var = stats[c:2 * c] / total - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                mom = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * total / max(float(total) - 1.0, 1.0)
                self.running_mean.mul_(1 - mom).add_(mom * mean.detach())
                self.running_var.mul_(1 - mom).add_(mom * unbiased)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(out_dtype)


@contextlib.contextmanager
def global_batchnorm(model: nn.Module, w: World) -> Iterator[None]:
    """Swap BatchNorm layers to GlobalBatchNorm for the duration (same state dict, same parameters)."""
    swapped = []
    if w.active:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) is not GlobalBatchNorm:
                swapped.append((m, m.__class__))
                m.__class__ = type(f"Global{m.__class__.__name__}", (GlobalBatchNorm, m.__class__), {})
    try:
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls


def ddp(model: nn.Module, w: World) -> nn.Module:
    if not w.active:
        return model
    dev = next(model.parameters()).device
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


__all__ = ["World", "world", "epoch_order", "steps_per_epoch", "average_gradients", "broadcast_",
           "global_batchnorm", "ddp"]
