"""The target's predicted latency as the gates see it: a latency budget's cost, and the speed tilt.

Under a MACs or parameter budget many structures meet the budget, and the target does not run them equally
fast: on a Zen 4 with LiteRT, depthwise convolutions are 7 % of MobileNetV2's MACs but 19 % of its fp32 and
35 % of its int8 time (the host profile calibrated there). The speed tilt bends the gradient of the budget's
cost, not its value, toward the target's predicted latency: each gate is pushed by a blend of the MACs (or
parameters) its channel saves and the milliseconds it saves, so channels that are slow per MAC close first,
while the controller still steers the budget's own quantity to the budget.

After the gates, `faster_selection` runs the selection's exchange (methods/selection.py) with the same
relative latency, and keeps its result only if the full profile of the compacted model agrees it is faster.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .budget import Budget
from .cost import GroupCostModel, LinearLatency
from .graph import PruningGraph
from .methods.selection import Evaluator, exchange
from .profiles.latency import kernel_fixed_ms
from .profiles.profile import profile

Keep = list[torch.Tensor]


def latency_model(cost: GroupCostModel, model: nn.Module, input_shape: tuple[int, ...], target,
                  precision: str | None = None) -> LinearLatency:
    """Predicted latency on `target` in `precision` (the target's default when None) as a function of keep vectors."""
    dense = profile(model, input_shape, target, precision=precision)
    return cost.latency_model({x.name: x.latency_ms for x in dense.layers}, dense.latency_ms,
                              kernel_fixed_ms(target, dense.threads))


def relative_latency(cost: GroupCostModel, model: nn.Module, input_shape: tuple[int, ...], target,
                     precisions: tuple[str, ...]) -> Callable[[Keep], torch.Tensor]:
    """Mean over `precisions` of predicted latency / the dense model's: 1.0 for the dense model, and a
    channel's weight in it is its share of the time of every file the build writes."""
    models = [latency_model(cost, model, input_shape, target, p) for p in precisions]
    full = [torch.ones(int(n), dtype=torch.float64) for n in cost.sizes.tolist()]
    dense = [float(m(full)) for m in models]

    def fn(keep: Keep) -> torch.Tensor:
        return sum(m(keep) / d for m, d in zip(models, dense)) / len(models)

    return fn


def bend(value: torch.Tensor, toward: torch.Tensor, dense_value: float, weight: float) -> torch.Tensor:
    """`value` unchanged, its gradient (1 - weight) d value + weight * dense_value * d toward.

    ``toward`` is a relative latency (1.0 at the dense model), so ``dense_value * toward`` is in the
    value's own units and the total push on the gates stays about what it was."""
    if weight <= 0.0:
        return value
    mixed = (1.0 - weight) * value + weight * dense_value * toward.to(value.dtype)
    return value.detach() + (mixed - mixed.detach())


@dataclass(frozen=True)
class Exchange:
    """The selection's exchange as the target's full profile saw it (predicted ms per precision)."""

    target: str
    before_ms: dict[str, float]
    after_ms: dict[str, float]
    kept: bool

    def text(self) -> str:
        pairs = ", ".join(f"{p} {self.before_ms[p]:.3g} -> {self.after_ms[p]:.3g} ms" for p in self.before_ms)
        if self.kept:
            return (f"channels exchanged between groups for {self.target}'s speed (same budget, no less gate score): "
                    f"predicted {pairs}")
        return f"channel exchange for {self.target} not kept: its full profile predicted {pairs}"


def faster_selection(graph: PruningGraph, cost: GroupCostModel, scores: list[torch.Tensor], keep: list[torch.Tensor],
                     budgets: list[Budget], evaluate: Evaluator, target: Any, input_shape: tuple[int, ...]
                     ) -> tuple[list[torch.Tensor], Exchange | None]:
    """`keep`, or the exchange's faster selection when the target's profile of both compacted models says so."""
    precisions = tuple(target.precisions)
    if not precisions or all(bool(k.all()) for k in keep):
        return keep, None
    rel = relative_latency(cost, graph.model, input_shape, target, precisions)
    new = exchange(graph, scores, keep, budgets, evaluate,
                   lambda masks: float(rel([m.to(torch.float64) for m in masks])))
    if all(bool(torch.equal(a, b)) for a, b in zip(keep, new)):
        return keep, None

    def predicted(masks: list[torch.Tensor]) -> dict[str, float]:
        trial = graph.copy()
        trial.compact(masks)
        return {p: profile(trial.model, input_shape, target, precision=p).latency_ms for p in precisions}

    before, after = predicted(keep), predicted(new)
    kept = sum(after[p] / before[p] for p in precisions) < len(precisions)
    return (new if kept else keep), Exchange(target.name, before, after, kept)
