"""Feeding the training loops: worker processes, pinned memory, prefetching and an in-memory sample cache,
arranged so that the batches (order and augmentation) are a function of (seed, epoch) only.

- Order: `distributed.epoch_order`, computed in the main process; workers only fetch.
- Augmentation: every sample is drawn under its own torch seed, derived from (seed, epoch, index), with
  the caller's random state saved and restored around it. So 0, 2 or 8 workers, and 1 or N torchrun
  processes, see the same augmented images, and the training loop's own random stream (dropout) is
  never consumed by data loading.
- Cache: a dataset that says it does not augment (`augment is False`, as every dataset in `data` does) is
  decoded once and kept in memory when it fits `cache_bytes`; augmenting datasets are read every time.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, default_collate

from .device import CPU_FP32, Runtime
from .distributed import World, epoch_order


@dataclass(frozen=True)
class PipelineConfig:
    """How batches are fed; none of these settings changes a result, only how fast it comes."""

    # DataLoader worker processes; None: none for a dataset served from the memory cache (nothing to
    # decode), else min(8, cores // 2) (none on a 1-2 core machine)
    workers: int | None = None
    prefetch: int = 2  # batches each worker prepares ahead
    persistent: bool = True  # keep workers alive across epochs (they keep their warm caches)
    pin_memory: bool | None = None  # None: on when training on CUDA
    cache_bytes: int = 2 << 30  # keep decoded samples in memory up to this size (0: never)

    def worker_count(self) -> int:
        if self.workers is not None:
            return max(0, int(self.workers))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(8, cores // 2) if cores > 2 else 0


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The torch seed under which sample `index` is read in `epoch` (a fixed mix, any worker, any rank)."""
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + index * 40_503 + 97) % (2 ** 63 - 1)


class SeededSamples(Dataset):
    """Reads `(index, seed)` keys: the sample drawn under that seed, the caller's random state untouched."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        state = torch.get_rng_state()
        # the CPU generator only: torch.manual_seed would also queue a (stack-capturing) reseed of every
        # accelerator, ~1 ms per sample; augmentation draws from the CPU generator
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


class CachedSamples(Dataset):
    """A deterministic dataset's samples, read once and then served from memory."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._items: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def fill(self) -> None:
        """Read everything now (before workers fork, so they share one copy instead of each filling its own)."""
        for i in range(len(self)):
            self[i]

    def __getitem__(self, index: int):
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = self.dataset[index]
        return item


def cacheable(dataset: Dataset, budget: int) -> bool:
    """True when `dataset` declares that it does not augment and all of it fits `budget` bytes."""
    if budget <= 0 or getattr(dataset, "augment", None) is not False or len(dataset) == 0:  # type: ignore[arg-type]
        return False
    first = dataset[0]
    size = sum(t.numel() * t.element_size() for t in first if isinstance(t, torch.Tensor)) + 64
    return size * len(dataset) <= budget  # type: ignore[arg-type]


def cached(dataset: Dataset, budget: int) -> Dataset:
    """A cached view of `dataset` for one training phase, or `dataset` itself when it may not be cached."""
    return CachedSamples(dataset) if cacheable(dataset, budget) else dataset


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """This rank's batches of one epoch as lists of (index, sample seed); `set_epoch` picks the epoch."""

    def __init__(self, n: int, batch_size: int, *, seed: int, w: World = World()) -> None:
        self.n, self.batch_size, self.seed, self.w = n, batch_size, seed, w
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for idx in epoch_order(self.n, self.batch_size, seed=self.seed, epoch=self.epoch, w=self.w):
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in idx]

    def __len__(self) -> int:
        per = self.batch_size if self.n >= self.batch_size else max(self.w.size, self.n - self.n % self.w.size)
        return self.n // per if per else 0


class _Keyed(Sampler[tuple[int, int]]):
    """Attach a per-sample seed (from the position in the stream) to each index of another sampler."""

    def __init__(self, sampler: Sampler[int], seed: int) -> None:
        self.sampler, self.seed = sampler, seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, i in enumerate(self.sampler):
            yield int(i), sample_seed(self.seed, -1 - pos, int(i))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


def _loader_options(cfg: PipelineConfig, rt: Runtime, dataset: Dataset) -> dict:
    workers = 0 if cfg.workers is None and isinstance(dataset, CachedSamples) else cfg.worker_count()
    pin = cfg.pin_memory if cfg.pin_memory is not None else rt.device.type == "cuda"
    opts: dict = {"num_workers": workers, "pin_memory": bool(pin) and torch.cuda.is_available()}
    if workers > 0:
        opts.update(prefetch_factor=max(1, cfg.prefetch), persistent_workers=cfg.persistent)
        if isinstance(dataset, CachedSamples):
            dataset.fill()
    return opts


def epoch_loader(dataset: Dataset, batch_size: int, *, seed: int, w: World = World(), rt: Runtime = CPU_FP32,
                 cfg: PipelineConfig = PipelineConfig(), cache: bool = True) -> tuple[DataLoader, EpochBatches]:
    """One loader for a whole training phase; call `batches.set_epoch(e)` before iterating epoch e.
    `cache`: worth it when the phase reads the data more than once."""
    data = cached(dataset, cfg.cache_bytes) if cache else dataset
    batches = EpochBatches(len(dataset), batch_size, seed=seed, w=w)  # type: ignore[arg-type]
    # Its own generator: a DataLoader without one draws its workers' base seed from the global RNG on every
    # epoch, which would shift the stream the model's own randomness (dropout) draws from.
    loader = DataLoader(SeededSamples(data), batch_sampler=batches, collate_fn=default_collate,
                        generator=torch.Generator().manual_seed(seed), **_loader_options(cfg, rt, data))
    return loader, batches


def epoch_batches(dataset: Dataset, batch_size: int, *, seed: int, epoch: int, w: World = World()) -> Iterator:
    """The batches of one epoch read in this process (no workers): what `epoch_loader` yields for it."""
    keyed = SeededSamples(dataset)
    sampler = EpochBatches(len(dataset), batch_size, seed=seed, w=w)  # type: ignore[arg-type]
    sampler.set_epoch(epoch)
    for keys in sampler:
        yield default_collate([keyed[k] for k in keys])


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, rt: Runtime = CPU_FP32,
                cfg: PipelineConfig = PipelineConfig()) -> DataLoader:
    """A plain pass over `dataset` (evaluation, BatchNorm statistics, importance scores), in the order
    torch's seeded DataLoader has always given, each sample read under its own seed."""
    gen = torch.Generator().manual_seed(seed)
    order: Sampler[int] = RandomSampler(dataset, generator=gen) if shuffle else SequentialSampler(dataset)
    return DataLoader(SeededSamples(dataset), batch_size=batch_size, sampler=_Keyed(order, seed), generator=gen,
                      drop_last=False, collate_fn=default_collate, **_loader_options(cfg, rt, dataset))


__all__ = ["PipelineConfig", "SeededSamples", "CachedSamples", "EpochBatches", "epoch_loader", "epoch_batches",
           "make_loader", "sample_seed", "cacheable", "cached"]
