"""AutoPrune's auxiliary parameters ("gates"): they, not the weights, decide what is pruned.

Mask h(m) = 1[m > 0]. The forward pass uses masked weights W * h(M); the weights themselves are never
overwritten, so a closed gate that reopens brings its weight back with its old value (recoverability).

Gradients follow the AutoPrune paper (Xiao, Wang, Rajasekaran, NeurIPS 2019, the M-update rule that
third-party implementations cite as its Eq. 7; see research/autoprune-paper.md):
    dL/dW = dL/dW_eff * h(M)                       masked weight gradient
    dL/dM = dL/dW_eff * sgn(W) * g(M)              sign-normalised, with a straight-through derivative g
g is configurable: identity (the "linear" STE the paper reports as worse), leaky, sigmoid, softplus.

Two granularities:
- unstructured ("weight pruning" in the paper): one gate per weight;
- structured ("neuron pruning"): one gate per channel of a dependency group. The gate masks the input
  weights of every layer that consumes the channel (conv/linear columns, ChannelScatter inputs), which is
  exactly what removing the channel does, wherever and however it was produced (BN shifts, act(0) != 0).
  So the gated model equals the compacted model, and the Eq.-7 rule sums sgn(W) * dL/dW_eff over the
  consumer weights of the channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .errors import AutoPruneEdgeError
from .graph import PruningGraph
from .methods.importance import channel_scores

STE_CHOICES = ("identity", "leaky", "sigmoid", "softplus")


def ste_derivative(m: torch.Tensor, kind: str, alpha: float = 0.1) -> torch.Tensor:
    """The straight-through stand-in g(m) for the derivative of the step h(m) = 1[m > 0]."""
    if kind == "identity":
        return torch.ones_like(m)
    if kind == "leaky":
        return torch.where(m > 0, torch.ones_like(m), torch.full_like(m, alpha))
    if kind == "sigmoid":
        return torch.sigmoid(m)
    if kind == "softplus":
        return F.softplus(m)
    raise AutoPruneEdgeError(f"unknown STE derivative {kind!r}; choose one of {', '.join(STE_CHOICES)}")


class HardGate(torch.autograd.Function):
    """h(m) forward, g(m) backward: used where a gate's keep/drop state enters the budget cost."""

    @staticmethod
    def forward(ctx, m: torch.Tensor, ste: str, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(m)
        ctx.ste, ctx.alpha = ste, alpha
        return (m > 0).to(m.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return grad * ste_derivative(m, ctx.ste, ctx.alpha), None, None


class MaskedWeight(torch.autograd.Function):
    """W_eff = W * h(M) along `dim` (M has W's size there) or elementwise (M has W's shape)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, m: torch.Tensor, dim: int | None, ste: str,  # type: ignore[override]
                alpha: float) -> torch.Tensor:
        keep = _expand((m > 0).to(w.dtype), w, dim)
        ctx.save_for_backward(w, m, keep)
        ctx.dim, ctx.ste, ctx.alpha = dim, ste, alpha
        return w * keep

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        w, m, keep = ctx.saved_tensors
        dim = ctx.dim
        grad_w = grad * keep
        signed = grad * torch.sign(w)
        if dim is not None:
            signed = signed.sum(dim=[d for d in range(w.dim()) if d != dim])
        grad_m = signed * ste_derivative(m, ctx.ste, ctx.alpha)
        return grad_w, grad_m, None, None, None


def _expand(v: torch.Tensor, w: torch.Tensor, dim: int | None) -> torch.Tensor:
    if dim is None:
        return v
    shape = [1] * w.dim()
    shape[dim] = -1
    return v.view(shape)


@dataclass
class GateConfig:
    ste: str = "softplus"
    leaky_alpha: float = 0.1
    init: float = 0.1  # all gates start open, close to the threshold
    # "l1": start each structured gate at init x (its channel's L1 group magnitude / the group mean), clipped
    # to [0.1, 3] x init, so short runs begin from the magnitude ranking; unstructured gates start at
    # init x |w| / (mean |w| over all gated weights), clipped to [0.05, 20] x init; "constant": all at `init`.
    init_mode: str = "l1"


class _InputGate(nn.Module):
    """Parametrization of a consumer's weight (or ChannelScatter's input scale): mask its input columns."""

    def __init__(self, gates: "ChannelGates", terms: list[tuple[int, torch.Tensor, torch.Tensor]], width: int,
                 dim: int, groups: int = 1) -> None:
        super().__init__()
        self._gates = [gates]  # a list, so the gate set is not registered as a submodule here
        self.terms = terms  # (group index, root channel indices, consumer input indices)
        self.width, self.dim, self.groups = width, dim, groups
        # the common case, one group feeding every input in order: its gate vector is the mask as it is
        # (saves two small ops per layer and step, ~10 % of a ResNet-56 training step at batch 128)
        self._whole: int | None = None
        if len(terms) == 1:
            gi, root, cons = terms[0]
            n = len(gates.m[gi])
            if n == width and torch.equal(root, torch.arange(n)) and torch.equal(cons, torch.arange(width)):
                self._whole = gi

    def input_gates(self, like: torch.Tensor) -> torch.Tensor:
        """The gate value m of each input column (with its gradient path to the gate parameters)."""
        gates = self._gates[0]
        if self._whole is not None:
            return gates.m[self._whole]
        m_in = like.new_ones(self.width)  # inputs no group owns stay open (m = +1)
        for gi, root, cons in self.terms:
            m_in = m_in.index_put((cons,), gates.m[gi][root])
        return m_in

    def _grouped(self, m_in: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Grouped conv: input channel i is column i % per of the output rows of block i // per."""
        per = self.width // self.groups
        m2 = m_in.view(self.groups, per).repeat_interleave(w.shape[0] // self.groups, dim=0)
        return m2.view(*m2.shape, *([1] * (w.dim() - 2)))

    def keep_mask(self, w: torch.Tensor) -> torch.Tensor:
        """h(m) as 0/1 in ``w``'s dtype, broadcastable to ``w`` (no gradient): what the masking multiplies by."""
        keep = (self.input_gates(w).detach() > 0).to(w.dtype)
        return self._grouped(keep, w) if self.groups > 1 else _expand(keep, w, self.dim)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        gates = self._gates[0]
        m_in = self.input_gates(w)
        if self.groups > 1:
            m_full = self._grouped(m_in, w).expand_as(w)
            return MaskedWeight.apply(w, m_full, None, gates.cfg.ste, gates.cfg.leaky_alpha)
        return MaskedWeight.apply(w, m_in, self.dim, gates.cfg.ste, gates.cfg.leaky_alpha)


class ChannelGates(nn.Module):
    """One gate per prunable channel of every dependency group, attached to the graph's model."""

    def __init__(self, graph: PruningGraph, cfg: GateConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or GateConfig()
        self.graph = [graph]
        self.m = nn.ParameterList([nn.Parameter(v) for v in self._initial_values(graph)])
        self.ungated: dict[int, str] = {}  # group index -> why it cannot be gated (it stays dense)
        self._plan = self._consumer_terms(graph)
        self.attached = False
        self._non_persistent: set[tuple[str, str]] = set()  # (module, tensor) buffers that are not state

    def _initial_values(self, graph: PruningGraph) -> list[torch.Tensor]:
        init = float(self.cfg.init)
        if self.cfg.init_mode == "constant":
            return [torch.full((g.size,), init) for g in graph.groups]
        if self.cfg.init_mode != "l1":
            raise AutoPruneEdgeError(f"unknown gate init {self.cfg.init_mode!r}; use l1 or constant")
        return [init * s.clamp(0.1, 3.0) for s in channel_scores(graph, "l1")]

    def _consumer_terms(self, graph: PruningGraph) -> dict[str, tuple[int, int, int, list]]:
        """For each consumer layer: (input width, weight dim, conv groups, [(group, root idx, consumer idx)])."""
        plan: dict[str, tuple[int, int, int, list]] = {}
        named = dict(graph.model.named_modules())
        for g in graph.groups:
            terms_here = []
            for item in g.tp_group:
                dep, idxs = item
                mod = dep.target.module
                if not isinstance(mod, nn.Module) or not graph.DG.is_in_channel_pruning_fn(dep.handler):
                    continue
                name = graph.module_names.get(mod)
                if name is None:
                    continue
                root = getattr(item, "root_idxs", None)
                if root is None:
                    continue
                groups = 1
                if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    if mod.groups > 1 and mod.groups == mod.in_channels:
                        continue  # depthwise: not channel-mixing; the next mixing layer is gated
                    width, dim, groups = mod.in_channels, 1, mod.groups
                elif isinstance(mod, nn.Linear):
                    width, dim = mod.in_features, 1
                elif hasattr(mod, "mask_in_channels") and hasattr(mod, "in_scale"):
                    width, dim = int(mod.in_scale.numel()), 0
                else:
                    continue
                terms_here.append((name, width, dim, groups, (g.index, torch.as_tensor(list(root), dtype=torch.long),
                                                      torch.as_tensor(list(idxs), dtype=torch.long))))
            if g.index in self.ungated:
                continue
            if not terms_here:
                self.ungated[g.index] = "no channel-mixing layer consumes these channels"
                continue
            for name, width, dim, groups, term in terms_here:
                entry = plan.setdefault(name, (width, dim, groups, []))
                entry[3].append(term)
        del named
        return plan

    def attach(self) -> None:
        model = self.graph[0].model
        named = dict(model.named_modules())
        for name, (width, dim, groups, terms) in self._plan.items():
            mod = named[name]
            tensor = "in_scale" if hasattr(mod, "mask_in_channels") and not isinstance(
                mod, (nn.Conv2d, nn.Linear)) else "weight"
            if tensor in mod._non_persistent_buffers_set:  # torch forgets this when it parametrizes a buffer
                self._non_persistent.add((name, tensor))
            parametrize.register_parametrization(mod, tensor, _InputGate(self, terms, width, dim, groups),
                                                 unsafe=True)
        self.attached = True

    def detach(self) -> None:
        """Remove the parametrizations; the layers get their original (unmasked) tensors back."""
        model = self.graph[0].model
        named = dict(model.named_modules())
        for name in self._plan:
            mod = named[name]
            for tensor in ("weight", "in_scale"):
                if parametrize.is_parametrized(mod, tensor):
                    parametrize.remove_parametrizations(mod, tensor, leave_parametrized=False)
                    if (name, tensor) in self._non_persistent:  # e.g. ChannelScatter.in_scale: not state
                        mod.register_buffer(tensor, getattr(mod, tensor), persistent=False)
        self.attached = False

    def coupling(self) -> list[int]:
        """Per group, how many layers its gates mask (the consumers Eq. 7 sums over); 1 if ungated."""
        count = [0] * len(self.m)
        for _, _, _, terms in self._plan.values():
            for gi in {t[0] for t in terms}:
                count[gi] += 1
        return [max(1, c) for c in count]

    def keep(self) -> list[torch.Tensor]:
        """Hard keep masks (bool) per group; ungated groups keep everything."""
        return [torch.ones_like(m, dtype=torch.bool) if i in self.ungated else (m.detach() > 0)
                for i, m in enumerate(self.m)]

    def soft_keep(self) -> list[torch.Tensor]:
        """h(m) with the STE backward, for the budget regulariser (ungated groups are constant 1)."""
        out = []
        for i, m in enumerate(self.m):
            if i in self.ungated:
                out.append(torch.ones_like(m).detach())
            else:
                out.append(HardGate.apply(m, self.cfg.ste, self.cfg.leaky_alpha))
        return out

    def scores(self) -> list[torch.Tensor]:
        """Gate values as channel scores for the final budgeted selection (ungated groups: +inf)."""
        return [torch.full_like(m.detach(), math.inf) if i in self.ungated else m.detach().clone()
                for i, m in enumerate(self.m)]


class WeightGates(nn.Module):
    """One gate per weight of every conv/linear layer (unstructured pruning)."""

    def __init__(self, model: nn.Module, cfg: GateConfig | None = None, *, skip: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.cfg = cfg or GateConfig()
        self.model = [model]
        self.names = [n for n, m in model.named_modules()
                      if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and n not in skip]
        named = dict(model.named_modules())
        self.m = nn.ParameterList([nn.Parameter(v) for v in self._initial_values([named[n].weight for n in self.names])])
        self.attached = False

    def _initial_values(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        init = float(self.cfg.init)
        if self.cfg.init_mode == "constant":
            return [torch.full_like(w.detach(), init) for w in weights]
        if self.cfg.init_mode != "l1":
            raise AutoPruneEdgeError(f"unknown gate init {self.cfg.init_mode!r}; use l1 or constant")
        # |w| relative to the mean over every gated weight (one global scale, not per layer: at 300x a
        # per-layer scale would leave a 500-weight conv a couple of weights), clipped so all start open
        mags = [w.detach().abs().float() for w in weights]
        mean = float(sum(m.sum() for m in mags) / max(1, sum(m.numel() for m in mags))) or 1.0
        return [init * (m / mean).clamp(0.05, 20.0) for m in mags]

    def attach(self) -> None:
        named = dict(self.model[0].named_modules())
        for i, n in enumerate(self.names):
            parametrize.register_parametrization(named[n], "weight", _ElementGate(self, i), unsafe=True)
        self.attached = True

    def detach(self, *, bake: bool) -> None:
        """Remove the gates; with `bake` the pruned weights are left at zero (the shipped sparse model)."""
        named = dict(self.model[0].named_modules())
        for n in self.names:
            if parametrize.is_parametrized(named[n], "weight"):
                parametrize.remove_parametrizations(named[n], "weight", leave_parametrized=bake)
        self.attached = False

    def coupling(self) -> list[int]:
        return [1] * len(self.m)  # every weight gate masks one weight

    def keep(self) -> list[torch.Tensor]:
        return [m.detach() > 0 for m in self.m]

    def soft_keep(self) -> list[torch.Tensor]:
        return [HardGate.apply(m, self.cfg.ste, self.cfg.leaky_alpha) for m in self.m]


class _ElementGate(nn.Module):
    def __init__(self, gates: WeightGates, index: int) -> None:
        super().__init__()
        self._gates, self.index = [gates], index

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        g = self._gates[0]
        return MaskedWeight.apply(w, g.m[self.index], None, g.cfg.ste, g.cfg.leaky_alpha)
