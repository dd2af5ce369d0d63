"""How channel indices cross the ops that move data between dims: reshape, concat, split/unbind, slice,
expand. Each planner reads the shapes autograd recorded, records the node's channel count and dim in
`ChannelFacts`, links Torch-Pruning's own mapping where one is exact, and raises `Opaque` where none is."""
from __future__ import annotations

from typing import Any

# Torch-Pruning's flatten mapping class is private to it but is exactly the rule a conv -> flatten -> linear needs
from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

from .channels import ChannelFacts, O, Opaque
from .mappings import LiveMapping
from .shapes import as_sizes, common_value, norm_dim, offsets, recorded_shape, reshape_blocks, signed


def _first_free(deps: list[Any], target: Any, taken: set[int]) -> Any:
    """The first dependency in `deps` towards `target` that is not in `taken` (ids); it is then taken."""
    for d in deps:
        if d.target is target and id(d) not in taken:
            taken.add(id(d))
            return d
    return None


def plan_reshape(facts: ChannelFacts, node: Any, c_in: int | None, p_in: int | None) -> None:
    """Identity, flatten (channels merged with the dims after them) or its inverse; anything else is opaque."""
    gf = node.grad_fn
    src = as_sizes(getattr(gf, "_saved_self_sym_sizes", None) or getattr(gf, "_saved_self_sizes", None) or ())
    if not src and node.inputs:
        src = recorded_shape(node.inputs[0].grad_fn)
    dst = facts.shape[node]
    if not src or dst is None:
        raise Opaque("shapes not recorded")
    detail = f"{src}->{dst}"
    if not node.inputs:
        raise Opaque(detail)
    if c_in is None:
        raise Opaque(detail + ", channel count unknown")
    blocks = reshape_blocks(src, dst)
    if blocks is None:
        raise Opaque(detail)
    c_out = facts.in_ch.get(node)
    plans = set()
    for k in facts.locate(src, c_in, p_in):
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
        raise Opaque(detail + (", channel dim ambiguous" if plans else ", no channel dim"))
    kind, stride, pos, ch = plans.pop()
    if kind == "opaque" or (c_out is not None and c_out != ch):
        raise Opaque(detail)
    facts.ch[node], facts.pos[node] = ch, pos
    if kind == "id":
        return

    # Torch-Pruning's flatten mapping, towards the side whose channel dim is the merged one: the inputs
    # of a flatten (conv -> flatten -> linear), the outputs of its inverse
    merged_side = node.inputs if kind == "flatten" else node.outputs
    for peer in merged_side:
        facts.link(node, node, peer, _FlattenIndexMapping(stride=stride, reverse=True),
                   _FlattenIndexMapping(stride=stride, reverse=False))


def plan_concat(facts: ChannelFacts, node: Any) -> None:
    """Along the channel dim: offset mappings per input; along another dim: an identity."""
    gf = node.grad_fn
    out = facts.shape[node]
    if out is None:
        raise Opaque("shapes not recorded")
    d = norm_dim(getattr(gf, "_saved_dim", None), len(out))
    if d is None:
        raise Opaque("concat dim unknown")
    unwrapped = [p for p, _ in facts.graph.unwrapped_parameters]
    edges, untracked = [], 0
    for fn, nr in gf.next_functions:
        if fn is None:
            untracked += 1
            continue
        if "accumulategrad" in fn.name().lower() and not any(fn.variable is p for p in unwrapped):
            untracked += 1
            continue
        mod = facts.gradfn2module.get(fn)
        src = facts.graph.module2node.get(mod) if mod is not None else None
        shape = recorded_shape(fn, nr)
        if shape is None and hasattr(fn, "variable"):
            shape = as_sizes(fn.variable.shape)
        c, p = facts.edge(src, nr=nr) if src is not None else (None, None)
        edges.append((src, shape, c, p))
    if len(edges) != len(node.inputs) or any(e[0] is None or e[1] is None for e in edges) \
            or [e[0] for e in edges] != list(node.inputs):
        raise Opaque("inputs not matched")
    chs = [e[2] for e in edges]
    channel_cat = untracked == 0 and all(c is not None for c in chs) and all(
        e[1][d] == e[2] and (e[3] is None or e[3] == d) and len(facts.locate(e[1], e[2], e[3])) == 1
        for e in edges)
    common = common_value(chs)

    def dim_of(shape: tuple[int, ...], p: int | None) -> int | None:
        c = facts.locate(shape, common, p)
        return c[0] if len(c) == 1 else None

    other = common is not None and all(
        dim_of(e[1], e[3]) not in (None, d) for e in edges if e[2] is not None)
    if channel_cat == other:
        raise Opaque(f"cat dim {d}, " + ("ambiguous" if channel_cat else "channels not along one dim"))
    c_out = facts.in_ch.get(node)
    if channel_cat:
        total = sum(chs)
        if out[d] != total or (c_out is not None and c_out != total):
            raise Opaque(f"cat dim {d}, sizes {chs} -> {out[d]}")
        node.module.concat_sizes = [int(c) for c in chs]
        node.module.offsets = offsets(chs)
        facts.ch[node], facts.pos[node] = total, d
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
                facts.links.append((node, dep, 1, LiveMapping(node.module, "concat", True, i)))
        for i, src in enumerate(node.inputs):
            dep = _first_free(src.dependencies, node, from_input)
            if dep is not None:
                facts.links.append((node, dep, 1, LiveMapping(node.module, "concat", False, i)))
    else:
        if c_out is not None and c_out != common:
            raise Opaque(f"cat dim {d}, channels {common} -> {c_out}")
        node.module.concat_sizes = None
        facts.ch[node] = common
        facts.pos[node] = common_value([dim_of(out, e[3]) for e in edges if e[2] is not None])


