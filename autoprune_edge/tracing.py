"""A Torch-Pruning dependency graph that refuses to guess channel mappings.

Torch-Pruning (1.6.1) maps channel indices through reshapes, concats, splits and slices with rules that
assume NCHW tensors and channels on dim 1. Elsewhere it crashes (channel shuffle: ZeroDivisionError;
last-dim concat: TypeError), silently couples the wrong channels (identity through a shuffle), or expands
index lists without bound (window partitions / attention reshapes that fold channels into other dims).

`SafeDependencyGraph` decides every such mapping from the shapes autograd actually recorded (the input
and output sizes of each op) and the channel counts of the layers around it:

* a reshape that keeps the channel dim whole is an identity; one that merges the channel dim with the
  dims right after it (conv -> flatten -> linear) is Torch-Pruning's flatten mapping; one that splits it
  back (its inverse) is the unflatten mapping;
* a concat along the channel dim maps offsets; a split along it stays opaque (its sizes are constants
  of the model's code); along any other dim either is an identity (as is a slice along another dim, or
  one that takes every channel);
* a slice that takes only part of the channels (`x[:, 0:c]`), or an in-place write into part of them
  (`x[:, :c] += y`, `x[:, :c] = 0`: autograd's CopySlices, located from the view the recorder saw being
  written), has its bounds fixed in the model's code: after pruning they would select other channels;
* an element-wise op whose inputs carry different channel counts couples nothing sensible.

Anything else, and any mapping that raises or lands outside a layer's channels while groups are
enumerated, makes the node *opaque*: indices enter it (so every group that reaches it can be recognised)
but never leave it. Groups that touch an opaque node are reported by `opaque_reason` and left dense by
`PruningGraph`; all other groups keep their exact Torch-Pruning mappings.
"""
from __future__ import annotations

import contextlib
import math
import typing
import warnings
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode
from torch_pruning import ops
from torch_pruning.dependency import index_mapping as _tp_index_mapping
from torch_pruning.dependency import shape_infer as _tp_shape_infer
from torch_pruning.dependency.group import Group
from torch_pruning.dependency.index_mapping import (
    _ConcatIndexMapping,
    _FlattenIndexMapping,
    _SliceIndexMapping,
)

O = ops.OPTYPE
_PLANNED = (O.RESHAPE, O.CONCAT, O.SPLIT, O.SLICE, O.UNBIND, O.EXPAND)
_CH_FIRST = (O.CONV, O.DEPTHWISE_CONV, O.BN, O.GN, O.IN, O.PRELU, O.CUSTOMIZED, O.OUTPUT)
_CH_LAST = (O.LINEAR, O.LN, O.EMBED, O.MHA)

_DESC = {
    O.RESHAPE: "a reshape/view that mixes channels with other dims",
    O.CONCAT: "a concat whose channel layout cannot be tracked",
    O.SPLIT: "a split/chunk whose channel layout cannot be tracked",
    O.SLICE: "a slice whose channel layout cannot be tracked",
    O.UNBIND: "an unbind whose channel layout cannot be tracked",
    O.EXPAND: "an expand that broadcasts the channel dim",
}


# ---------------------------------------------------------------------------------------------------
# Index mappings: Torch-Pruning's own mapping classes, parameterised from our planning
# ---------------------------------------------------------------------------------------------------
class _Block:
    """Indices never leave an opaque node."""

    def __call__(self, idxs: list) -> list:
        return []


def _offsets(sizes: list[int]) -> list[int]:
    out = [0]
    for s in sizes:
        out.append(out[-1] + int(s))
    return out


class _LiveMapping:
    """A Torch-Pruning offset mapping whose parameters are read from the op when it is applied.

    Torch-Pruning's pruners shrink `concat_sizes` after each pruning step; building the mapping at call
    time keeps its offsets in step without re-planning the graph."""

    def __init__(self, op: Any, kind: str, reverse: bool, i: int = 0) -> None:
        self.op, self.kind, self.reverse, self.i = op, kind, reverse, i

    def __call__(self, idxs: list) -> list:
        op, i = self.op, self.i
        if self.kind == "concat":  # forward: input i -> concat output
            m = _ConcatIndexMapping(offset=_offsets(op.concat_sizes)[i:i + 2], reverse=self.reverse)
        else:  # slice, forward: input -> slice output
            m = _SliceIndexMapping(dim=op.dim, start=op.start, step=op.step, end=op.end, reverse=self.reverse)
        return m(idxs)


