"""Per-channel importance scores for the score-then-select baselines (higher = keep)."""
from __future__ import annotations

import torch
import torch_pruning as tp

from ..errors import AutoPruneEdgeError
from ..graph import PruningGraph

# Methods that rank channels once from the trained weights. AutoPrune (learned gates) lives elsewhere.
METHODS = {
    "l1": "L1-norm group magnitude (Torch-Pruning GroupMagnitudeImportance, p=1), global ranking",
    "random": "random channel scores (a sanity baseline)",
}


def channel_scores(graph: PruningGraph, method: str, *, seed: int = 0) -> list[torch.Tensor]:
    """One score vector per group, normalised per group so that scores compare across groups."""
    if method == "l1":
        imp = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer="mean")
        out = []
        with torch.no_grad():
            for g in graph.groups:
                s = imp(g.tp_group)
                if s is None:
                    s = torch.ones(g.size)
                out.append(s.detach().float().flatten()[: g.size].clone())
        return out
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        return [torch.rand(g.size, generator=gen) for g in graph.groups]
    raise AutoPruneEdgeError(f"unknown pruning method {method!r}; choose one of: {', '.join(METHODS)}")
