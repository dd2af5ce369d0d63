"""Index mappings installed on dependencies: Torch-Pruning's own mapping classes, parameterised from our planning."""
from __future__ import annotations

from typing import Any

# Torch-Pruning's mapping classes are private to it but are exactly the offset rules a concat or slice needs
from torch_pruning.dependency.index_mapping import _ConcatIndexMapping, _SliceIndexMapping

from .shapes import offsets


class Block:
    """Indices never leave an opaque node."""

    def __call__(self, idxs: list) -> list:
        return []


class LiveMapping:
    """A Torch-Pruning offset mapping whose parameters are read from the op when it is applied.

    Torch-Pruning's pruners shrink `concat_sizes` after each pruning step; building the mapping at call
    time keeps its offsets in step without re-planning the graph."""

    def __init__(self, op: Any, kind: str, reverse: bool, i: int = 0) -> None:
        self.op, self.kind, self.reverse, self.i = op, kind, reverse, i

    def __call__(self, idxs: list) -> list:
        op, i = self.op, self.i
        if self.kind == "concat":  # forward: input i -> concat output
            m = _ConcatIndexMapping(offset=offsets(op.concat_sizes)[i:i + 2], reverse=self.reverse)
        else:  # slice, forward: input -> slice output
            m = _SliceIndexMapping(dim=op.dim, start=op.start, step=op.step, end=op.end, reverse=self.reverse)
        return m(idxs)
