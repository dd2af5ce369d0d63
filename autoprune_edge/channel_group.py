"""`ChannelGroup`: one set of coupled channels that is pruned as a unit, and the kept counts it allows.

Built by `graph.PruningGraph`; read by gates, cost model, selection and compaction.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Member:
    """One coupled dimension inside a group."""

    module: str  # qualified module name
    role: str  # "out" | "in" | "norm" | "other"
    multiplier: float  # elements of this dimension per root channel (HW for conv->flatten->linear)
    root_idxs: list[int] | None = None  # the root channels that land here (None: all of them)


def tile_counts(min_keep: int, step: int, size: int) -> tuple[int, ...]:
    """min_keep rounded up to a multiple of step (at most size), every multiple above it, and size."""
    first = min(size, -(-max(min_keep, step) // step) * step)
    return tuple(sorted({first, *range(first, size, step), size}))


@dataclass
class ChannelGroup:
    index: int
    root: str
    size: int
    members: list[Member]
    min_keep: int = 1
    round_to: int = 1  # kept counts are multiples of this, or `size` (which need not be one)
    tp_group: Any = field(default=None, repr=False)
    # Root-channel subsets that land in different layers (e.g. the branches of a concat): each must keep
    # at least `segment_min` channels or a layer would be emptied.
    segments: list[list[int]] = field(default_factory=list)
    segment_min: list[int] = field(default_factory=list)
    # Channels j, j + size/ties, j + 2*size/ties, ... are kept or removed together: a grouped convolution
    # (groups=ties) sees them at the same position of its `ties` blocks, and its weight tensor can only
    # lose a column in every block at once.
    ties: int = 1
    # The kept counts this group may have, ascending, from min_keep to size (default: min_keep, then
    # multiples of round_to, then size). A target's narrow tile can add one below round_to (see PruningGraph).
    counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = tile_counts(self.min_keep, self.round_to, self.size)

    def floor_count(self, n: int) -> int:
        """The largest allowed count <= n (min_keep when n is below every allowed count)."""
        return self.counts[max(0, bisect.bisect_right(self.counts, n) - 1)]

    def next_count(self, n: int) -> int | None:
        """The smallest allowed count > n, or None at the full width."""
        i = bisect.bisect_right(self.counts, n)
        return self.counts[i] if i < len(self.counts) else None

    def lower_count(self, n: int) -> int | None:
        """The largest allowed count < n, or None at the group's floor."""
        i = bisect.bisect_left(self.counts, n)
        return self.counts[i - 1] if i > 0 else None

    def keep_top(self, scores: torch.Tensor, n: int) -> torch.Tensor:
        """Keep mask of the `n` best channels (n a multiple of `ties`; tied channels ranked by their mean)."""
        if self.ties <= 1:
            keep = torch.zeros(scores.numel(), dtype=torch.bool)
            keep[torch.argsort(scores, descending=True, stable=True)[:n]] = True
            return keep
        unit = scores.view(self.ties, -1).mean(0)
        keep_u = torch.zeros(unit.numel(), dtype=torch.bool)
        keep_u[torch.argsort(unit, descending=True, stable=True)[: n // self.ties]] = True
        return keep_u.repeat(self.ties)

    def protect(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores with each segment's best channels raised to +inf, so that any top-k keeps them."""
        if not self.segments:
            return scores
        out = scores.clone()
        for seg, m in zip(self.segments, self.segment_min):
            idx = torch.as_tensor(seg, dtype=torch.long)
            best = idx[torch.argsort(scores[idx], descending=True, stable=True)[:m]]
            out[best] = float("inf")
        return out

    def member_modules(self, role: str) -> list[str]:
        return [m.module for m in self.members if m.role == role]
