"""Turn per-channel scores into keep masks that meet every budget with as little removed as possible.

A global score threshold is bisected (fewer channels kept as it rises, so every cost falls
monotonically); each group then keeps its top channels, rounded down to a count it allows (multiples of
the target's channel tile, its narrow tile, or everything; `ChannelGroup.counts`) and never below its
minimum. A greedy pass adds back channels up to each group's next allowed count, best scores first, while
all budgets still hold, which closes most of the gap that rounding leaves.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..budget import Budget, format_budget_value, within
from ..errors import BudgetUnreachableError
from ..graph import PruningGraph

Evaluator = Callable[[list[torch.Tensor]], dict[str, float]]


def _counts_for(graph: PruningGraph, scores: list[torch.Tensor], t: float, floor: list[int]) -> list[int]:
    counts = []
    for g, s, lo in zip(graph.groups, scores, floor):
        counts.append(max(lo, g.floor_count(int((s >= t).sum()))))
    return counts


def _fits(metrics: dict[str, float], budgets: list[Budget]) -> bool:
    return all(within(b, metrics[b.kind]) for b in budgets)


def select(graph: PruningGraph, scores: list[torch.Tensor], budgets: list[Budget],
           evaluate: Evaluator, *, fill: bool = True) -> list[torch.Tensor]:
    """Keep masks (one bool vector per group) meeting all budgets; raises if none can.

    `fill` runs the greedy add-back pass; leave it off when `evaluate` is slow (it may call it often).
    """
    scores = [g.protect(s) for g, s in zip(graph.groups, scores)]

    def masks(counts: list[int]) -> list[torch.Tensor]:
        return [g.keep_top(s, n) for g, s, n in zip(graph.groups, scores, counts)]

    full = [g.size for g in graph.groups]
    if _fits(evaluate(masks(full)), budgets):
        return masks(full)
    # a group whose scores are all +inf is frozen (e.g. it could not be gated): it stays whole
    floor = [g.size if bool(torch.isinf(s).all()) else g.min_keep for g, s in zip(graph.groups, scores)]
    m_floor = evaluate(masks(floor))
    if not _fits(m_floor, budgets):
        worst = [b for b in budgets if m_floor[b.kind] > b.value][0]
        raise BudgetUnreachableError(
            f"budget {worst.text} cannot be reached: removing every prunable channel this method allows still "
            f"leaves {format_budget_value(worst.kind, m_floor[worst.kind])}; raise the budget or pick a smaller model")
    finite = torch.cat(scores)
    thresholds = torch.unique(finite[torch.isfinite(finite)]).sort().values
    lo, hi = 0, thresholds.numel()  # counts_for(thresholds[hi]) is taken as the floor
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits(evaluate(masks(_counts_for(graph, scores, float(thresholds[mid]), floor))), budgets):
            hi = mid
        else:
            lo = mid + 1
    counts = floor if lo >= thresholds.numel() else _counts_for(graph, scores, float(thresholds[lo]), floor)
    if fill:
        counts = _fill(graph, scores, counts, budgets, evaluate)
    return masks(counts)


def _fill(graph: PruningGraph, scores: list[torch.Tensor], counts: list[int], budgets: list[Budget],
          evaluate: Evaluator) -> list[int]:
    """Greedily add back one block of channels at a time (best next score first) while budgets hold."""
    counts = list(counts)
    sorted_scores = [torch.sort(s, descending=True).values for s in scores]
    blocked: set[int] = set()
    while True:
        best, best_score = None, None
        for i, g in enumerate(graph.groups):
            if i in blocked or g.next_count(counts[i]) is None:
                continue
            score = float(sorted_scores[i][counts[i]])
            if best_score is None or score > best_score:
                best, best_score = i, score
        if best is None:
            return counts
        trial = list(counts)
        trial[best] = graph.groups[best].next_count(trial[best])
        if _fits(evaluate([g.keep_top(s, n) for g, s, n in zip(graph.groups, scores, trial)]), budgets):
            counts = trial
        else:
            blocked.add(best)
