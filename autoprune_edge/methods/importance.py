"""The score-then-select baselines: per-channel importance scores (higher = keep), one class each.

Every baseline goes through the same budgeted selection as AutoPrune (methods.selection), so they are
compared at equal budgets with equal rounding. Scores are normalised per group (mean 1) so that one
global threshold ranks channels of different layers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp

from ..errors import ConfigError
from ..graph import PruningGraph
from ..train import make_loader
from .registry import Criterion, CriterionLike, get_criterion, register


def _root_l1(graph: PruningGraph, g: Any) -> torch.Tensor:
    """L1 norm of the root layer's output-channel weights, normalised to mean 1."""
    w = getattr(graph.module(g.root), "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() < 1 or w.shape[0] != g.size:
        return torch.ones(g.size)
    s = w.detach().abs().flatten(1).sum(1).float() if w.dim() > 1 else w.detach().abs().float()
    return s / s.mean().clamp_min(1e-12)


def _group_scores(graph: PruningGraph, imp: Any) -> list[torch.Tensor]:
    out = []
    for g in graph.groups:
        try:
            s = imp(g.tp_group)
        except (IndexError, RuntimeError, ValueError):
            # Torch-Pruning's group importance can fail on unusual members (timm FastViT's reparam
            # branches: IndexError); rank by the root layer's own weights instead.
            out.append(_root_l1(graph, g))
            continue
        s = torch.ones(g.size) if s is None else s.detach().float().flatten()[: g.size].clone()
        out.append(s)
    return out


@register
class L1Norm(Criterion):
    name = "l1"
    description = "L1-norm group magnitude (Torch-Pruning GroupMagnitudeImportance, p=1), global ranking"

    @torch.no_grad()
    def scores(self, graph: PruningGraph, *, data: Any = None, seed: int = 0) -> list[torch.Tensor]:
        return _group_scores(graph, tp.importance.GroupMagnitudeImportance(p=1, normalizer="mean"))


@register
class BNScale(Criterion):
    name = "bn"
    description = "BatchNorm scale |gamma| of the group (network slimming, Liu et al. 2017), global ranking"

    @torch.no_grad()
    def scores(self, graph: PruningGraph, *, data: Any = None, seed: int = 0) -> list[torch.Tensor]:
        return _group_scores(graph, tp.importance.BNScaleImportance(normalizer="mean"))


@register
class Taylor(Criterion):
    name = "taylor"
    description = "first-order Taylor |w * dL/dw| of the group over a few training batches (Molchanov et al. 2019)"

    def __init__(self, batches: int = 8, batch_size: int = 64) -> None:
        self.batches = batches
        self.batch_size = batch_size

    def scores(self, graph: PruningGraph, *, data: Any = None, seed: int = 0) -> list[torch.Tensor]:
        if data is None:
            raise ConfigError("taylor scores need training data: pass --data")
        self._accumulate_gradients(graph, data, seed)
        scores = _group_scores(graph, tp.importance.GroupTaylorImportance(normalizer="mean"))
        graph.model.zero_grad(set_to_none=True)
        return scores

    def _accumulate_gradients(self, graph: PruningGraph, data: Any, seed: int) -> None:
        model = graph.model
        model.zero_grad(set_to_none=True)
        was = model.training
        model.eval()  # BN statistics stay as trained; gradients are what we need
        for i, (x, y) in enumerate(make_loader(data.train, self.batch_size, shuffle=True, seed=seed)):
            if i >= self.batches:
                break
            F.cross_entropy(model(x), y).backward()
        model.train(was)


@register
class RandomScores(Criterion):
    name = "random"
    description = "random channel scores (a sanity baseline)"

    def scores(self, graph: PruningGraph, *, data: Any = None, seed: int = 0) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [torch.rand(g.size, generator=gen) for g in graph.groups]


@register
class Uniform(Criterion):
    name = "uniform"
    description = "the same fraction of every group (width scaling), channels ranked by L1 within a group"

    def scores(self, graph: PruningGraph, *, data: Any = None, seed: int = 0) -> list[torch.Tensor]:
        # rank within each group by L1, then score = 1 - rank / size: a global threshold on these scores
        # removes the same fraction of every group
        with torch.no_grad():
            l1 = _group_scores(graph, tp.importance.GroupMagnitudeImportance(p=1, normalizer=None))
        out = []
        for s in l1:
            rank = torch.empty_like(s)
            rank[torch.argsort(s, descending=True)] = torch.arange(s.numel(), dtype=s.dtype)
            out.append(1.0 - rank / s.numel())
        return out


def channel_scores(graph: PruningGraph, method: CriterionLike, *, seed: int = 0,
                   data: Any = None) -> list[torch.Tensor]:
    """One score vector per group from a registered name or a criterion object."""
    return get_criterion(method).scores(graph, data=data, seed=seed)
