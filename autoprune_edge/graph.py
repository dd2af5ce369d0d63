"""Channel dependency groups: which channels must be removed together.

A thin layer over Torch-Pruning's DependencyGraph. Everything downstream (gates, budgets, compaction,
plans) speaks in terms of `ChannelGroup`s: one group is a set of coupled channel dimensions (a conv's
output, the BN after it, the next conv's input, every branch of a residual add...) that is pruned as
one unit, indexed by the channels of its root layer.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .channel_group import ChannelGroup, Member, tile_counts
from .errors import ConfigError, GraphError
from .heads import output_layers
from .layers import custom_pruners_for
from .tracing import SafeDependencyGraph, opaque_reason

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class LayerShape:
    """What the cost model needs to know about one conv/linear layer."""

    name: str
    kind: str  # "conv" | "linear"
    in_features: int
    out_features: int
    groups: int
    kernel_elems: int  # kh*kw (1 for linear)
    positions: int  # output spatial positions (x batch rows for linear), summed over the calls of a shared layer
    depthwise: bool
    has_bias: bool


def trace_layers(model: nn.Module, example: torch.Tensor) -> tuple[list[LayerShape], torch.Tensor, list[str]]:
    """(conv/linear layer shapes, the model's output, every leaf module's name), in execution order."""
    shapes: dict[str, LayerShape] = {}
    order: list[str] = []
    hooks = []
    names = {m: n for n, m in model.named_modules()}

    def _seen(name: str) -> int:
        """Positions of earlier calls: a layer applied several times (a head shared by FPN levels) costs
        the sum of its calls, each at its own resolution."""
        return shapes[name].positions if name in shapes else 0

    def hook(mod: nn.Module, inp: Any, out: Any) -> None:
        name = names[mod]
        order.append(name)
        if not isinstance(out, torch.Tensor):
            return
        if isinstance(mod, _CONV):
            positions = int(out.numel() // (out.shape[0] * out.shape[1])) * out.shape[0]
            k = 1
            for s in mod.kernel_size:
                k *= s
            dw = mod.groups > 1 and mod.groups == mod.in_channels
            shapes[name] = LayerShape(name, "conv", mod.in_channels, mod.out_channels, mod.groups, k,
                                      positions + _seen(name), dw, mod.bias is not None)
        elif isinstance(mod, nn.Linear):
            positions = int(out.numel() // out.shape[-1])
            shapes[name] = LayerShape(name, "linear", mod.in_features, mod.out_features, 1, 1,
                                      positions + _seen(name), False, mod.bias is not None)

    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
    ordered = [shapes[n] for n in dict.fromkeys(order) if n in shapes]
    return ordered, out, list(dict.fromkeys(order))


def find_output_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Layers whose output channels are the model's output (the classifier): they keep their size."""
    layers, out, _ = trace_layers(model, example)
    if not isinstance(out, torch.Tensor):  # several (nested) outputs: every layer that produces one is a head
        heads = output_layers(model, example)
        if not heads:
            raise GraphError(f"the model returns {type(out).__name__} with no tensor computed by a conv or linear "
                             "layer; return the outputs as tensors (nested in tuples, lists or dicts)")
        return heads
    n_out = out.shape[-1] if out.dim() == 2 else out.shape[1]
    for layer in reversed(layers):
        if layer.out_features == n_out:
            return [layer.name]
    return [layers[-1].name] if layers else []


def _dense_reason(g: Any, names: dict[nn.Module, str]) -> str | None:
    """Why removing channels of this group would change the kept channels' values (None: it would not).

    A normalisation whose statistics span several channels (LayerNorm over channels, GroupNorm) computes
    different numbers once a channel is gone, so no mask on the gated model can equal the compacted one.
    Channels that reach an op whose channel mapping cannot be tracked (see tracing/) stay dense too.
    """
    why = opaque_reason(g, names)
    if why:
        return why
    for item in g:
        mod = item[0].target.module
        if isinstance(mod, nn.LayerNorm):
            return f"normalised across channels by LayerNorm {names.get(mod, '?')}"
        if isinstance(mod, nn.GroupNorm) and mod.num_groups < mod.num_channels:
            return f"normalised across channels by GroupNorm {names.get(mod, '?')}"
    return None


