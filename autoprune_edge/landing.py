"""Landing a latency budget on a measured latency, where the build can measure: the machine running it.

A profile predicts within its `latency_error_pct`, and a shared VM runs faster or slower by the day, so a
`--budget 2.5ms --target host` build selected on predictions alone lands anywhere from -10 % to +15 % of
2.5 ms. When the target is the machine doing the build, each candidate selection is compacted, converted
and timed here, and the selection is repeated from the same channel scores with the predicted-latency
limit corrected by the measured miss (scaled, then bisected once candidates on both sides are known),
aiming at the middle of the promised band. The scores (the gates, or a criterion's) are not retrained:
only how many channels each group keeps moves.

Why stop only in [STOP_LOW, STOP_HIGH] x budget, not anywhere in the promised [LOW x budget, budget]: a
reading is off by a per cent or two either way (benchmarks/results/probe_vs_visits*.md), so a candidate read at
-4.9 % or -0.2 % is as likely out of the band as in it once timed alone. Stopping near the middle leaves that
error room on both sides. Simulated (benchmarks/results/landing_noise.md: a stand-in device and selection, a
probe with bias and uniform noise of ±1-3 %), the centred band keeps 95-100 % of landings in the promised band when
the probe reads without bias and 86-100 % when it reads 1 % fast, against 83-99 % and 60-68 % for a band at the top;
a probe reading 1 % slow or more favours the top band, which is where the landing stopped while its probe anchored
on blocks and read 1-4 % slow. Anchored on visits (profiles.host.LatencyProbe) it read -1.4 % (median of 5).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from .budget import Budget
from .errors import BudgetUnreachableError
from .graph import PruningGraph
from .methods.selection import Evaluator, select

Probe = Callable[[nn.Module], float]  # a compacted model -> its measured latency in ms (profiles.host.LatencyProbe)
LOW = 0.95  # the promise: a landing within [LOW x budget, budget]
STOP_LOW, STOP_HIGH = 0.96, 0.99  # the search stops at a reading in [STOP_LOW, STOP_HIGH] x budget (module doc)
TRIES = 8  # measured candidates at most (each is one conversion, ~6 s for MobileNetV2, and ~4 s of timing)


@dataclass(frozen=True)
class LandingStep:
    limit_ms: float  # the predicted-latency limit this candidate was selected under
    predicted_ms: float
    measured_ms: float

    def text(self) -> str:
        return f"selected at {self.limit_ms:.3f} ms predicted ({self.predicted_ms:.3f}) -> measured {self.measured_ms:.3f}"


@dataclass(frozen=True)
class _Tried:
    limit_ms: float
    keep: list[torch.Tensor]
    reading_ms: float
    anchor_ms: float  # the probe's anchor when it read this candidate


def land(graph: PruningGraph, scores: list[torch.Tensor], budgets: list[Budget], evaluate: Evaluator,
         keep: list[torch.Tensor], probe: Probe) -> tuple[list[torch.Tensor], list[LandingStep]]:
    """The measured candidate nearest the middle of the promised band (or, if none is in it, the slowest under
    the tightest latency budget, else the fastest), and every candidate's numbers. ``keep`` is the selection
    made on predictions.

    A probe with an ``anchor_ms`` attribute (profiles.host.LatencyProbe: a reading is a ratio to the dense
    reference times that reference's typical timing so far) has its earlier readings re-scaled as the anchor
    moves, so a slow phase at the first candidates does not steer the later ones.

    Re-selections run the greedy add-back pass even though each evaluation profiles a compacted copy: a
    bare threshold selection jumps in steps too coarse to land within a few per cent."""
    lat = [b for b in budgets if b.kind == "latency_ms"]
    if not lat:
        return keep, []
    goal = min(b.value for b in lat)
    aim, stop_low, stop_high = (STOP_LOW + STOP_HIGH) / 2 * goal, STOP_LOW * goal, STOP_HIGH * goal

    def anchor() -> float:
        return float(getattr(probe, "anchor_ms", 1.0))

    def ms(t: _Tried) -> float:
        return t.reading_ms * anchor() / t.anchor_ms

    tried: list[_Tried] = []
    limit = goal
    for _ in range(TRIES):
        trial = graph.copy()
        trial.compact(keep)
        reading = probe(trial.model)
        tried.append(_Tried(limit, keep, reading, anchor()))
        if any(stop_low <= ms(t) <= stop_high for t in tried):
            break
        under = max((t.limit_ms for t in tried if ms(t) < stop_low), default=0.0)
        over = min((t.limit_ms for t in tried if ms(t) > stop_high), default=math.inf)
        # the selection undershoots its limit by a model-dependent gap and the device differs from the profile:
        # scale the limit by aim / measured, or bisect (geometrically) once a limit on each side is known
        limit = math.sqrt(under * over) if under > 0 and over < math.inf else limit * aim / ms(tried[-1])
        try:
            nxt = select(graph, scores, [replace(b, value=limit) if b.kind == "latency_ms" else b for b in budgets],
                         evaluate, fill=True)
        except BudgetUnreachableError:
            break
        if any(all(torch.equal(a, b) for a, b in zip(nxt, t.keep)) for t in tried):
            break  # the corrected limit selects channels already measured: nothing left to move
        keep = nxt
    steps = [LandingStep(t.limit_ms, float(evaluate(t.keep)["latency_ms"]), ms(t)) for t in tried]
    in_band = [t for t in tried if LOW * goal <= ms(t) <= goal]
    under_goal = [t for t in tried if ms(t) <= goal]
    if in_band:
        best = min(in_band, key=lambda t: abs(ms(t) - aim))
    else:
        best = max(under_goal, key=ms) if under_goal else min(tried, key=ms)
    return best.keep, steps
