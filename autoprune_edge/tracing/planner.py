"""Channel planning: walks the traced graph in order and works out, for every node, how many channels its
output carries and along which dim, from the shapes autograd recorded and the layers around it.

Layout ops (reshape, concat, split, slice, expand) are planned in `layout_ops`; everything else passes
channels through (element-wise ops, permutes, pooling), unless it combines different channel counts, changes
the count, or writes into only part of the channels in place. A node that cannot be planned exactly is
marked opaque on the graph.
"""
from __future__ import annotations

import math
from typing import Any

from .channels import CH_FIRST, CH_LAST, PLANNED, ChannelFacts, O, Opaque
from .layout_ops import plan_concat, plan_expand, plan_reshape, plan_slice, plan_split
from .shapes import as_sizes, common_value, norm_dim, recorded_shape

_DESC = {
    O.RESHAPE: "a reshape/view that mixes channels with other dims",
    O.CONCAT: "a concat whose channel layout cannot be tracked",
    O.SPLIT: "a split/chunk whose channel layout cannot be tracked",
    O.SLICE: "a slice whose channel layout cannot be tracked",
    O.UNBIND: "an unbind whose channel layout cannot be tracked",
    O.EXPAND: "an expand that broadcasts the channel dim",
}


class ChannelPlanner(ChannelFacts):
    """Fills in the `ChannelFacts` of one traced graph (`plan`)."""

    def order(self) -> list[Any]:
        """Every node reachable from a traced layer, inputs before the ops that consume them."""
        order, state = [], {}
        for root in self.graph.module2node.values():
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

    def plan(self) -> None:
        """Channel count and dim of every node, each layout op's mappings, opaque nodes marked on the graph."""
        order = self.order()
        # consumers of each output of a multi-output op
        for node in order:
            if node.type in (O.SPLIT, O.UNBIND):
                per: dict[Any, set[int]] = {}
                for o in node.outputs:
                    nrs = {int(nr) for fn, nr in getattr(o.grad_fn, "next_functions", ()) if fn is node.grad_fn}
                    per.setdefault(o, set()).update(nrs)
                self.chunks[node] = per
        # channels each node's consumers expect (module layers only, through element-wise ops)
        for node in reversed(order):
            c = self.pruner_ch(node, out=False)
            if c is None and node.type not in PLANNED:
                c = common_value([self.in_ch.get(o) for o in node.outputs])
            self.in_ch[node] = c
        bounds = []
        taint: dict[Any, Any] = {}  # node with unknown channels -> the opaque node upstream that caused it
        for node in order:
            origin = next((taint[i] for i in node.inputs if i in taint), None)
            after = f"after {self.graph.where_of(origin)}" if origin is not None else ""
            try:
                self.plan_node(node, after)
            except Opaque as e:
                self.graph.mark_opaque(node, e.desc or _DESC.get(node.type, "an op"),
                                 ", ".join(filter(None, [str(e), after])))
                self.ch[node], self.pos[node] = None, None
            except Exception as e:  # noqa: BLE001 - anything unexpected: do not guess
                self.graph.mark_opaque(node, _DESC.get(node.type, "an op"), f"{type(e).__name__}: {e}")
                self.ch[node], self.pos[node] = None, None
            if node in self.graph.opaque:
                taint[node] = origin if origin is not None else node
                if origin is not None:
                    self.graph.cascaded.add(node)
            elif self.ch.get(node) is None and origin is not None and node not in self.chunks:
                taint[node] = origin
            bi, bo = self.pruner_ch(node, out=False), self.pruner_ch(node, out=True)
            self.bound[node] = (bi, bo)
            bounds += [b for b in (bi, bo, self.ch.get(node)) if b]
        self.max_idx = max(bounds + [1])

    def plan_node(self, node: Any, after: str = "") -> None:
        """Channels and channel dim of one node's output (`after`: the opaque node upstream, if any)."""
        t = node.type
        gf = node.grad_fn
        shape = as_sizes(node.module.shape) if t == O.PARAMETER else recorded_shape(gf)
        self.shape[node] = shape
        ch = self.pruner_ch(node, out=True)
        if ch is not None or t in CH_FIRST + CH_LAST + (O.PARAMETER, O.LSTM):
            pos = None
            if shape and ch is not None:
                if t in CH_FIRST and len(shape) >= 2:
                    pos = 1
                elif t in CH_LAST:
                    pos = len(shape) - 1
                elif t == O.PARAMETER:
                    pos = norm_dim(node.pruning_dim, len(shape))
                if pos is not None and shape[pos] != ch:
                    pos = None
            self.ch[node], self.pos[node] = ch, pos
            return
        ins = [self.edge(i, node) for i in node.inputs]
        c_in = common_value([c for c, _ in ins])
        p_in = common_value([p for _, p in ins])
        if t == O.RESHAPE:
            return plan_reshape(self, node, c_in, p_in)
        if t == O.CONCAT:
            return plan_concat(self, node)
        if t == O.SPLIT or t == O.UNBIND:
            return plan_split(self, node, c_in, p_in)
        if t == O.SLICE:
            return plan_slice(self, node, c_in, p_in)
        if t == O.EXPAND:
            return plan_expand(self, node, c_in, p_in)
        if "CopySlices" in (gf.name() if hasattr(gf, "name") else ""):
            partial = self.partial_write(node)
            if partial is not None:
                raise Opaque(partial, "an in-place write into part of the channels (slice assignment)")
        # element-wise (add, mul, activations, permute, pooling, ...): channels pass unchanged
        known = {c for c, _ in ins if c is not None}
        if len(known) > 1:
            self.graph.mark_opaque(node, "an op that combines tensors with different channel counts",
                             ", ".join(filter(None, ["channels " + "/".join(str(c) for c in sorted(known)), after])))
            self.ch[node], self.pos[node] = None, None
            return
        if c_in is not None and shape is not None and c_in not in shape and not (
                node.outputs and all(o.module in self.names and self.in_ch.get(o) == c_in
                                     for o in node.outputs)):
            # e.g. a functional linear/conv whose weight is not a traced layer, a reduction over the channel
            # dim, channel padding. (The matmul inside nn.Linear on a 3-d input, which feeds the layer
            # itself, is fine.)
            self.graph.mark_opaque(node, "an op that changes the channel count",
                             ", ".join(filter(None, [f"{c_in} channels -> {shape}", after])))
            self.ch[node], self.pos[node] = None, None
            return
        self.ch[node] = c_in
        self.pos[node] = self._elementwise_pos(node, c_in, ins, shape)

    def _elementwise_pos(self, node: Any, ch: int | None, ins: list[tuple[Any, Any]],
                         shape: tuple[int, ...] | None) -> int | None:
        if ch is None or not shape or not node.inputs:
            return None
        gf = node.grad_fn
        name = gf.name() if hasattr(gf, "name") else ""
        first = next((i for i, (_, p) in enumerate(ins) if p is not None), 0)
        src = node.inputs[first]
        in_shape = self.shape.get(src)
        p = ins[first][1]
        guess = None
        if p is not None:
            if name.startswith("PermuteBackward"):
                dims = [norm_dim(d, len(shape)) for d in getattr(gf, "_saved_dims", ())]
                guess = dims.index(p) if p in dims else None
            elif name.startswith("TransposeBackward"):
                d0 = norm_dim(getattr(gf, "_saved_dim0", None), len(shape))
                d1 = norm_dim(getattr(gf, "_saved_dim1", None), len(shape))
                guess = d1 if p == d0 else d0 if p == d1 else p
            elif name.startswith("TBackward") and len(shape) == 2:
                guess = 1 - p
            elif in_shape is not None:  # broadcasting aligns dims from the right
                guess = p - len(in_shape) + len(shape)
        cands = self.locate(shape, ch, guess if guess is not None and 0 <= guess < len(shape) else None)
        return cands[0] if len(cands) == 1 else None

    def partial_write(self, node: Any) -> str | None:
        """None if the in-place write recorded as `node` (autograd's CopySlices: `x[:, :c] += y`, `x[..] = v`,
        an in-place op on a view) covers every channel of the tensor it writes into, else why not.

        A write into some of the channels keeps its bounds as constants in the model's code: once channels
        are removed it lands on other channels, so no index mapping can make it exact."""
        geometry = self.writes.get(node.grad_fn)
        if geometry is None:
            return "region not recorded"
        (vs, vt, vo), (bs, bt, bo) = geometry
        region = f"region {list(vs)} of {list(bs)}"
        if math.prod(vs) == math.prod(bs):  # the whole tensor (a view of it written in place)
            return None
        base_fn = node.grad_fn.next_functions[0][0] if node.grad_fn.next_functions else None
        mod = self.gradfn2module.get(base_fn) if base_fn is not None else None
        src = self.graph.module2node.get(mod) if mod is not None else None
        if src is None or src not in node.inputs:
            return region + ", written tensor not traced"
        c, p = self.edge(src, node)
        ks = self.locate(bs, c, p)
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
