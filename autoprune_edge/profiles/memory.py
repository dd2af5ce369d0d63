"""Peak activation memory: tensor lifetimes over kernel execution order + a greedy arena planner.

Model of the runtime (TFLite / LiteRT and TFLite Micro both plan one arena for all activations):

* Every kernel output and every graph input is one buffer. Views/reshapes alias their source; fused
  conv+BN+activation kernels write one buffer (the intermediate conv/BN outputs never exist).
* A buffer lives from the kernel that writes it (graph inputs: from the start) to the last kernel
  that reads it (graph outputs: to the end). A kernel's output never shares memory with its inputs.
  A residual skip or a concat input therefore stays alive until the add/concat that consumes it.
* Offsets are assigned *greedy by size*: largest buffer first, each at the lowest offset that does not
  overlap a buffer with an overlapping lifetime (the strategy of TFLite Micro's GreedyMemoryPlanner
  and of LiteRT's arena planner). Sizes are aligned to 64 bytes (TFLite's tensor alignment).

Approximations (v1): execution order is the order of the eager forward pass, not the order the
converter emits; ops that run in place in the runtime are not modelled (every kernel allocates);
scratch buffers of individual kernels (im2col, XNNPACK workspaces) are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 64


@dataclass(frozen=True)
class Buffer:
    id: int
    size: int  # bytes, before alignment
    first: int  # first kernel index where it must exist (writer, or 0 for graph inputs)
    last: int  # last kernel index that reads it


@dataclass
class ArenaPlan:
    arena_bytes: int  # the planned arena size (max offset + aligned size)
    lower_bound_bytes: int  # max over time of the sum of live buffers (no planner can do better)
    largest_buffer_bytes: int
    total_buffer_bytes: int  # sum of all buffers (what no reuse at all would take)
    offsets: dict[int, int]
    buffers: list[Buffer]


def _align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


def plan_arena(buffers: list[Buffer], alignment: int = ALIGNMENT) -> ArenaPlan:
    """Greedy-by-size offset assignment for buffers with [first, last] lifetimes (inclusive)."""
    order = sorted(buffers, key=lambda b: (-_align(b.size, alignment), b.first, b.id))
    placed: list[tuple[int, int, Buffer]] = []  # (offset, aligned size, buffer)
    offsets: dict[int, int] = {}
    arena = 0
    for b in order:
        size = _align(b.size, alignment)
        if size == 0:
            offsets[b.id] = 0
            continue
        live = sorted(
            (off, sz) for off, sz, o in placed if not (o.last < b.first or b.last < o.first)
        )
        offset = 0
        for off, sz in live:
            if offset + size <= off:
                break
            offset = max(offset, off + sz)
        offsets[b.id] = offset
        placed.append((offset, size, b))
        arena = max(arena, offset + size)
    steps = sorted({b.first for b in buffers} | {b.last for b in buffers})
    lower = 0
    for s in steps:
        lower = max(lower, sum(_align(b.size, alignment) for b in buffers if b.first <= s <= b.last))
    return ArenaPlan(
        arena_bytes=arena,
        lower_bound_bytes=lower,
        largest_buffer_bytes=max((b.size for b in buffers), default=0),
        total_buffer_bytes=sum(b.size for b in buffers),
        offsets=offsets,
        buffers=list(buffers),
    )


def buffers_from_kernels(
    kernels,
    tensor_numel: dict[int, int],
    graph_inputs: list[int],
    graph_outputs: list[int],
    bytes_per_element: int,
) -> list[Buffer]:
    """Lifetimes of every kernel output and graph input, from kernels in execution order.

    ``kernels`` are :class:`autoprune_edge.profiles.fusion.Kernel` (anything with ``index``,
    ``inputs`` and ``outputs``).
    """
    first: dict[int, int] = {t: 0 for t in graph_inputs}
    last: dict[int, int] = {t: 0 for t in graph_inputs}
    end = max((k.index for k in kernels), default=0)
    for k in kernels:
        for t in k.outputs:
            first.setdefault(t, k.index)
            last[t] = max(last.get(t, k.index), k.index)
        for t in k.inputs:
            if t in first:
                last[t] = max(last.get(t, 0), k.index)
    for t in graph_outputs:
        if t in first:
            last[t] = end
    return [
        Buffer(t, tensor_numel[t] * bytes_per_element, first[t], last[t])
        for t in first
        if t in tensor_numel
    ]
