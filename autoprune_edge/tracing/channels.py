"""What planning knows about the channels of each traced node, and the queries every planner shares."""
from __future__ import annotations

from typing import Any, Protocol

from torch import nn
from torch_pruning import ops

O = ops.OPTYPE
# ops whose channel mapping is planned from recorded shapes (layout_ops); all others pass channels through
PLANNED = (O.RESHAPE, O.CONCAT, O.SPLIT, O.SLICE, O.UNBIND, O.EXPAND)
CH_FIRST = (O.CONV, O.DEPTHWISE_CONV, O.BN, O.GN, O.IN, O.PRELU, O.CUSTOMIZED, O.OUTPUT)
CH_LAST = (O.LINEAR, O.LN, O.EMBED, O.MHA)


class Opaque(Exception):
    """A node whose channel mapping cannot be made exact; `desc` (optional) names what kind of op it is."""

    def __init__(self, detail: str, desc: str | None = None) -> None:
        super().__init__(detail)
        self.desc = desc


class PlannedGraph(Protocol):
    """The dependency graph being planned (a `SafeDependencyGraph`), as planning uses it."""

    module2node: dict[Any, Any]
    unwrapped_parameters: list[Any]
    opaque: dict[Any, str]
    cascaded: set[Any]

    def get_in_channels(self, module_or_node: Any) -> int | None: ...

    def get_out_channels(self, module_or_node: Any) -> int | None: ...

    def mark_opaque(self, node: Any, desc: str, detail: str = "") -> None: ...

    def where_of(self, node: Any) -> str: ...


class ChannelFacts:
    """Per node: channel count, channel dim and shape of its output, the channels its consumers expect, and
    the mappings planning decided (`links`); plus what the trace recorded that planning reads."""

    def __init__(self, graph: PlannedGraph, names: dict[nn.Module, str], gradfn2module: dict[Any, Any],
                 writes: dict[Any, tuple[Any, Any]]) -> None:
        self.graph = graph
        self.names = names  # traced module -> qualified name
        self.gradfn2module = gradfn2module
        self.writes = writes  # CopySlices grad_fn -> (region, base) geometries (see recorder.OpRecorder)
        self.ch: dict[Any, int | None] = {}
        self.pos: dict[Any, int | None] = {}
        self.shape: dict[Any, tuple[int, ...] | None] = {}
        self.in_ch: dict[Any, int | None] = {}
        self.chunks: dict[Any, dict[Any, set[int]]] = {}  # split/unbind node -> consumer -> output numbers
        # (owner node, dependency, slot, mapping): what planning decided; dropped while the owner is opaque
        self.links: list[tuple[Any, Any, int, Any]] = []
        self.bound: dict[Any, tuple[int | None, int | None]] = {}  # node -> (in, out) channels of its pruner
        self.max_idx = 1  # the most channels any layer or planned tensor has

    def pruner_ch(self, node: Any, out: bool) -> int | None:
        """Output (or input) channels of the layer behind `node`, per its Torch-Pruning pruner."""
        try:
            c = self.graph.get_out_channels(node) if out else self.graph.get_in_channels(node)
            return int(c) if c is not None else None
        except Exception:  # noqa: BLE001
            return None

    def chunk_of(self, src: Any, consumer: Any) -> int | None:
        """Which output of split/unbind `src` feeds `consumer` (None unless exactly one)."""
        nrs = self.chunks.get(src, {}).get(consumer)
        return next(iter(nrs)) if nrs and len(nrs) == 1 else None

    def edge(self, src: Any, consumer: Any | None = None, nr: int | None = None) -> tuple[int | None, int | None]:
        """(channels, channel dim) of the tensor that flows from `src` into `consumer` (or output `nr`)."""
        sizes = getattr(src.module, "split_sizes", None) if src.type in (O.SPLIT, O.UNBIND) else None
        if src in self.chunks and sizes is not None:
            if nr is None and consumer is not None:
                nr = self.chunk_of(src, consumer)
            return (int(sizes[nr]) if nr is not None and nr < len(sizes) else None), self.pos.get(src)
        return self.ch.get(src), self.pos.get(src)

    def locate(self, shape: tuple[int, ...] | None, ch: int | None, pos: int | None) -> list[int]:
        """Candidate channel dims of a tensor: the tracked one if it fits, else every dim of that size."""
        if shape is None or ch is None or ch < 1:
            return []
        if pos is not None and pos < len(shape) and shape[pos] == ch:
            return [pos]
        return [d for d, s in enumerate(shape) if s == ch]

    def link(self, owner: Any, a: Any, b: Any, a_to_b: Any, b_to_a: Any, slot: int = 0) -> None:
        """Record `a_to_b` for every dependency a -> b and `b_to_a` for every b -> a."""
        self.links += [(owner, d, slot, a_to_b) for d in a.dependencies if d.target is b]
        self.links += [(owner, d, slot, b_to_a) for d in b.dependencies if d.target is a]
