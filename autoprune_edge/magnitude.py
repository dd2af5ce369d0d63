"""Gradual magnitude pruning of single weights: the unstructured baseline (`--method l1 --granularity unstructured`).

Zhu & Gupta ("To prune, or not to prune", 2017): while the weights train, every `every` steps the smallest
weights (one global ranking by |w| over every conv/linear weight) are zeroed so that the kept count follows
a cubic schedule from dense to the budget over the first `ramp` of the phase; the rest of the phase trains
the final mask. Sparse-training papers report LeNet-5 and ResNets against it, so AutoPrune's per-weight
gates are measured against it at equal epochs (benchmarks/lenet_mnist.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class GradualConfig:
    every: int = 50  # optimizer steps between mask updates
    ramp: float = 0.5  # share of the phase over which the kept count falls to the budget (cubic)


def cubic_count(dense: int, final: int, t: float) -> int:
    """Kept weights at progress t in [0, 1]: fast cuts first, slow near the budget (Zhu & Gupta's schedule)."""
    t = min(1.0, max(0.0, t))
    return final + round((dense - final) * (1.0 - t) ** 3)


class GradualMagnitude:
    """Owns the keep masks while the weights train: masks gradients, and on update steps re-ranks every
    weight by magnitude and keeps the scheduled count. Use as `train(..., step_hook=hook)` after `attach()`.

    `final_keep(scores)` returns the masks that meet every budget for given |w| scores (unstructured.py's
    selection); it runs at the end of the ramp, so the last mask is exactly the budgeted one.
    """

    def __init__(self, named: dict[str, nn.Module], names: list[str], total_steps: int,
                 final_keep: Callable[[list[torch.Tensor]], list[torch.Tensor]],
                 final_count: int, cfg: GradualConfig = GradualConfig()) -> None:
        self.modules = [named[n] for n in names]
        self.masks = [torch.ones_like(m.weight, dtype=torch.bool) for m in self.modules]
        self.dense = sum(k.numel() for k in self.masks)
        self.final_count = final_count
        self.final_keep = final_keep
        self.ramp_steps = max(1, int(cfg.ramp * max(1, total_steps)))
        self.cfg = cfg
        self.step = 0
        self.done = False  # the budgeted mask is in place
        self._handles: list[Any] = []

    def attach(self) -> GradualMagnitude:
        for i, m in enumerate(self.modules):
            self._handles.append(m.weight.register_hook(lambda g, i=i: self._on_grad(i, g)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _on_grad(self, i: int, g: torch.Tensor) -> torch.Tensor:
        k = self.masks[i]
        if k.device != g.device:
            self.masks[i] = k = k.to(g.device)
        return g * k.to(g.dtype)

    def scores(self) -> list[torch.Tensor]:
        return [m.weight.detach().abs().float().cpu() for m in self.modules]

    @torch.no_grad()
    def after_step(self) -> None:
        """Called once per optimizer step: re-rank on update steps, keep pruned weights at zero."""
        self.step += 1
        if not self.done and (self.step % self.cfg.every == 0 or self.step >= self.ramp_steps):
            self._update()
        self._zero_pruned()

    def _zero_pruned(self) -> None:
        for m, k in zip(self.modules, self.masks):
            m.weight.mul_(k.to(m.weight.device, m.weight.dtype))  # momentum can move a pruned weight

    def _update(self) -> None:
        if self.step >= self.ramp_steps:
            keep = self.final_keep(self.scores())
            self.done = True
        else:
            keep = top_weights(self.scores(), cubic_count(self.dense, self.final_count, self.step / self.ramp_steps))
        self.masks = [k.to(old.device) for k, old in zip(keep, self.masks)]

    def finish(self) -> list[torch.Tensor]:
        """The budgeted masks (applied to the weights), also when the phase ended before the ramp did."""
        if not self.done:
            self.step = max(self.step, self.ramp_steps)
            with torch.no_grad():
                self._update()
                self._zero_pruned()
        return [k.cpu() for k in self.masks]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "done": self.done, "masks": [k.cpu() for k in self.masks]}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.step, self.done = int(st["step"]), bool(st["done"])
        self.masks = [k.to(old.device) for k, old in zip(st["masks"], self.masks)]


def top_weights(scores: list[torch.Tensor], n_keep: int) -> list[torch.Tensor]:
    """Masks keeping the n_keep largest scores over all tensors together (one global ranking)."""
    flat = torch.cat([s.flatten() for s in scores])
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    n_keep = max(0, min(flat.numel(), n_keep))
    if n_keep:
        keep[torch.topk(flat, n_keep, sorted=False).indices] = True
    out, i = [], 0
    for s in scores:
        out.append(keep[i:i + s.numel()].view_as(s))
        i += s.numel()
    return out


__all__ = ["GradualConfig", "GradualMagnitude", "cubic_count", "top_weights"]