def plan_split(facts: ChannelFacts, node: Any, c_in: int | None, p_in: int | None) -> None:
    """Along another dim: an identity; along the channel dim: opaque (its sizes are constants of the code)."""
    gf = node.grad_fn
    src = as_sizes(getattr(gf, "_saved_self_sym_sizes", None) or ())
    if not src and node.inputs:
        src = recorded_shape(node.inputs[0].grad_fn) if node.inputs[0].type not in (O.SPLIT, O.UNBIND) else None
    n_out = len(getattr(gf, "_input_metadata", ()))
    shapes = [recorded_shape(gf, i) for i in range(n_out)]
    if not src or not shapes or any(s is None for s in shapes):
        raise Opaque("shapes not recorded")
    d = norm_dim(getattr(gf, "_saved_dim", None), len(src))
    if d is None or c_in is None:
        raise Opaque("split dim or channel count unknown")
    cands = facts.locate(src, c_in, p_in)
    if len(cands) != 1:
        raise Opaque(f"{src}, channel dim ambiguous")
    k = cands[0]
    node.module.split_sizes = None
    node.module.offsets = None
    if k != d:  # along another dim: every output carries all channels
        facts.chunks.pop(node, None)
        facts.ch[node] = c_in
        facts.pos[node] = k if node.type == O.SPLIT or k < d else k - 1
        return
    if node.type == O.UNBIND:
        raise Opaque("unbind over the channel dim")
    # The sizes are constants of the model's code (torch.split(x, 64), x.chunk(2), split(self.sizes)):
    # once channels are removed the same call cuts the tensor elsewhere (CSPNet, InceptionNeXt crashed
    # in compaction) or into a different number of parts, and autograd cannot tell chunk from split.
    raise Opaque(f"channels split into {[s[d] for s in shapes]}",
                  "a split of the channels into sizes fixed in the model's code")


def plan_slice(facts: ChannelFacts, node: Any, c_in: int | None, p_in: int | None) -> None:
    """Along another dim, or taking every channel: an identity; taking part of the channels: opaque."""
    gf = node.grad_fn
    src = as_sizes(getattr(gf, "_saved_self_sym_sizes", None) or ())
    if not src or c_in is None:
        raise Opaque("shape or channel count unknown")
    d = norm_dim(getattr(gf, "_saved_dim", None), len(src))
    cands = facts.locate(src, c_in, p_in)
    if d is None or len(cands) != 1:
        raise Opaque(f"{src}, channel dim ambiguous")
    k = cands[0]
    if k != d:
        facts.ch[node], facts.pos[node] = c_in, k
        return
    start, end, step = signed(gf._saved_start), signed(gf._saved_end), signed(gf._saved_step)
    n = src[d]
    start, end = (start + n if start < 0 else start), (end + n if end < 0 else end)
    start, end = max(0, min(start, n)), max(0, min(end, n))
    if step is None or step < 1:
        raise Opaque("slice step")
    if (start, step) != (0, 1) or end < n:
        # its bounds are constants in the model's code (x[:, 0:self.in_channels]): once channels are
        # removed they select other channels, so no index mapping makes it exact
        bounds = f"{start}:{end}" + (f":{step}" if step != 1 else "")
        raise Opaque(f"channels {bounds} of {n}", "a slice that takes part of the channels")
    node.module.start, node.module.end, node.module.step, node.module.dim = start, end, step, d
    facts.ch[node], facts.pos[node] = len(range(start, end, step)), k
    c_out = facts.in_ch.get(node)
    if c_out is not None and c_out != facts.ch[node]:
        raise Opaque(f"slice of {n} channels feeds {c_out}")

    for src in node.inputs:
        facts.link(node, node, src, LiveMapping(node.module, "slice", True),
                   LiveMapping(node.module, "slice", False))


def plan_expand(facts: ChannelFacts, node: Any, c_in: int | None, p_in: int | None) -> None:
    """Broadcasting other dims keeps the channels; broadcasting the channel dim itself is opaque."""
    src = as_sizes(getattr(node.grad_fn, "_saved_self_sym_sizes", None) or ())
    dst = facts.shape[node]
    if not src or dst is None or c_in is None:
        raise Opaque("shape or channel count unknown")
    cands = facts.locate(src, c_in, p_in)
    shift = len(dst) - len(src)
    if len(cands) != 1 or dst[cands[0] + shift] != c_in:
        raise Opaque(f"{src}->{dst}")
    facts.ch[node], facts.pos[node] = c_in, cands[0] + shift