# ---------------------------------------------------------------------------------------------------
# Where each op came from (module path + the torch function that made it), for readable reasons
# ---------------------------------------------------------------------------------------------------
class _OpRecorder(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.where: dict[Any, tuple[str, str]] = {}
        # CopySlices grad_fn -> geometries of the region written in place and of its base (see `_region`)
        self.writes: dict[Any, tuple[Any, Any]] = {}
        self._stack: list[str] = []
        self._hooks: list[Any] = []
        for name, m in model.named_modules():
            self._hooks.append(m.register_forward_pre_hook(self._push(name)))
            self._hooks.append(m.register_forward_hook(self._pop))

    def _push(self, name: str) -> Any:
        def hook(*_: Any) -> None:
            self._stack.append(name)
        return hook

    def _pop(self, *_: Any) -> None:
        if self._stack:
            self._stack.pop()

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        write = None
        with contextlib.suppress(Exception):
            write = self._region(name, args)
        out = func(*args, **(kwargs or {}))
        with contextlib.suppress(Exception):  # bookkeeping must never break the model
            here = (self._stack[-1] if self._stack else "", name)
            if write is not None:
                base, before, geometry = write
                g = base.grad_fn
                if g is not None and g is not before and "CopySlices" in g.name() and g not in self.writes:
                    self.writes[g] = geometry
                    self.where.setdefault(g, here)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for t in outs:
                g = getattr(t, "grad_fn", None) if isinstance(t, torch.Tensor) else None
                if g is not None and g not in self.where:
                    self.where[g] = here
        return out

    @staticmethod
    def _region(name: str, args: Any) -> tuple[torch.Tensor, Any, tuple[Any, Any]] | None:
        """(base, its grad_fn before the write, (region, base) geometries) of an in-place write into a view
        of a tensor, which autograd records as `CopySlices` on the base (slice assignment, `x[:, :c] += y`,
        an in-place op on a view); a geometry is (sizes, strides, storage offset)."""
        if not args or not isinstance(args[0], torch.Tensor) or not any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return None
        t = args[0]
        if name == "__setitem__":
            with torch.no_grad():
                region = t[args[1]]
            if not region._is_view():  # advanced indexing: an index_put, not a view write
                return None
        elif (name.endswith("_") and not name.endswith("__")) or (name.startswith("__i") and name.endswith("__")):
            region = t
        else:
            return None
        if not region._is_view() or region._base is None:
            return None
        base = region._base

        def geo(v: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...], int]:
            return tuple(v.shape), tuple(v.stride()), int(v.storage_offset())

        return base, base.grad_fn, (geo(region), geo(base))


# ---------------------------------------------------------------------------------------------------
# Shape helpers
# ---------------------------------------------------------------------------------------------------
def _sizes(v: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(s) for s in v)
    except Exception:  # noqa: BLE001
        return None


def _out_shape(grad_fn: Any, i: int = 0) -> tuple[int, ...] | None:
    try:
        return _sizes(grad_fn._input_metadata[i].shape)
    except Exception:  # noqa: BLE001
        return None


def _signed(v: Any) -> int | None:
    """autograd saves negative ints as unsigned 64-bit values."""
    if v is None:
        return None
    v = int(v)
    return v - 2 ** 64 if v >= 2 ** 63 else v


def _norm_dim(d: Any, ndim: int) -> int | None:
    d = _signed(d)
    if d is None or not -ndim <= d < ndim:
        return None
    return d % ndim


