"""MACs and parameters of a model as a function of which channels each group keeps.

The input is one keep vector per group (1 = kept; floats allowed). Cost is bilinear in kept widths (a
conv's MACs scale with kept inputs x kept outputs), so it is exact for hard masks and differentiable for
soft ones (AutoPrune's gates). Where a group's channels split across layers (the branches of a concat),
each layer counts only the channels that land in it. Work that the
groups do not touch (the stem's input channels, attention matmuls...) enters as a constant measured
once with torch's FLOP counter, so `macs(full)` equals the exact count of the dense model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .graph import PruningGraph
from .profiles.counting import count_macs, count_params


@dataclass
class _Layer:
    name: str
    out_full: float
    in_full: float
    coeff: float  # MACs per (out x in_eff) unit
    depthwise: bool
    groups: int
    kernel_elems: int
    bias: bool
    out_terms: list[tuple[int, float, torch.Tensor | None]]  # (group index, multiplier, root channel subset)
    in_terms: list[tuple[int, float, torch.Tensor | None]]


class GroupCostModel:
    def __init__(self, graph: PruningGraph) -> None:
        self.sizes = torch.tensor([float(g.size) for g in graph.groups])
        out_terms: dict[str, list] = {}
        in_terms: dict[str, list] = {}
        norm_terms: dict[str, list] = {}
        for g in graph.groups:
            for m in g.members:
                target = {"out": out_terms, "in": in_terms, "norm": norm_terms}.get(m.role)
                if target is not None:
                    sub = torch.as_tensor(m.root_idxs, dtype=torch.long) if m.root_idxs is not None else None
                    target.setdefault(m.module, []).append((g.index, m.multiplier, sub))
        self.layers: list[_Layer] = []
        for s in graph.layers:
            in_eff_div = 1 if s.depthwise else s.groups
            coeff = s.positions * s.kernel_elems / in_eff_div
            self.layers.append(_Layer(s.name, s.out_features, s.in_features, coeff, s.depthwise, s.groups,
                                      s.kernel_elems, s.has_bias, out_terms.get(s.name, []),
                                      in_terms.get(s.name, [])))
        self.norms = []
        mods = dict(graph.model.named_modules())
        for name, terms in norm_terms.items():
            m = mods[name]
            n_affine = sum(1 for p in m.parameters(recurse=False))
            full = float(getattr(m, "num_features", None) or getattr(m, "num_channels", None)
                         or m.normalized_shape[0])
            self.norms.append((full, n_affine, terms))
        full = [torch.ones(g.size, dtype=torch.float64) for g in graph.groups]
        counts = count_macs(graph.model, graph.example)
        self.macs_offset = counts.macs - float(self._macs(full))
        self.params_offset = count_params(graph.model) - float(self._params(full))

    @staticmethod
    def _removed(terms: list, keep: list[torch.Tensor]) -> torch.Tensor | float:
        removed: torch.Tensor | float = 0.0
        for gi, mult, sub in terms:
            k = keep[gi] if sub is None else keep[gi][sub]
            removed = removed + mult * (k.numel() - k.sum())
        return removed

    def _dims(self, layer: _Layer, keep: list[torch.Tensor]):
        out = layer.out_full - self._removed(layer.out_terms, keep)
        if layer.depthwise:
            return out, 1.0
        return out, layer.in_full - self._removed(layer.in_terms, keep)

    def _macs(self, keep: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for layer in self.layers:
            out, inp = self._dims(layer, keep)
            total = total + layer.coeff * out * inp
        return total

    def _params(self, keep: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for layer in self.layers:
            out, inp = self._dims(layer, keep)
            in_per = inp if layer.depthwise else inp / layer.groups
            total = total + out * in_per * layer.kernel_elems + (out if layer.bias else 0)
        for full, n_affine, terms in self.norms:
            total = total + n_affine * (full - self._removed(terms, keep))
        return total

    @staticmethod
    def _as_float(keep: list[torch.Tensor]) -> list[torch.Tensor]:
        # float64: float32 cannot count past 2**24 exactly, and a budget check must not be off by rounding
        return [k.double() for k in keep]

    def macs(self, keep: list[torch.Tensor]) -> torch.Tensor:
        """MACs when group g keeps the channels where keep[g] is 1 (floats allowed; differentiable)."""
        return self._macs(self._as_float(keep)) + self.macs_offset

    def params(self, keep: list[torch.Tensor]) -> torch.Tensor:
        return self._params(self._as_float(keep)) + self.params_offset

    def evaluate(self, kind: str, keep: list[torch.Tensor]) -> torch.Tensor:
        if kind == "macs":
            return self.macs(keep)
        if kind == "params":
            return self.params(keep)
        raise KeyError(kind)
