"""The Torch-Pruning adapter: `SafeDependencyGraph`, a `tp.DependencyGraph` whose index mappings come from
our channel planning (see the package doc), with opaque nodes and a checked group traversal.

Torch-Pruning's `build_dependency` ends with `shape_infer.init_shape_information(self)` and
`index_mapping.update_index_mapping(self)`, and `get_pruning_group` calls the latter before each
traversal. Those module functions apply the fixed rules this package replaces (and crash on some models).
Rather than patching them for the whole process, this class runs Torch-Pruning's two methods with those
names resolved to its own methods (`_with_own_helpers`): Torch-Pruning's modules, and every plain
`tp.DependencyGraph`, stay exactly as upstream.
"""
from __future__ import annotations

import types
import typing
import warnings
from typing import Any

import torch_pruning as tp
from torch import nn
from torch_pruning import ops
from torch_pruning.dependency.group import Group

from .channels import PLANNED, Opaque
from .mappings import Block
from .planner import ChannelPlanner
from .recorder import OpRecorder


def _with_own_helpers(method: Any) -> Any:
    """Torch-Pruning's `method`, run with its module names `shape_infer` and `index_mapping` pointing at
    stand-ins that call the graph's `_init_shape_information` / `_update_index_mapping` instead.

    The function is rebuilt from the method's own code with a copy of its module namespace, so nothing of
    Torch-Pruning is modified; a Torch-Pruning that stops calling the helpers through those names fails here,
    at import, rather than silently applying its own rules."""
    code = method.__code__
    if "index_mapping" not in code.co_names or code.co_freevars:
        raise ImportError(f"unsupported Torch-Pruning version: {method.__qualname__} no longer calls "
                          "index_mapping.update_index_mapping; autoprune_edge.tracing needs Torch-Pruning 1.6.1")
    namespace = dict(method.__globals__)
    namespace["shape_infer"] = types.SimpleNamespace(init_shape_information=lambda g: g._init_shape_information())
    namespace["index_mapping"] = types.SimpleNamespace(update_index_mapping=lambda g: g._update_index_mapping())
    fn = types.FunctionType(code, namespace, method.__name__, method.__defaults__)
    fn.__kwdefaults__ = method.__kwdefaults__
    return fn


_TP_BUILD_DEPENDENCY = _with_own_helpers(tp.DependencyGraph.build_dependency)
_TP_GET_PRUNING_GROUP = _with_own_helpers(tp.DependencyGraph.get_pruning_group)


class _Walk:
    """State of one group traversal: (target, handler, indices) already admitted and a step budget."""

    def __init__(self, budget: int) -> None:
        self.seen: set[Any] = set()
        self.taken: list[Any] = []
        self.left = budget


class _Guard:
    """Sits in a dependency's first index-mapping slot: applies the planned mappings, then lets the graph
    check the result (`SafeDependencyGraph._admit`). A mapping that raises makes its op opaque.

    Torch-Pruning's traversal applies the non-empty slots in order and drops a dependency whose indices
    come out empty, so returning [] stops propagation along this dependency."""

    def __init__(self, graph: SafeDependencyGraph, dep: Any, mappings: Any) -> None:
        self.graph, self.dep, self.mappings = graph, dep, tuple(mappings)

    def __call__(self, idxs: list) -> list:
        try:
            for m in self.mappings:
                if m is not None:
                    idxs = m(idxs)
        except Exception as e:  # noqa: BLE001 - an unplanned failure: do not guess
            for n in self.graph._culprits(self.dep):
                self.graph.mark_opaque(n, "an op whose channel index mapping fails", type(e).__name__)
            return []
        return self.graph._admit(self.dep, idxs) if idxs else []