def _blocks(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Minimal groups of consecutive dims of `a` and `b` with equal products (how a reshape regroups)."""
    if 0 in a or 0 in b:
        return None
    i = j = 0
    out = []
    while i < len(a) or j < len(b):
        ia, jb, pa, pb = [], [], 1, 1
        if i < len(a):
            ia.append(i)
            pa *= a[i]
            i += 1
        if j < len(b):
            jb.append(j)
            pb *= b[j]
            j += 1
        while pa != pb:
            if pa < pb and i < len(a):
                ia.append(i)
                pa *= a[i]
                i += 1
            elif pb < pa and j < len(b):
                jb.append(j)
                pb *= b[j]
                j += 1
            else:
                return None
        out.append((ia, jb))
    return out


def _unique(vals: list[Any]) -> Any:
    """The common value of the known (non-None) entries; None when none is known or they disagree."""
    known = {v for v in vals if v is not None}
    return known.pop() if len(known) == 1 else None


class _Opaque(Exception):
    """A node whose channel mapping cannot be made exact; `desc` (optional) names what kind of op it is."""

    def __init__(self, detail: str, desc: str | None = None) -> None:
        super().__init__(detail)
        self.desc = desc


def _first_free(deps: list[Any], target: Any, taken: set[int]) -> Any:
    """The first dependency in `deps` towards `target` that is not in `taken` (ids); it is then taken."""
    for d in deps:
        if d.target is target and id(d) not in taken:
            taken.add(id(d))
            return d
    return None


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
    """`tp.DependencyGraph` with shape-checked index mappings and opaque nodes (see the module doc).

    `opaque` maps each opaque `Node` to the reason every group touching it is left dense.
    """

    MAX_PASSES = 6

    def __init__(self) -> None:
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        self.opaque: dict[Any, str] = {}
        self.cascaded: set[Any] = set()  # opaque only because the channels reaching them are already unknown
        self._ch: dict[Any, int | None] = {}
        self._pos: dict[Any, int | None] = {}
        self._shape: dict[Any, tuple[int, ...] | None] = {}
        self._in_ch: dict[Any, int | None] = {}
        self._chunks: dict[Any, dict[Any, set[int]]] = {}  # split/unbind node -> consumer -> output numbers
        # (owner node, dependency, slot, mapping): what planning decided; dropped while the owner is opaque
        self._links: list[tuple[Any, Any, int, Any]] = []
        self._where: dict[Any, tuple[str, str]] = {}
        self._writes: dict[Any, tuple[Any, Any]] = {}
        self._gradfn2module: dict[Any, Any] = {}
        self._planned = False
        self._mapping_dirty = True
        self._bound: dict[Any, tuple[int | None, int | None]] = {}
        self._max_idx = 1
        self._walk: _Walk | None = None

    # -- construction ----------------------------------------------------------------------------
    # Torch-Pruning builds the graph (trace, dependencies) and then calls its module-level
    # `init_shape_information` and `update_index_mapping`; both are routed to the methods below for this
    # class (see `_route_tp_helpers`), so planning runs once the traced graph and its dependencies exist.
    def build_dependency(self, *args: Any, **kwargs: Any) -> SafeDependencyGraph:
        self._reset()
        super().build_dependency(*args, **kwargs)
        return self

    def _trace(self, model: nn.Module, example_inputs: Any, forward_fn: Any, output_transform: Any) -> Any:
        rec = _OpRecorder(model)
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
    def _where_of(self, node: Any) -> str:
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
        if node in self.opaque:
            return
        where = self._where_of(node)
        self.opaque[node] = f"channels pass through {desc} ({where}{'; ' + detail if detail else ''}) - left dense"
        self._mapping_dirty = True

    # -- planning: channel counts, channel dims and the mapping of every reshaping op ------------
    def _order(self) -> list[Any]:
        order, state = [], {}
        for root in self.module2node.values():
            if root in state:
                continue
            stack = [(root, iter(root.inputs))]
            state[root] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    state[node] = 2
                    order.append(node)
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(nxt.inputs)))
        return order

    def _pruner_ch(self, node: Any, out: bool) -> int | None:
        try:
            c = self.get_out_channels(node) if out else self.get_in_channels(node)
            return int(c) if c is not None else None
        except Exception:  # noqa: BLE001
            return None

    def _chunk_of(self, src: Any, consumer: Any) -> int | None:
        nrs = self._chunks.get(src, {}).get(consumer)
        return next(iter(nrs)) if nrs and len(nrs) == 1 else None

    def _edge(self, src: Any, consumer: Any | None = None, nr: int | None = None) -> tuple[int | None, int | None]:
        """(channels, channel dim) of the tensor that flows from `src` into `consumer` (or output `nr`)."""
        sizes = getattr(src.module, "split_sizes", None) if src.type in (O.SPLIT, O.UNBIND) else None
        if src in self._chunks and sizes is not None:
            if nr is None and consumer is not None:
                nr = self._chunk_of(src, consumer)
            return (int(sizes[nr]) if nr is not None and nr < len(sizes) else None), self._pos.get(src)
        return self._ch.get(src), self._pos.get(src)

    def _locate(self, shape: tuple[int, ...] | None, ch: int | None, pos: int | None) -> list[int]:
        """Candidate channel dims of a tensor: the tracked one if it fits, else every dim of that size."""
        if shape is None or ch is None or ch < 1:
            return []
        if pos is not None and pos < len(shape) and shape[pos] == ch:
            return [pos]
        return [d for d, s in enumerate(shape) if s == ch]

    def _plan(self) -> None:
        order = self._order()
        # consumers of each output of a multi-output op
        for node in order:
            if node.type in (O.SPLIT, O.UNBIND):
                per: dict[Any, set[int]] = {}
                for o in node.outputs:
                    nrs = {int(nr) for fn, nr in getattr(o.grad_fn, "next_functions", ()) if fn is node.grad_fn}
                    per.setdefault(o, set()).update(nrs)
                self._chunks[node] = per
        # channels each node's consumers expect (module layers only, through element-wise ops)
        for node in reversed(order):
            c = self._pruner_ch(node, out=False)
            if c is None and node.type not in _PLANNED:
                c = _unique([self._in_ch.get(o) for o in node.outputs])
            self._in_ch[node] = c
        bounds = []
        taint: dict[Any, Any] = {}  # node with unknown channels -> the opaque node upstream that caused it
        for node in order:
            origin = next((taint[i] for i in node.inputs if i in taint), None)
            after = f"after {self._where_of(origin)}" if origin is not None else ""
            try:
                self._plan_node(node, after)
            except _Opaque as e:
                self.mark_opaque(node, e.desc or _DESC.get(node.type, "an op"),
                                 ", ".join(filter(None, [str(e), after])))
                self._ch[node], self._pos[node] = None, None
            except Exception as e:  # noqa: BLE001 - anything unexpected: do not guess
                self.mark_opaque(node, _DESC.get(node.type, "an op"), f"{type(e).__name__}: {e}")
                self._ch[node], self._pos[node] = None, None
            if node in self.opaque:
                taint[node] = origin if origin is not None else node
                if origin is not None:
                    self.cascaded.add(node)
            elif self._ch.get(node) is None and origin is not None and node not in self._chunks:
                taint[node] = origin
            bi, bo = self._pruner_ch(node, out=False), self._pruner_ch(node, out=True)
            self._bound[node] = (bi, bo)
            bounds += [b for b in (bi, bo, self._ch.get(node)) if b]
        self._max_idx = max(bounds + [1])

    def _plan_node(self, node: Any, after: str = "") -> None:
        t = node.type
        gf = node.grad_fn
        shape = _sizes(node.module.shape) if t == O.PARAMETER else _out_shape(gf)
        self._shape[node] = shape
        ch = self._pruner_ch(node, out=True)
        if ch is not None or t in _CH_FIRST + _CH_LAST + (O.PARAMETER, O.LSTM):
            pos = None
            if shape and ch is not None:
                if t in _CH_FIRST and len(shape) >= 2:
                    pos = 1
                elif t in _CH_LAST:
                    pos = len(shape) - 1
                elif t == O.PARAMETER:
                    pos = _norm_dim(node.pruning_dim, len(shape))
                if pos is not None and shape[pos] != ch:
                    pos = None
            self._ch[node], self._pos[node] = ch, pos
            return
        ins = [self._edge(i, node) for i in node.inputs]
        c_in = _unique([c for c, _ in ins])
        p_in = _unique([p for _, p in ins])
        if t == O.RESHAPE:
            return self._plan_reshape(node, c_in, p_in)
        if t == O.CONCAT:
            return self._plan_concat(node)
        if t == O.SPLIT or t == O.UNBIND:
            return self._plan_split(node, c_in, p_in)
        if t == O.SLICE:
            return self._plan_slice(node, c_in, p_in)
        if t == O.EXPAND:
            return self._plan_expand(node, c_in, p_in)
        if "CopySlices" in (gf.name() if hasattr(gf, "name") else ""):
            partial = self._partial_write(node)
            if partial is not None:
                raise _Opaque(partial, "an in-place write into part of the channels (slice assignment)")
        # element-wise (add, mul, activations, permute, pooling, ...): channels pass unchanged
        known = {c for c, _ in ins if c is not None}
        if len(known) > 1:
            self.mark_opaque(node, "an op that combines tensors with different channel counts",
                             ", ".join(filter(None, ["channels " + "/".join(str(c) for c in sorted(known)), after])))
            self._ch[node], self._pos[node] = None, None
            return
        if c_in is not None and shape is not None and c_in not in shape and not (
                node.outputs and all(o.module in self._module2name and self._in_ch.get(o) == c_in
                                     for o in node.outputs)):
            # e.g. a functional linear/conv whose weight is not a traced layer, a reduction over the channel
            # dim, channel padding. (The matmul inside nn.Linear on a 3-d input, which feeds the layer
            # itself, is fine.)
            self.mark_opaque(node, "an op that changes the channel count",
                             ", ".join(filter(None, [f"{c_in} channels -> {shape}", after])))
            self._ch[node], self._pos[node] = None, None
            return
        self._ch[node] = c_in
        self._pos[node] = self._elementwise_pos(node, c_in, ins, shape)

    def _elementwise_pos(self, node: Any, ch: int | None, ins: list[tuple[Any, Any]],
                         shape: tuple[int, ...] | None) -> int | None:
        if ch is None or not shape or not node.inputs:
            return None
        gf = node.grad_fn
        name = gf.name() if hasattr(gf, "name") else ""
        first = next((i for i, (_, p) in enumerate(ins) if p is not None), 0)
        src = node.inputs[first]
        in_shape = self._shape.get(src)
        p = ins[first][1]
        guess = None
        if p is not None:
            if name.startswith("PermuteBackward"):
                dims = [_norm_dim(d, len(shape)) for d in getattr(gf, "_saved_dims", ())]
                guess = dims.index(p) if p in dims else None
            elif name.startswith("TransposeBackward"):
                d0 = _norm_dim(getattr(gf, "_saved_dim0", None), len(shape))
                d1 = _norm_dim(getattr(gf, "_saved_dim1", None), len(shape))
                guess = d1 if p == d0 else d0 if p == d1 else p
            elif name.startswith("TBackward") and len(shape) == 2:
                guess = 1 - p
            elif in_shape is not None:  # broadcasting aligns dims from the right
                guess = p - len(in_shape) + len(shape)
        cands = self._locate(shape, ch, guess if guess is not None and 0 <= guess < len(shape) else None)
        return cands[0] if len(cands) == 1 else None

    def _partial_write(self, node: Any) -> str | None:
        """None if the in-place write recorded as `node` (autograd's CopySlices: `x[:, :c] += y`, `x[..] = v`,
        an in-place op on a view) covers every channel of the tensor it writes into, else why not.

        A write into some of the channels keeps its bounds as constants in the model's code: once channels
        are removed it lands on other channels, so no index mapping can make it exact."""
        geometry = self._writes.get(node.grad_fn)
        if geometry is None:
            return "region not recorded"
        (vs, vt, vo), (bs, bt, bo) = geometry
        region = f"region {list(vs)} of {list(bs)}"
        if math.prod(vs) == math.prod(bs):  # the whole tensor (a view of it written in place)
            return None
        base_fn = node.grad_fn.next_functions[0][0] if node.grad_fn.next_functions else None
        mod = self._gradfn2module.get(base_fn) if base_fn is not None else None
        src = self.module2node.get(mod) if mod is not None else None
        if src is None or src not in node.inputs:
            return region + ", written tensor not traced"
        c, p = self._edge(src, node)
        ks = self._locate(bs, c, p)
        if len(ks) != 1:
            return region + ", channel dim " + ("ambiguous" if ks else "unknown")
        k = ks[0]
        dims = [d for d in range(len(bs)) if bs[d] > 1]
        if sum(1 for d in dims if bt[d] == bt[k]) != 1 or not any(
                vs[j] == bs[k] and vt[j] == bt[k] for j in range(len(vs))):
            return region
        # the region spans the channel dim whole; it must also start at channel 0 (its storage offset,
        # decomposed over the base's dims from the largest stride down, has no channel component)
        delta = vo - bo
        for d in sorted(dims, key=lambda d: -bt[d]):
            q, delta = divmod(delta, bt[d]) if bt[d] > 0 else (0, delta)
            if not 0 <= q < bs[d]:
                return region
            if d == k:
                return None if q == 0 else region
        return region

    def _plan_reshape(self, node: Any, c_in: int | None, p_in: int | None) -> None:
        gf = node.grad_fn
        src = _sizes(getattr(gf, "_saved_self_sym_sizes", None) or getattr(gf, "_saved_self_sizes", None) or ())
        if not src and node.inputs:
            src = _out_shape(node.inputs[0].grad_fn)
        dst = self._shape[node]
        if not src or dst is None:
            raise _Opaque("shapes not recorded")
        detail = f"{src}->{dst}"
        if not node.inputs:
            raise _Opaque(detail)
        if c_in is None:
            raise _Opaque(detail + ", channel count unknown")
        blocks = _blocks(src, dst)
        if blocks is None:
            raise _Opaque(detail)
        c_out = self._in_ch.get(node)
        plans = set()
        for k in self._locate(src, c_in, p_in):
            ia, jb = next((a, b) for a, b in blocks if k in a)
            ia = [d for d in ia if src[d] != 1]
            jb = [d for d in jb if dst[d] != 1]
            if ia == [k] and len(jb) == 1:
                plans.add(("id", 1, jb[0], c_in))
            elif ia and ia[0] == k and len(ia) > 1 and len(jb) == 1:
                s = dst[jb[0]] // c_in
                plans.add(("flatten", s, jb[0], dst[jb[0]]))
            elif ia == [k] and len(jb) > 1 and c_out is not None and dst[jb[0]] == c_out \
                    and sum(1 for d in jb if dst[d] == c_out) == 1:
                plans.add(("unflatten", c_in // c_out, jb[0], c_out))
            else:
                plans.add(("opaque", 0, None, None))
        if len(plans) != 1:
            raise _Opaque(detail + (", channel dim ambiguous" if plans else ", no channel dim"))
        kind, stride, pos, ch = plans.pop()
        if kind == "opaque" or (c_out is not None and c_out != ch):
            raise _Opaque(detail)
        self._ch[node], self._pos[node] = ch, pos
        if kind == "id":
            return

        # Torch-Pruning's flatten mapping, towards the side whose channel dim is the merged one: the inputs
        # of a flatten (conv -> flatten -> linear), the outputs of its inverse
        merged_side = node.inputs if kind == "flatten" else node.outputs
        for peer in merged_side:
            self._link(node, node, peer, _FlattenIndexMapping(stride=stride, reverse=True),
                       _FlattenIndexMapping(stride=stride, reverse=False))

    def _plan_concat(self, node: Any) -> None:
        gf = node.grad_fn
        out = self._shape[node]
        if out is None:
            raise _Opaque("shapes not recorded")
        d = _norm_dim(getattr(gf, "_saved_dim", None), len(out))
        if d is None:
            raise _Opaque("concat dim unknown")
        unwrapped = [p for p, _ in self.unwrapped_parameters]
        edges, untracked = [], 0
        for fn, nr in gf.next_functions:
            if fn is None:
                untracked += 1
                continue
            if "accumulategrad" in fn.name().lower() and not any(fn.variable is p for p in unwrapped):
                untracked += 1
                continue
            mod = self._gradfn2module.get(fn)
            src = self.module2node.get(mod) if mod is not None else None
            shape = _out_shape(fn, nr)
            if shape is None and hasattr(fn, "variable"):
                shape = _sizes(fn.variable.shape)
            c, p = self._edge(src, nr=nr) if src is not None else (None, None)
            edges.append((src, shape, c, p))
        if len(edges) != len(node.inputs) or any(e[0] is None or e[1] is None for e in edges) \
                or [e[0] for e in edges] != list(node.inputs):
            raise _Opaque("inputs not matched")
        chs = [e[2] for e in edges]
        channel_cat = untracked == 0 and all(c is not None for c in chs) and all(
            e[1][d] == e[2] and (e[3] is None or e[3] == d) and len(self._locate(e[1], e[2], e[3])) == 1
            for e in edges)
        common = _unique(chs)

        def dim_of(shape: tuple[int, ...], p: int | None) -> int | None:
            c = self._locate(shape, common, p)
            return c[0] if len(c) == 1 else None

        other = common is not None and all(
            dim_of(e[1], e[3]) not in (None, d) for e in edges if e[2] is not None)
        if channel_cat == other:
            raise _Opaque(f"cat dim {d}, " + ("ambiguous" if channel_cat else "channels not along one dim"))
        c_out = self._in_ch.get(node)
        if channel_cat:
            total = sum(chs)
            if out[d] != total or (c_out is not None and c_out != total):
                raise _Opaque(f"cat dim {d}, sizes {chs} -> {out[d]}")
            node.module.concat_sizes = [int(c) for c in chs]
            node.module.offsets = _offsets(chs)
            self._ch[node], self._pos[node] = total, d
            if not node.enable_index_mapping:
                return

            # input i owns one dependency in each direction (an input concatenated twice owns a distinct
            # pair per occurrence); the concat mapping goes into the second slot so that it follows a
            # split mapping on the same dependency
            to_input: set[int] = set()
            from_input: set[int] = set()
            for i, src in enumerate(node.inputs):
                dep = _first_free(node.dependencies, src, to_input)
                if dep is not None:
                    self._links.append((node, dep, 1, _LiveMapping(node.module, "concat", True, i)))
            for i, src in enumerate(node.inputs):
                dep = _first_free(src.dependencies, node, from_input)
                if dep is not None:
                    self._links.append((node, dep, 1, _LiveMapping(node.module, "concat", False, i)))
        else:
            if c_out is not None and c_out != common:
                raise _Opaque(f"cat dim {d}, channels {common} -> {c_out}")
            node.module.concat_sizes = None
            self._ch[node] = common
            self._pos[node] = _unique([dim_of(out, e[3]) for e in edges if e[2] is not None])

    def _plan_split(self, node: Any, c_in: int | None, p_in: int | None) -> None:
        gf = node.grad_fn
        src = _sizes(getattr(gf, "_saved_self_sym_sizes", None) or ())
        if not src and node.inputs:
            src = _out_shape(node.inputs[0].grad_fn) if node.inputs[0].type not in (O.SPLIT, O.UNBIND) else None
        n_out = len(getattr(gf, "_input_metadata", ()))
        shapes = [_out_shape(gf, i) for i in range(n_out)]
        if not src or not shapes or any(s is None for s in shapes):
            raise _Opaque("shapes not recorded")
        d = _norm_dim(getattr(gf, "_saved_dim", None), len(src))
        if d is None or c_in is None:
            raise _Opaque("split dim or channel count unknown")
        cands = self._locate(src, c_in, p_in)
        if len(cands) != 1:
            raise _Opaque(f"{src}, channel dim ambiguous")
        k = cands[0]
        node.module.split_sizes = None
        node.module.offsets = None
        if k != d:  # along another dim: every output carries all channels
            self._chunks.pop(node, None)
            self._ch[node] = c_in
            self._pos[node] = k if node.type == O.SPLIT or k < d else k - 1
            return
        if node.type == O.UNBIND:
            raise _Opaque("unbind over the channel dim")
        # The sizes are constants of the model's code (torch.split(x, 64), x.chunk(2), split(self.sizes)):
        # once channels are removed the same call cuts the tensor elsewhere (CSPNet, InceptionNeXt crashed
        # in compaction) or into a different number of parts, and autograd cannot tell chunk from split.
        raise _Opaque(f"channels split into {[s[d] for s in shapes]}",
                      "a split of the channels into sizes fixed in the model's code")

    def _plan_slice(self, node: Any, c_in: int | None, p_in: int | None) -> None:
        gf = node.grad_fn
        src = _sizes(getattr(gf, "_saved_self_sym_sizes", None) or ())
        if not src or c_in is None:
            raise _Opaque("shape or channel count unknown")
        d = _norm_dim(getattr(gf, "_saved_dim", None), len(src))
        cands = self._locate(src, c_in, p_in)
        if d is None or len(cands) != 1:
            raise _Opaque(f"{src}, channel dim ambiguous")
        k = cands[0]
        if k != d:
            self._ch[node], self._pos[node] = c_in, k
            return
        start, end, step = _signed(gf._saved_start), _signed(gf._saved_end), _signed(gf._saved_step)
        n = src[d]
        start, end = (start + n if start < 0 else start), (end + n if end < 0 else end)
        start, end = max(0, min(start, n)), max(0, min(end, n))
        if step is None or step < 1:
            raise _Opaque("slice step")
        if (start, step) != (0, 1) or end < n:
            # its bounds are constants in the model's code (x[:, 0:self.in_channels]): once channels are
            # removed they select other channels, so no index mapping makes it exact
            bounds = f"{start}:{end}" + (f":{step}" if step != 1 else "")
            raise _Opaque(f"channels {bounds} of {n}", "a slice that takes part of the channels")
        node.module.start, node.module.end, node.module.step, node.module.dim = start, end, step, d
        self._ch[node], self._pos[node] = len(range(start, end, step)), k
        c_out = self._in_ch.get(node)
        if c_out is not None and c_out != self._ch[node]:
            raise _Opaque(f"slice of {n} channels feeds {c_out}")

        for src in node.inputs:
            self._link(node, node, src, _LiveMapping(node.module, "slice", True),
                       _LiveMapping(node.module, "slice", False))

    def _plan_expand(self, node: Any, c_in: int | None, p_in: int | None) -> None:
        src = _sizes(getattr(node.grad_fn, "_saved_self_sym_sizes", None) or ())
        dst = self._shape[node]
        if not src or dst is None or c_in is None:
            raise _Opaque("shape or channel count unknown")
        cands = self._locate(src, c_in, p_in)
        shift = len(dst) - len(src)
        if len(cands) != 1 or dst[cands[0] + shift] != c_in:
            raise _Opaque(f"{src}->{dst}")
        self._ch[node], self._pos[node] = c_in, cands[0] + shift

    # -- index mapping -------------------------------------------------------------------------
    def _init_shape_information(self) -> None:
        """Stands in for Torch-Pruning's split-size inference: `_plan` records split sizes from the shapes."""

    def _link(self, owner: Any, a: Any, b: Any, a_to_b: Any, b_to_a: Any, slot: int = 0) -> None:
        """Record `a_to_b` for every dependency a -> b and `b_to_a` for every b -> a."""
        self._links += [(owner, d, slot, a_to_b) for d in a.dependencies if d.target is b]
        self._links += [(owner, d, slot, b_to_a) for d in b.dependencies if d.target is a]

    def _update_index_mapping(self) -> None:
        """Install the planned mappings (Torch-Pruning calls this after building and before every group).

        Each dependency's first slot gets a `_Guard` around its planned mappings, the second stays empty;
        dependencies leaving an opaque node get `_Block`."""
        if not self._planned:
            self._planned = True
            self._plan()
        if not self._mapping_dirty:
            return
        planned: dict[int, list[Any]] = {}
        for owner, dep, slot, mapping in self._links:  # in planning order: a later op's mapping wins a slot
            if owner not in self.opaque:
                planned.setdefault(id(dep), [None, None])[slot] = mapping
        for node in self.module2node.values():
            for dep in node.dependencies:
                dep.index_mapping = [_Guard(self, dep, planned.get(id(dep), (None, None))), None]
        for node in self.opaque:
            for dep in node.dependencies:
                dep.index_mapping = [_Block(), None]
        self._mapping_dirty = False

    def _culprits(self, dep: Any) -> list[Any]:
        ops_ = [n for n in (dep.source, dep.target) if n.module not in self._module2name]
        return ops_ or [dep.target]

    def _admit(self, dep: Any, idxs: list) -> list:
        """Mapped indices `idxs` about to reach `dep.target`: returned if the traversal may take them, else []."""
        tgt = dep.target
        n_in, n_out = self._bound.get(tgt, (None, None))
        if self.is_out_channel_pruning_fn(dep.handler):
            limit = n_out
        elif self.is_in_channel_pruning_fn(dep.handler):
            limit = n_in
        else:
            limit = None
        vals = {i.idx for i in idxs}
        # more distinct indices than any layer has channels: a mapping that multiplies them (the runaway
        # expansion that hangs the traversal on window/attention reshapes)
        if len(vals) > self._max_idx or (limit is not None and (min(vals) < 0 or max(vals) >= limit)):
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
                    if n.type in _PLANNED and n.module not in self._module2name:
                        self.mark_opaque(n, "an op whose channel mapping does not converge")
            raise _Opaque("dependency traversal did not converge")
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
            return super().get_pruning_group(module, pruning_fn, idxs)
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
            except _Opaque:
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


def _route_tp_helpers() -> None:
    """Point Torch-Pruning's two module-level graph helpers at SafeDependencyGraph's own methods.

    Torch-Pruning 1.6.1's `DependencyGraph.build_dependency` ends by calling
    `shape_infer.init_shape_information(graph)` and `index_mapping.update_index_mapping(graph)`, and its
    `get_pruning_group` calls the latter again before each traversal. Those apply the fixed rules this module
    replaces (and crash on some models), so for a SafeDependencyGraph they are sent to
    `_init_shape_information` / `_update_index_mapping`; any other graph still gets Torch-Pruning's."""
    for mod, name, method in ((_tp_shape_infer, "init_shape_information", "_init_shape_information"),
                              (_tp_index_mapping, "update_index_mapping", "_update_index_mapping")):
        original = getattr(mod, name)
        if getattr(original, "_autoprune_routed", False):
            continue

        def routed(graph: Any, *args: Any, _original: Any = original, _method: str = method, **kwargs: Any) -> Any:
            if isinstance(graph, SafeDependencyGraph):
                return getattr(graph, _method)()
            return _original(graph, *args, **kwargs)

        routed._autoprune_routed = True  # type: ignore[attr-defined]
        routed.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(mod, name, routed)


_route_tp_helpers()
