"""MACs and parameters of a model as a function of how many channels each group keeps.

Bilinear in the kept counts (a conv's MACs scale with kept inputs x kept outputs), so it is exact for
hard keep masks and differentiable for soft ones (the AutoPrune gates' expected widths). Work that the
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
    out_terms: list[tuple[int, float]]  # (group index, multiplier)
    in_terms: list[tuple[int, float]]


class GroupCostModel:
    def __init__(self, graph: PruningGraph) -> None:
        self.sizes = torch.tensor([float(g.size) for g in graph.groups])
        by_name = {layer.name: layer for layer in graph.layers}
        out_terms: dict[str, list[tuple[int, float]]] = {}
        in_terms: dict[str, list[tuple[int, float]]] = {}
        norm_terms: dict[str, list[tuple[int, float]]] = {}
        for g in graph.groups:
            for m in g.members:
                target = {"out": out_terms, "in": in_terms, "norm": norm_terms}.get(m.role)
                if target is not None:
                    target.setdefault(m.module, []).append((g.index, m.multiplier))
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
        full = torch.ones(len(graph.groups))
        counts = count_macs(graph.model, graph.example)
        self.macs_offset = counts.macs - float(self._macs(full * self.sizes))
        self.params_offset = count_params(graph.model) - float(self._params(full * self.sizes))

    def _dims(self, layer: _Layer, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.as_tensor(layer.out_full, dtype=kept.dtype)
        for gi, mult in layer.out_terms:
            out = out - mult * (self.sizes[gi] - kept[gi])
        if layer.depthwise:
            return out, torch.ones((), dtype=kept.dtype)
        inp = torch.as_tensor(layer.in_full, dtype=kept.dtype)
        for gi, mult in layer.in_terms:
            inp = inp - mult * (self.sizes[gi] - kept[gi])
        return out, inp

    def _macs(self, kept: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=kept.dtype)
        for layer in self.layers:
            out, inp = self._dims(layer, kept)
            total = total + layer.coeff * out * inp
        return total

    def _params(self, kept: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=kept.dtype)
        for layer in self.layers:
            out, inp = self._dims(layer, kept)
            in_per = inp if layer.depthwise else inp / layer.groups
            total = total + out * in_per * layer.kernel_elems + (out if layer.bias else 0)
        for full, n_affine, terms in self.norms:
            c = torch.as_tensor(full, dtype=kept.dtype)
            for gi, mult in terms:
                c = c - mult * (self.sizes[gi] - kept[gi])
            total = total + n_affine * c
        return total

    def macs(self, kept: torch.Tensor) -> torch.Tensor:
        """MACs for kept channel counts per group (float tensor, differentiable)."""
        return self._macs(kept) + self.macs_offset

    def params(self, kept: torch.Tensor) -> torch.Tensor:
        return self._params(kept) + self.params_offset

    def evaluate(self, kind: str, kept: torch.Tensor) -> torch.Tensor:
        if kind == "macs":
            return self.macs(kept)
        if kind == "params":
            return self.params(kept)
        raise KeyError(kind)