class SafeDependencyGraph(tp.DependencyGraph):
    """`tp.DependencyGraph` with shape-checked index mappings and opaque nodes (see the package doc).

    `opaque` maps each opaque `Node` to the reason every group touching it is left dense.
    """

    MAX_PASSES = 6

    def __init__(self) -> None:
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        self.opaque: dict[Any, str] = {}
        self.cascaded: set[Any] = set()  # opaque only because the channels reaching them are already unknown
        self._where: dict[Any, tuple[str, str]] = {}
        self._writes: dict[Any, tuple[Any, Any]] = {}
        self._gradfn2module: dict[Any, Any] = {}
        self.planner: ChannelPlanner | None = None  # made (and run) at the first index-mapping update
        self._mapping_dirty = True
        self._walk: _Walk | None = None

    # -- construction ----------------------------------------------------------------------------
    # Torch-Pruning builds the graph (trace, dependencies) and then calls its module-level
    # `init_shape_information` and `update_index_mapping`; for this class they reach the methods below
    # (see `_with_own_helpers`), so planning runs once the traced graph and its dependencies exist.
    def build_dependency(self, *args: Any, **kwargs: Any) -> SafeDependencyGraph:
        self._reset()
        _TP_BUILD_DEPENDENCY(self, *args, **kwargs)
        return self

    def _trace(self, model: nn.Module, example_inputs: Any, forward_fn: Any, output_transform: Any) -> Any:
        rec = OpRecorder(model)
        try:
            with rec:
                return super()._trace(model, example_inputs, forward_fn, output_transform)
        finally:
            rec.remove()
            self._where = rec.where
            self._writes = rec.writes

    def _trace_computational_graph(self, module2node: Any, output: Any, gradfn2module: Any, reused: Any,
                                   visited: Any = set()) -> Any:  # noqa: B006 - Torch-Pruning's signature
        self._gradfn2module = gradfn2module
        return super()._trace_computational_graph(module2node, output, gradfn2module, reused, visited=visited)

    # -- naming --------------------------------------------------------------------------------
    def where_of(self, node: Any) -> str:
        """A readable place for `node`: its layer, or the module and torch function that made the op."""
        if node.module in self._module2name:
            return f"{self._module2name[node.module]} {type(node.module).__name__}"
        fn_name = node.grad_fn.name() if hasattr(node.grad_fn, "name") else "?"
        rec = self._where.get(node.grad_fn)
        if rec is not None:
            return f"{rec[0] or 'model'} {rec[1]}"
        # an op inside a traced torch function (e.g. the reshape inside F.linear): name a neighbour
        seen, frontier = {node}, list(node.outputs)
        for _ in range(6):
            nxt = []
            for n in frontier:
                if n in seen:
                    continue
                seen.add(n)
                if n.module in self._module2name:
                    return f"{self._module2name[n.module]} input {fn_name}"
                r = self._where.get(n.grad_fn)
                if r is not None:
                    return f"{r[0] or 'model'} {r[1]} ({fn_name})"
                nxt.extend(n.outputs)
            frontier = nxt
        return fn_name

    def mark_opaque(self, node: Any, desc: str, detail: str = "") -> None:
        """Make `node` opaque (first reason wins); the index mappings are reinstalled before the next group."""
        if node in self.opaque:
            return
        where = self.where_of(node)
        self.opaque[node] = f"channels pass through {desc} ({where}{'; ' + detail if detail else ''}) - left dense"
        self._mapping_dirty = True

    # -- index mapping -------------------------------------------------------------------------
    def _init_shape_information(self) -> None:
        """Stands in for Torch-Pruning's split-size inference: `ChannelPlanner.plan` records split sizes
        from the recorded shapes."""

    def _update_index_mapping(self) -> None:
        """Install the planned mappings (Torch-Pruning calls this after building and before every group).

        Each dependency's first slot gets a `_Guard` around its planned mappings, the second stays empty;
        dependencies leaving an opaque node get `_Block`."""
        if self.planner is None:
            self.planner = ChannelPlanner(self, self._module2name, self._gradfn2module, self._writes)
            self.planner.plan()
        if not self._mapping_dirty:
            return
        planned: dict[int, list[Any]] = {}
        for owner, dep, slot, mapping in self.planner.links:  # in planning order: a later op's mapping wins a slot
            if owner not in self.opaque:
                planned.setdefault(id(dep), [None, None])[slot] = mapping
        for node in self.module2node.values():
            for dep in node.dependencies:
                dep.index_mapping = [_Guard(self, dep, planned.get(id(dep), (None, None))), None]
        for node in self.opaque:
            for dep in node.dependencies:
                dep.index_mapping = [Block(), None]
        self._mapping_dirty = False

    def _culprits(self, dep: Any) -> list[Any]:
        ops_ = [n for n in (dep.source, dep.target) if n.module not in self._module2name]
        return ops_ or [dep.target]

    def _admit(self, dep: Any, idxs: list) -> list:
        """Mapped indices `idxs` about to reach `dep.target`: returned if the traversal may take them, else []."""
        tgt = dep.target
        n_in, n_out = self.planner.bound.get(tgt, (None, None))
        if self.is_out_channel_pruning_fn(dep.handler):
            limit = n_out
        elif self.is_in_channel_pruning_fn(dep.handler):
            limit = n_in
        else:
            limit = None
        vals = {i.idx for i in idxs}
        # more distinct indices than any layer has channels: a mapping that multiplies them (the runaway
        # expansion that hangs the traversal on window/attention reshapes)
        if len(vals) > self.planner.max_idx or (limit is not None and (min(vals) < 0 or max(vals) >= limit)):
            for n in self._culprits(dep):
                self.mark_opaque(n, "an op whose channel index mapping goes out of range",
                                 f"{len(vals)} indices for {limit} channels")
            return []
        # Torch-Pruning skips a step only when its target was already expanded with an equal *list* of
        # indices, so the same indices in another order walk the subgraph again (swin_t: 5x the graph time).
        # Comparing sets stops that. The step budget is a backstop for models whose index sets never settle;
        # no torchvision model comes near it (at most ~250 of tens of thousands of steps).
        walk = self._walk if self._walk is not None else self._new_walk()
        key = (tgt, dep.handler, frozenset(idxs))
        if key in walk.seen:
            return []
        walk.seen.add(key)
        walk.taken.append(dep)
        walk.left -= 1
        if walk.left < 0:
            for d in walk.taken:
                for n in (d.source, d.target):
                    if n.type in PLANNED and n.module not in self._module2name:
                        self.mark_opaque(n, "an op whose channel mapping does not converge")
            raise Opaque("dependency traversal did not converge")
        return idxs

    # -- groups ------------------------------------------------------------------------------------
    def _new_walk(self) -> _Walk:
        self._walk = _Walk(50 * len(self.module2node) + 1000)
        return self._walk

    def get_pruning_group(self, module: nn.Module, pruning_fn: typing.Callable,
                          idxs: typing.Sequence[int]) -> Group:
        """Torch-Pruning's group, with every step of its traversal checked by the `_Guard`s."""
        self._new_walk()
        try:
            return _TP_GET_PRUNING_GROUP(self, module, pruning_fn, idxs)
        finally:
            self._walk = None

    def get_all_groups(self, ignored_layers: Any = None, root_module_types: Any = (ops.TORCH_CONV, ops.TORCH_LINEAR)
                       ) -> typing.Iterator[Group]:
        """Torch-Pruning's groups, enumerated until no new opaque node turns up (a node found opaque
        while enumerating changes the groups that reach it, so the whole enumeration is redone)."""
        groups: list[Group] = []
        for _ in range(self.MAX_PASSES):
            n_opaque = len(self.opaque)
            groups = []
            try:
                groups = list(super().get_all_groups(ignored_layers=list(ignored_layers or []),
                                                     root_module_types=root_module_types))
            except Opaque:
                if len(self.opaque) == n_opaque:
                    raise
                continue
            if len(self.opaque) == n_opaque:
                break
        else:
            warnings.warn("dependency groups did not settle; groups touching opaque ops are left dense")
        yield from groups


def opaque_reason(g: Any, names: dict[nn.Module, str] | None = None) -> str | None:
    """Why a group must stay dense because it reaches an opaque node of its SafeDependencyGraph."""
    dg = getattr(g, "_DG", None)
    opaque = getattr(dg, "opaque", None)
    if not opaque:
        return None
    hit = [item[0].target for item in g if item[0].target in opaque]
    if not hit:
        return None
    cascaded = getattr(dg, "cascaded", set())
    return opaque[next((n for n in hit if n not in cascaded), hit[0])]