def _ties(g: Any, size: int) -> int | str:
    """How many blocks of tied channels grouped convolutions impose on a group (a str: why it can't be pruned)."""
    ties = 1
    for item in g:
        dep, idxs = item
        mod = dep.target.module
        if isinstance(mod, _CONV) and 1 < mod.groups == mod.in_channels != mod.out_channels:
            return f"depthwise conv with a channel multiplier ({mod.in_channels}->{mod.out_channels}) consumes them"
        if not (isinstance(mod, _CONV) and 1 < mod.groups != mod.in_channels):
            continue
        root = getattr(item, "root_idxs", None)
        if len(idxs) != size or (root is not None and len(set(root)) != size) or size % mod.groups:
            return f"only part of these channels reach grouped conv (groups={mod.groups})"
        ties = math.lcm(ties, mod.groups)
    if size % ties or size // ties < 2:
        return f"grouped convs need {ties} equal blocks of these {size} channels"
    return ties


class PruningGraph:
    """The dependency graph of one model plus its prunable channel groups and layer shapes.

    The graph owns `model` and mutates it when compacting; pass a copy if the original must survive.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, *, ignored_layers: list[str] | None = None,
                 round_to: int = 1, max_prune_ratio: float = 0.9, narrow: int = 0) -> None:
        """``round_to``: kept counts are multiples of it (or the whole group). ``narrow`` (< round_to, dividing
        it): the narrowest width the target runs unpadded, allowed besides the multiples, and nothing below it
        (this host's XNNPACK pads fp32 to 32 channels but to 16 when there are at most 16: a 32-wide group
        may keep 16, a 16-wide one stays whole)."""
        self.model = model
        self.example = example
        self._options = {"ignored_layers": ignored_layers, "round_to": round_to, "max_prune_ratio": max_prune_ratio,
                         "narrow": narrow}
        was_training = model.training
        model.eval()
        try:
            self.output_layers = find_output_layers(model, example)
            self.layers, out, self.exec_order = trace_layers(model, example)
            self.output_shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            named = dict(model.named_modules())
            ignored = [named[n] for n in self.output_layers + list(ignored_layers or []) if n in named]
            try:
                with torch.enable_grad():
                    self.DG = SafeDependencyGraph().build_dependency(model, example_inputs=example, verbose=False,
                                                                    customized_pruners=custom_pruners_for(model))
            except Exception as e:  # tracing failures come from arbitrary user code
                raise GraphError(f"cannot trace the model's channel dependencies: {type(e).__name__}: {e}") from e
            self.module_names = {m: n for n, m in model.named_modules()}  # module -> qualified name
            self.groups: list[ChannelGroup] = []
            # Groups that exist but must stay whole: (root layer, why). Reported, never pruned.
            self.left_dense: list[tuple[str, str]] = []
            for g in self.DG.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Conv1d,
                                                                                         nn.Linear]):
                self._add_group(g, round_to, max_prune_ratio, narrow)
        finally:
            model.train(was_training)

    # -- construction -------------------------------------------------------------------------
    def _add_group(self, g: Any, round_to: int, max_prune_ratio: float, narrow: int = 0, *,
                   rerooted: bool = False) -> None:
        root_mod = g[0].dep.target.module
        size = len(g[0].idxs)
        if size < 2:
            return
        members: list[Member] = []
        segments: dict[tuple[int, ...], None] = {}
        why = _dense_reason(g, self.module_names)
        if why:
            self.left_dense.append((self.module_names.get(root_mod, str(root_mod)), why))
            return
        for item in g:
            dep, idxs = item
            root_idxs = getattr(item, "root_idxs", None)
            sub = None
            if root_idxs is not None and 0 < len(set(root_idxs)) < size:
                sub = sorted(set(int(i) for i in root_idxs))
                segments[tuple(sub)] = None
            mod = dep.target.module
            if not isinstance(mod, nn.Module) or mod not in self.module_names:
                continue
            name = self.module_names[mod]
            mult = len(idxs) / (len(sub) if sub else size)
            if isinstance(mod, _CONV + (nn.Linear,)):
                if self.DG.is_out_channel_pruning_fn(dep.handler):
                    role = "out"
                elif self.DG.is_in_channel_pruning_fn(dep.handler):
                    role = "in"
                else:
                    role = "other"
                if isinstance(mod, _CONV) and mod.groups > 1 and mod.groups == mod.in_channels and role == "in":
                    role = "out"  # a depthwise conv's input and output channels are the same channels
            elif isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                role = "norm"
            else:
                role = "other"
            if any(m.module == name and m.role == role for m in members):
                continue
            members.append(Member(name, role, mult, sub))
        ties = _ties(g, size)
        if isinstance(ties, str):
            self.left_dense.append((self.module_names[root_mod], ties))
            return
        if ties > 1 and segments:
            self.left_dense.append((self.module_names[root_mod], "channels feed both a grouped conv and a concat"))
            return
        per = size // ties
        # kept counts are multiples of round_to (the target's channel tile), or the whole group: a group of 144
        # at round_to 32 may keep 32, 64, 96, 128 or 144 channels (an unaligned count runs as the next multiple)
        step = ties * (round_to if per >= round_to else 1)
        min_keep = max(step, int(-(-size * (1.0 - max_prune_ratio) // 1)))
        # keep only minimal segments (a segment containing a smaller one is implied by it)
        segs = [list(s) for s in segments if not any(set(o) < set(s) for o in segments)]
        why = self._aliased(g, root_mod, [0] + [sg[0] for sg in segs])
        if why:
            alt = None if rerooted else self._unaliased_root(g)
            if alt is not None:
                self._add_group(alt, round_to, max_prune_ratio, narrow, rerooted=True)
            else:
                self.left_dense.append((self.module_names[root_mod], why))
            return
        seg_min = [max(1, int(-(-len(s) * (1.0 - max_prune_ratio) // 1))) for s in segs]
        min_keep = max(min_keep if not narrow else int(-(-size * (1.0 - max_prune_ratio) // 1)), sum(seg_min))
        if ties == 1 and 0 < narrow < round_to and round_to % narrow == 0:
            # nothing below the narrow tile: it runs as the narrow tile, so it would cost accuracy for no time
            tiles = range(round_to, size, round_to) if per >= round_to else ()
            counts = tuple(c for c in sorted({narrow, *tiles, size}) if min_keep <= c <= size)
        else:
            counts = tile_counts(min_keep, step, size)
        if len(counts) < 2:
            return
        self.groups.append(ChannelGroup(len(self.groups), self.module_names[root_mod], size, members, counts[0], step,
                                        g, segs, seg_min, ties, counts))

    def _aliased(self, g: Any, root: nn.Module, probes: list[int]) -> str | None:
        """Why removing one root channel would also remove other root channels (None if it would not).

        GhostNet concatenates a conv's output with a depthwise copy of it and adds that to a residual:
        residual channels j and j + C/2 then come from the same conv channel, so removing either removes
        both, and per-channel costs would be wrong (the budget would land far below target)."""
        for i in dict.fromkeys(probes):
            sub = self.DG.get_pruning_group(root, g[0].dep.handler, [i])
            for dep, idxs in sub:
                if dep.target.module is root and self.DG.is_out_channel_pruning_fn(dep.handler) \
                        and set(int(j) for j in idxs) != {i}:
                    return ("removing one of its channels removes others too (they are copies of the same "
                            "channel further up, e.g. a concat of a layer with a depthwise copy of itself)")
        return None

    def _unaliased_root(self, g: Any) -> Any | None:
        """The same channels as group `g`, rooted at a layer whose channels are not copies of each other.

        Torch-Pruning roots a group at the first layer it meets, which in GhostNet may be the shortcut
        conv or SE expand whose channels j and j + C/2 are a conv channel and its depthwise copy. Rooted
        at the ghost module's cheap (depthwise) conv instead, every root channel is one real channel and
        removing it removes its copy too, so the group can be gated and costed channel by channel."""
        root = g[0].dep.target.module
        ignored = set(self.output_layers) | set(self._options["ignored_layers"] or [])
        sized: dict[nn.Module, tuple[int, Any]] = {}
        for dep, _ in g:
            mod = dep.target.module
            name = self.module_names.get(mod) if isinstance(mod, _CONV + (nn.Linear,)) else None
            if name is None or name in ignored or mod is root or mod in sized \
                    or not self.DG.is_out_channel_pruning_fn(dep.handler):
                continue
            pruner = self.DG.get_pruner_of_module(mod)
            n = pruner.get_out_channels(mod) if pruner is not None else None
            if n and n >= 2:
                sized[mod] = (n, pruner)
        # fewest channels first: the unaliased layers (stable, so ties keep the group's order)
        for mod, (n, pruner) in sorted(sized.items(), key=lambda kv: kv[1][0]):
            alt = self.DG.get_pruning_group(mod, pruner.prune_out_channels, list(range(n)))
            if any(self.module_names.get(d.target.module) in ignored and self.DG.is_out_channel_pruning_fn(d.handler)
                   for d, _ in alt):
                continue
            if self._aliased(alt, mod, list(range(min(n, 4)))) is None:
                return alt
        return None

    def copy(self) -> "PruningGraph":
        """An independent graph over a deep copy of the model, with the same groups in the same order.

        (Torch-Pruning's graph holds a module reference that deepcopy cannot copy, so it is rebuilt.)"""
        other = PruningGraph(copy.deepcopy(self.model), self.example, **self._options)
        if [g.root for g in other.groups] != [g.root for g in self.groups]:
            raise GraphError("internal: rebuilding the dependency graph gave different groups")
        return other

    # -- queries ------------------------------------------------------------------------------
    def module(self, name: str) -> nn.Module:
        return dict(self.model.named_modules())[name]

    def full_keep(self) -> list[torch.Tensor]:
        return [torch.ones(g.size, dtype=torch.bool) for g in self.groups]

    @property
    def round_to(self) -> int:
        """Kept channel counts are multiples of this (or the whole group)."""
        return int(self._options["round_to"])

    def widths(self, model: nn.Module | None = None) -> dict[str, list[int]]:
        """[in, out] channels of every conv/linear layer (for reports and plans)."""
        model = model if model is not None else self.model
        out = {}
        for name, m in model.named_modules():
            if isinstance(m, _CONV):
                out[name] = [m.in_channels, m.out_channels]
            elif isinstance(m, nn.Linear):
                out[name] = [m.in_features, m.out_features]
        return out

    # -- masking and compaction ----------------------------------------------------------------
    def masked_copy(self, keep: list[torch.Tensor]) -> nn.Module:
        """A dense copy whose removed channels are silenced where they are consumed.

        Zeroing the input weights of every channel-mixing consumer (conv, linear) is exactly what removal
        does, wherever the channel was produced (BN shifts and activations make output-side zeroing
        inexact). Equality with the compacted model is then a real check of the compaction.
        """
        masked = copy.deepcopy(self.model)
        mods = dict(masked.named_modules())
        with torch.no_grad():
            for g, k in zip(self.groups, keep):
                removed = (~k).nonzero().flatten()
                if removed.numel() == 0:
                    continue
                sub = self.DG.get_pruning_group(g.tp_group[0].dep.target.module, g.tp_group[0].dep.handler,
                                                removed.tolist())
                for dep, idxs in sub:
                    mod = dep.target.module
                    if mod not in self.module_names or not self.DG.is_in_channel_pruning_fn(dep.handler):
                        continue
                    tgt = mods[self.module_names[mod]]
                    idx = torch.as_tensor(list(idxs), dtype=torch.long)
                    if hasattr(tgt, "mask_in_channels"):
                        tgt.mask_in_channels(idx.tolist())
                    elif isinstance(tgt, nn.Linear):
                        tgt.weight[:, idx] = 0
                    elif isinstance(tgt, _CONV) and not (tgt.groups > 1 and tgt.groups == tgt.in_channels):
                        per = tgt.in_channels // tgt.groups
                        outs_per = tgt.out_channels // tgt.groups
                        for i in idx.tolist():
                            grp = i // per
                            tgt.weight[grp * outs_per:(grp + 1) * outs_per, i % per] = 0
        return masked

    def compact(self, keep: list[torch.Tensor]) -> list[list[Any]]:
        """Physically remove the channels not kept, in place on `self.model`; returns the pruning history."""
        self.DG._pruning_history = []
        for g, k in zip(self.groups, keep):
            removed = (~k).nonzero().flatten().tolist()
            if not removed:
                continue
            root = g.tp_group[0].dep.target.module
            sub = self.DG.get_pruning_group(root, g.tp_group[0].dep.handler, removed)
            if not self.DG.check_pruning_group(sub):
                raise GraphError(f"pruning {len(removed)} of {g.size} channels of {g.root} would empty a layer")
            sub.prune()
        return [[n, bool(o), [int(i) for i in idx]] for n, o, idx in self.DG.pruning_history()]


def apply_history(model: nn.Module, example: torch.Tensor, history: list[list[Any]]) -> nn.Module:
    """Re-apply a saved pruning history to a freshly built original model (in place)."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            dg = SafeDependencyGraph().build_dependency(model, example_inputs=example, verbose=False,
                                                       customized_pruners=custom_pruners_for(model))
        dg.load_pruning_history([[n, o, list(i)] for n, o, i in history])
    except Exception as e:
        raise GraphError(f"cannot re-apply the pruning plan to the original architecture: {e}") from e
    finally:
        model.train(was_training)
    return model


def ignored_layer_names(model: nn.Module, ignore: Iterable[nn.Module | str]) -> list[str]:
    """The conv/linear layers to leave whole, from modules or qualified names (a container means every
    layer inside it, e.g. "backbone" or "model.head")."""
    names = {m: n for n, m in model.named_modules()}
    by_name = dict(model.named_modules())
    out: list[str] = []
    for item in ignore:
        if isinstance(item, str):
            if item not in by_name:
                raise ConfigError(f"ignore: the model has no module named {item!r} (names are as in "
                                  "model.named_modules(), e.g. 'backbone' or 'head.0')")
            mod = by_name[item]
        else:
            if item not in names:
                raise ConfigError(f"ignore: {type(item).__name__} is not a module of this model")
            mod = item
        out += [names[m] for m in mod.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    return list(dict.fromkeys(out))
