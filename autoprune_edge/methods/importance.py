"""Per-channel importance scores for the score-then-select baselines (higher = keep).

Every baseline goes through the same budgeted selection as AutoPrune (methods.selection), so they are
compared at equal budgets with equal rounding. Scores are normalised per group (mean 1) so that one
global threshold ranks channels of different layers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp

from ..errors import AutoPruneEdgeError
from ..graph import PruningGraph

METHODS = {
    "l1": "L1-norm group magnitude (Torch-Pruning GroupMagnitudeImportance, p=1), global ranking",
    "bn": "BatchNorm scale |gamma| of the group (network slimming, Liu et al. 2017), global ranking",
    "taylor": "first-order Taylor |w * dL/dw| of the group over a few training batches (Molchanov et al. 2019)",
    "random": "random channel scores (a sanity baseline)",
    "uniform": "the same fraction of every group (width scaling), channels ranked by L1 within a group",
}


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


def _taylor_gradients(graph: PruningGraph, data: Any, batches: int, batch_size: int, seed: int) -> None:
    from ..train import make_loader

    model = graph.model
    model.zero_grad(set_to_none=True)
    was = model.training
    model.eval()  # BN statistics stay as trained; gradients are what we need
    for i, (x, y) in enumerate(make_loader(data.train, batch_size, shuffle=True, seed=seed)):
        if i >= batches:
            break
        F.cross_entropy(model(x), y).backward()
    model.train(was)


def channel_scores(graph: PruningGraph, method: str, *, seed: int = 0, data: Any = None, batches: int = 8,
                   batch_size: int = 64) -> list[torch.Tensor]:
    """One score vector per group, normalised per group so that scores compare across groups."""
    if method == "l1":
        with torch.no_grad():
            return _group_scores(graph, tp.importance.GroupMagnitudeImportance(p=1, normalizer="mean"))
    if method == "bn":
        with torch.no_grad():
            return _group_scores(graph, tp.importance.BNScaleImportance(normalizer="mean"))
    if method == "taylor":
        if data is None:
            raise AutoPruneEdgeError("taylor scores need training data: pass --data")
        _taylor_gradients(graph, data, batches, batch_size, seed)
        scores = _group_scores(graph, tp.importance.GroupTaylorImportance(normalizer="mean"))
        graph.model.zero_grad(set_to_none=True)
        return scores
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        return [torch.rand(g.size, generator=gen) for g in graph.groups]
    if method == "uniform":
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
    raise AutoPruneEdgeError(f"unknown pruning method {method!r}; choose autoprune or one of: {', '.join(METHODS)}")
