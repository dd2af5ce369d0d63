"""Keep the hard-masked cost on the controller's moving target, in both directions.

The gate step is RMS-normalised, so it keeps its size while the multiplier shrinks; together with the
gate optimiser's momentum it can carry the mask far below the target in a few steps (ResNet-20 on a
40-step schedule: 36.7M -> 3.2M MACs against a 20.3M target, and the model did not recover). Closing
the lowest gates when over the target and reopening the highest closed ones when well under it keeps
the mask where the schedule says, and leaves the choice of *which* channels to the learned gate values.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

from .gates import ChannelGates, WeightGates

if TYPE_CHECKING:
    from .autoprune import Controller

CostFn = Callable[[list[torch.Tensor]], dict[str, torch.Tensor]]
CLOSED = -1e-3  # where a closed gate is put: just below zero, so it can reopen by learning
REOPENED = 1e-3  # and where a reopened one is put: just above zero


@torch.no_grad()
def project_to_target(gates: ChannelGates | WeightGates, cost_fn: CostFn, ctrl: "Controller", step: int,
                      optimizer: torch.optim.Optimizer | None = None, reopen_below: float | None = 0.02) -> None:
    """Close the lowest open gates while the hard-masked model is over the current target; reopen the
    highest closed gates while it is more than ``reopen_below`` (relative) under it, as many as fit
    under the target. Reopened gates lose their optimiser momentum, which would close them again."""
    targets = {b.kind: ctrl.target(b, step) for b in ctrl.budgets}
    ungated = getattr(gates, "ungated", {})
    learn = [i for i in range(len(gates.m)) if i not in ungated]

    # every gate in one vector, compared once per evaluation (the searches evaluate it ~10 times a step);
    # ungated groups at +inf, so every threshold keeps them
    flat = torch.cat([torch.full((m.numel(),), math.inf, device=m.device) if i in ungated else m.flatten()
                      for i, m in enumerate(gates.m)])
    sizes = [m.numel() for m in gates.m]
    kept = torch.empty(flat.shape, dtype=torch.float64, device=flat.device)  # one buffer: half of each evaluation

    def excess(threshold: float) -> float:
        """Largest relative overshoot of a target with only the gates > threshold open (> 0: over)."""
        torch.gt(flat, threshold, out=kept)
        c = cost_fn([k.view_as(m) for k, m in zip(kept.split(sizes), gates.m)])
        return max((float(c[k]) - t) / t for k, t in targets.items() if k in c)

    now = excess(0.0)
    if now > 0:
        _close(gates, learn, excess, now)
    elif reopen_below is not None and now < -reopen_below:
        _reopen(gates, learn, excess, optimizer, -now)


def _close(gates: ChannelGates | WeightGates, learn: list[int], excess: Callable[[float], float],
           over_now: float) -> None:
    vals = torch.cat([gates.m[i][gates.m[i] > 0].flatten() for i in learn]) if learn else torch.zeros(0)
    if vals.numel() == 0:
        return
    # closing every gate <= vals[j] must fit; find the smallest such j (the fewest closed) by bisection
    k = max(64, int(4 * over_now * vals.numel()))
    vals, hi = _extremes(vals, k, largest=False, enough=lambda v, j: excess(float(v[j])) <= 0)
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if excess(float(vals[mid])) > 0:
            lo = mid + 1
        else:
            hi = mid
    tau = float(vals[lo])
    for i in learn:
        m = gates.m[i]
        m[(m > 0) & (m <= tau)] = CLOSED


def _reopen(gates: ChannelGates | WeightGates, learn: list[int], excess: Callable[[float], float],
            optimizer: torch.optim.Optimizer | None, under_now: float) -> None:
    closed = torch.cat([gates.m[i][gates.m[i] <= 0].flatten() for i in learn]) if learn else torch.zeros(0)
    if closed.numel() == 0:
        return
    # opening every closed gate ranked 0..j (highest first) must still fit; find the largest such j (the
    # most reopened) by bisection
    n_open = sum(gates.m[i].numel() for i in learn) - closed.numel()
    k = max(64, int(4 * under_now * max(n_open, 1)))
    vals, hi = _extremes(closed, k, largest=True, enough=lambda v, j: not _fits_opening(excess, v, j))
    if not _fits_opening(excess, vals, 0):  # not even the highest closed gate fits
        return
    lo = 0  # invariant: opening gates >= vals[lo] fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits_opening(excess, vals, mid):
            lo = mid
        else:
            hi = mid - 1
    thr = _opening_threshold(vals, lo)  # the same cut the search judged: ties at the boundary stay closed
    for i in learn:
        m = gates.m[i]
        sel = (m <= 0) & (m > thr)
        if not bool(sel.any()):
            continue
        m[sel] = REOPENED
        if optimizer is not None:
            _forget(optimizer, m, sel)


def _extremes(values: torch.Tensor, k: int, largest: bool,
              enough: Callable[[torch.Tensor, int], bool]) -> tuple[torch.Tensor, int]:
    """The values a search needs, sorted (descending when ``largest``), and the last index it may pick.

    A step usually moves a sliver of the gates (the target moves a little per step), so the k + 1 most
    extreme values come first (one more than the search range, so the cut after the last candidate is the
    true one), widened eightfold while ``enough(vals, k - 1)`` says the answer may lie beyond them, e.g.
    inside a block of gates tied at CLOSED; all values are sorted only when k reaches their number.
    Sorting ~430k per-weight gates on every reopening step was a quarter of a late unstructured LeNet-5 gate
    epoch."""
    n = values.numel()
    while k + 1 < n:
        vals = torch.topk(values, k + 1, largest=largest, sorted=True).values
        if enough(vals, k - 1):
            return vals, k - 1
        k *= 8
    return values.sort(descending=largest).values, n - 1


def _opening_threshold(vals: torch.Tensor, j: int) -> float:
    """The cut that opens the closed gates ranked 0..j (values sorted descending): halfway to the next value,
    so "open" (m > cut) takes exactly those; where vals[j + 1] ties vals[j], the cut is vals[j] itself and the
    tied block stays closed (it is judged as a whole when j reaches its end)."""
    below = float(vals[j + 1]) if j + 1 < vals.numel() else float(vals[j]) - 1.0
    return (below + float(vals[j])) / 2


def _fits_opening(excess: Callable[[float], float], vals: torch.Tensor, j: int) -> bool:
    """Whether opening the closed gates ranked 0..j keeps the mask within the target."""
    return excess(_opening_threshold(vals, j)) <= 0


def _forget(optimizer: torch.optim.Optimizer, param: torch.Tensor, where: torch.Tensor) -> None:
    """Zero the optimiser's running state (momentum, Adam moments) of ``param`` at ``where``."""
    for v in optimizer.state.get(param, {}).values():
        if isinstance(v, torch.Tensor) and v.shape == param.shape:
            v[where] = 0
