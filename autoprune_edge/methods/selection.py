"""Turn per-channel scores into keep masks that meet every budget with as little removed as possible.

A global score threshold is bisected (fewer channels kept as it rises, so every cost falls
monotonically); each group then keeps its top channels, rounded down to a count it allows (multiples of
the target's channel tile, its narrow tile, or everything; `ChannelGroup.counts`) and never below its
minimum. A greedy pass adds back channels up to each group's next allowed count, best scores first, while
all budgets still hold, which closes most of the gap that rounding leaves.

Rounding to tiles makes this a knapsack that the threshold solves only roughly, and many selections meet
the budget about equally well. `exchange` then trades whole blocks of channels between groups where that
makes the target faster (a predicted latency) without lowering the kept score mass, so the gates' own
objective never gets worse and, of two near-equal structures, the faster one ships.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..budget import Budget, format_budget_value, within
from ..errors import BudgetUnreachableError
from ..graph import PruningGraph

Evaluator = Callable[[list[torch.Tensor]], dict[str, float]]
Speed = Callable[[list[torch.Tensor]], float]  # keep masks -> a predicted latency (any unit)


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
          evaluate: Evaluator, masks: Callable[[list[int]], list[torch.Tensor]] | None = None) -> list[int]:
    """Greedily add back one block of channels at a time (best next score first) while budgets hold."""
    masks = masks or (lambda c: [g.keep_top(s, n) for g, s, n in zip(graph.groups, scores, c)])
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
        if _fits(evaluate(masks(trial)), budgets):
            counts = trial
        else:
            blocked.add(best)


def exchange(graph: PruningGraph, scores: list[torch.Tensor], keep: list[torch.Tensor], budgets: list[Budget],
             evaluate: Evaluator, speed: Speed, *, max_moves: int | None = None, give_up: float = 0.02,
             shortlist: int = 8, min_gain: float = 1e-3, max_evaluations: int = 20_000) -> list[torch.Tensor]:
    """Keep masks at least as good as `keep` by score mass and faster by `speed`, still meeting every budget.

    A move takes one block of a group's lowest-scoring kept channels, optionally gives one block of another
    group's best removed ones, and refills the budget it frees as `select` does. It is made only if, after
    the refill, the kept scores' sum has not fallen, every budgeted quantity is still within `give_up` of
    what `keep` uses (the exchange rearranges the budget, it does not hand it back: per-channel scores that
    ignore cost would otherwise trade one costly channel for two cheap ones and halve the model), and
    `speed` has fallen by `min_gain` of itself (or has not risen while the sum rose). Each round refills
    the drop-only moves and the `shortlist` two-group moves that are fastest before refilling, takes the
    fastest acceptable one, and stops when none is left, or after the round in which `evaluate` was called
    `max_evaluations` times (a bound on the time a graph of many groups can take). `keep` must come from
    `select` on `scores`.
    """
    groups = graph.groups
    scores = [g.protect(s) for g, s in zip(groups, scores)]
    movable = [i for i, s in enumerate(scores) if not bool(torch.isinf(s).all())]
    kept: dict[tuple[int, int], torch.Tensor] = {}
    sums: dict[tuple[int, int], float] = {}

    def group_mask(i: int, n: int) -> torch.Tensor:
        if (i, n) not in kept:
            kept[i, n] = groups[i].keep_top(scores[i], n)
            s = scores[i][kept[i, n]]
            sums[i, n] = float(s[torch.isfinite(s)].sum())
        return kept[i, n]

    def masks(counts: list[int]) -> list[torch.Tensor]:
        return [group_mask(i, n) for i, n in enumerate(counts)]

    def group_mass(i: int, n: int) -> float:
        group_mask(i, n)  # computes and caches the sum with the mask
        return sums[i, n]

    def mass(counts: list[int]) -> float:
        return sum(group_mass(i, counts[i]) for i in movable)

    calls = 0

    def counted(keep_masks: list[torch.Tensor]) -> dict[str, float]:
        nonlocal calls
        calls += 1
        return evaluate(keep_masks)

    counts = [int(k.sum()) for k in keep]
    tol = 1e-9 * max(1.0, abs(mass(counts)))
    used = evaluate(keep)
    floor = {b.kind: (1.0 - give_up) * used[b.kind] for b in budgets}
    seen = {tuple(counts)}
    for _ in range(max_moves if max_moves is not None else 2 * len(groups)):
        if calls >= max_evaluations:
            break
        lat, now = speed(masks(counts)), mass(counts)
        drops = {i: c for i in movable if (c := groups[i].lower_count(counts[i])) is not None}
        moves = [dict([(i, c)]) for i, c in drops.items()]
        pairs = []
        for i, c in drops.items():
            for j in movable:
                higher = groups[j].next_count(counts[j]) if j != i else None
                if higher is None:
                    continue
                trial = list(counts)
                trial[i], trial[j] = c, higher
                if _fits(counted(masks(trial)), budgets):
                    pairs.append((speed(masks(trial)), {i: c, j: higher}))
        moves += [m for _, m in sorted(pairs, key=lambda p: p[0])[:shortlist]]
        pick: tuple[tuple[float, float], list[int]] | None = None
        for move in moves:
            trial = list(counts)
            for k, c in move.items():
                trial[k] = c
            trial = _fill(graph, scores, trial, budgets, counted, masks)
            gain = mass(trial) - now
            if tuple(trial) in seen or gain < -tol:
                continue
            metrics = counted(masks(trial))
            if any(metrics[k] < v for k, v in floor.items()):
                continue
            faster = speed(masks(trial)) - lat
            better = faster < -min_gain * lat or (faster <= 0 and gain > tol)
            if better and (pick is None or (faster, -gain) < pick[0]):
                pick = ((faster, -gain), trial)
        if pick is None:
            break
        counts = pick[1]
        seen.add(tuple(counts))
    return masks(counts)
