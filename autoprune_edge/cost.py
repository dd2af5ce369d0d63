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

import numpy as np
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


class _RowSums:
    """A sparse matrix (rows x all channels) times a keep column, as one vector of row sums.

    With a gradient to carry (gate training) it is torch's COO product. Without one (selection: thousands of
    calls) it is numpy's bincount, single-threaded: torch's CSR product, 0.03 ms on an idle core, took 8 ms on
    a 2-core VM with the other core busy, its two OpenMP threads waiting on each other; bincount does not."""

    def __init__(self, coo: torch.Tensor) -> None:
        self.coo = coo = coo.coalesce()
        rows, cols = coo.indices()
        self.rows, self.cols = rows.numpy(), cols.numpy()
        self.vals = coo.values().numpy()
        self.n = coo.shape[0]

    def __matmul__(self, k: torch.Tensor) -> torch.Tensor:
        if k.requires_grad:
            return torch.sparse.mm(self.coo, k).view(-1)
        x = k.detach().view(-1).cpu().numpy()
        return torch.from_numpy(np.bincount(self.rows, weights=self.vals * x[self.cols], minlength=self.n))


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
        self._build_matrices(graph)
        full = self._column([torch.ones(g.size) for g in graph.groups])
        counts = count_macs(graph.model, graph.example)
        self.macs_offset = counts.macs - float(self._macs(full))
        self.params_offset = count_params(graph.model) - float(self._params(full))

    def _build_matrices(self, graph: PruningGraph) -> None:
        """Kept width of every layer/norm = constant + sparse matrix @ (all keep vectors concatenated).

        One sparse product per evaluation instead of a Python loop over layers and terms: budget
        selection evaluates the cost hundreds of times, AutoPrune once per step."""
        offsets = [0]
        for g in graph.groups:
            offsets.append(offsets[-1] + g.size)
        self._n = offsets[-1]

        def matrix(rows_terms: list[list]) -> tuple[_RowSums, torch.Tensor]:
            rows, cols, vals, full_removed = [], [], [], []
            for r, terms in enumerate(rows_terms):
                tot = 0.0
                for gi, mult, sub in terms:
                    idx = torch.arange(graph.groups[gi].size) if sub is None else sub
                    rows.append(torch.full((idx.numel(),), r, dtype=torch.long))
                    cols.append(idx + offsets[gi])
                    vals.append(torch.full((idx.numel(),), float(mult), dtype=torch.float64))
                    tot += float(mult) * idx.numel()
                full_removed.append(tot)
            n_rows = len(rows_terms)
            if rows:
                ind = torch.stack([torch.cat(rows), torch.cat(cols)])
                mat = torch.sparse_coo_tensor(ind, torch.cat(vals), (n_rows, self._n),
                                              check_invariants=True).coalesce()
            else:
                mat = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.float64),
                                              (n_rows, self._n), check_invariants=True)
            return _RowSums(mat), torch.tensor(full_removed, dtype=torch.float64)

        L = self.layers
        self._out_mat, out_all = matrix([layer.out_terms for layer in L])
        self._in_mat, in_all = matrix([[] if layer.depthwise else layer.in_terms for layer in L])
        f64 = dict(dtype=torch.float64)
        self._out_base = torch.tensor([layer.out_full for layer in L], **f64) - out_all
        self._in_base = torch.tensor([1.0 if layer.depthwise else layer.in_full for layer in L], **f64) - in_all
        self._coeff = torch.tensor([layer.coeff for layer in L], **f64)
        self._groups = torch.tensor([1.0 if layer.depthwise else float(layer.groups) for layer in L], **f64)
        self._kernel = torch.tensor([float(layer.kernel_elems) for layer in L], **f64)
        self._bias = torch.tensor([1.0 if layer.bias else 0.0 for layer in L], **f64)
        self._norm_mat, norm_all = matrix([terms for _, _, terms in self.norms])
        self._norm_base = torch.tensor([full for full, _, _ in self.norms], **f64) - norm_all
        self._norm_affine = torch.tensor([float(n) for _, n, _ in self.norms], **f64)

    @staticmethod
    def _column(keep: list[torch.Tensor]) -> torch.Tensor:
        """All keep vectors as one float64 column: float32 cannot count past 2**24 exactly, and a budget
        check must not be off by rounding. One concatenation and one conversion, not one per group: the
        gate trainer evaluates the cost several times a step."""
        return torch.cat(keep).double().view(-1, 1) if keep else torch.zeros(0, 1, dtype=torch.float64)

    def _widths(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._out_base + self._out_mat @ k
        inp = self._in_base + self._in_mat @ k
        return out, inp

    def _macs(self, k: torch.Tensor) -> torch.Tensor:
        return self._layer_macs(k).sum()

    def _layer_macs(self, k: torch.Tensor) -> torch.Tensor:
        out, inp = self._widths(k)
        return self._coeff * out * inp

    def layer_macs(self, keep: list[torch.Tensor]) -> torch.Tensor:
        """MACs of each layer in `layers` order (no offset); differentiable like `macs`."""
        return self._layer_macs(self._column(keep))

    def _params(self, k: torch.Tensor) -> torch.Tensor:
        out, inp = self._widths(k)
        total = (out * inp / self._groups * self._kernel + out * self._bias).sum()
        if self.norms:
            norm = self._norm_base + self._norm_mat @ k
            total = total + (self._norm_affine * norm).sum()
        return total

    def macs(self, keep: list[torch.Tensor]) -> torch.Tensor:
        """MACs when group g keeps the channels where keep[g] is 1 (floats allowed; differentiable)."""
        return self._macs(self._column(keep)) + self.macs_offset

    def params(self, keep: list[torch.Tensor]) -> torch.Tensor:
        return self._params(self._column(keep)) + self.params_offset

    def latency_model(self, layer_ms: dict[str, float], total_ms: float, fixed_ms: float = 0.0) -> "LinearLatency":
        """Predicted latency linearised at the dense model: each layer keeps its ms per MAC, after its
        kernel's fixed cost (``fixed_ms``: dispatch and thread-pool sync, which no channel removes) is
        moved to the constant part."""
        full = [torch.ones(int(n), dtype=torch.float64) for n in self.sizes.tolist()]
        dense = self.layer_macs(full)

        def variable(name: str) -> float:
            ms = layer_ms.get(name, 0.0)
            return max(0.0, ms - fixed_ms) if ms > 0 else 0.0

        per_mac = torch.tensor([variable(layer.name) / float(m) if float(m) > 0 else 0.0
                                for layer, m in zip(self.layers, dense)], dtype=torch.float64)
        return LinearLatency(self, per_mac, total_ms - float((per_mac * dense).sum()))

    def evaluate(self, kind: str, keep: list[torch.Tensor]) -> torch.Tensor:
        if kind == "macs":
            return self.macs(keep)
        if kind == "params":
            return self.params(keep)
        raise KeyError(kind)


class LinearLatency:
    """Target latency as a differentiable function of keep vectors, for AutoPrune's penalty.

    Each conv/linear layer keeps the ms per MAC the target's cost model predicts for it in the dense
    model (so a depthwise or memory-bound layer weighs more per MAC than a big 3x3 conv); everything the
    groups do not scale (element-wise ops, the stem's input side, fixed overheads) stays constant. It
    ranks channels by what they cost on the device; the final selection checks the exact prediction.
    """

    def __init__(self, cost: GroupCostModel, ms_per_mac: torch.Tensor, offset_ms: float) -> None:
        self.cost, self.ms_per_mac, self.offset_ms = cost, ms_per_mac, offset_ms

    def __call__(self, keep: list[torch.Tensor]) -> torch.Tensor:
        return (self.ms_per_mac * self.cost.layer_macs(keep)).sum() + self.offset_ms
