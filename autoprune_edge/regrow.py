"""Masked fine-tuning that moves weights inside each layer (RigL-style drop and grow).

After unstructured selection the mask is fixed by gates trained with the whole net; fine-tuning the
survivors alone cannot fix a weight that the gates placed badly. Every `every` steps each layer drops
its smallest-magnitude surviving weights and grows as many pruned ones where the dense gradient is
largest (Evci et al., "Rigging the Lottery", ICML 2020: drop fraction 0.3 with cosine decay, updates
stopped at 75 % of training). Counts per layer never change, so every params or MACs budget that held
after selection still holds exactly. Grown weights start at zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class RegrowConfig:
    every: int = 100  # optimizer steps between mask updates; 0: the mask never changes
    fraction: float = 0.3  # share of each layer's survivors replaced at the first update (cosine decay)
    until: float = 0.75  # no updates after this share of the fine-tuning steps


class MaskRegrowth:
    """Owns the keep masks during fine-tuning: masks gradients, records the dense gradient on update
    steps, and swaps weights after them. Use as `train(..., step_hook=regrow)` after `attach()`."""

    def __init__(self, named: dict[str, nn.Module], masks: dict[str, torch.Tensor], total_steps: int,
                 cfg: RegrowConfig = RegrowConfig()) -> None:
        self.modules = {n: named[n] for n in masks}
        self.masks = {n: k.bool().clone() for n, k in masks.items()}
        self.total_steps = max(1, total_steps)
        self.cfg = cfg
        self.step = 0
        self.moved = 0  # weights swapped so far (all layers, all updates)
        self._grads: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def attach(self) -> MaskRegrowth:
        for n, m in self.modules.items():
            self._handles.append(m.weight.register_hook(lambda g, n=n: self._on_grad(n, g)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._grads.clear()

    def _update_due(self, step: int) -> bool:
        return self.cfg.every > 0 and step % self.cfg.every == 0 and step < self.cfg.until * self.total_steps

    def _on_grad(self, name: str, g: torch.Tensor) -> torch.Tensor:
        k = self.masks[name]
        if k.device != g.device:
            self.masks[name] = k = k.to(g.device)
        if self._update_due(self.step + 1):
            self._grads[name] = g.detach().float().abs()
        return g * k.to(g.dtype)

    def drop_fraction(self, step: int) -> float:
        return self.cfg.fraction / 2 * (1 + math.cos(math.pi * step / (self.cfg.until * self.total_steps)))

    @torch.no_grad()
    def after_step(self) -> None:
        """Called once per optimizer step: keep pruned weights at zero, swap weights on update steps."""
        self.step += 1
        due = self._update_due(self.step) and len(self._grads) == len(self.masks)
        for n, m in self.modules.items():
            k = self.masks[n]
            if due:
                self._swap(n, m.weight, k, self.drop_fraction(self.step))
            m.weight.mul_(k.to(m.weight.dtype))  # momentum can move a pruned weight; the mask is the contract
        self._grads.clear()

    def _swap(self, name: str, w: torch.Tensor, k: torch.Tensor, frac: float) -> None:
        n_alive = int(k.sum())
        n_move = min(int(frac * n_alive), k.numel() - n_alive)
        if n_move <= 0:
            return
        grad = self._grads[name]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(grad)  # every rank must pick the same weights
        # flat indices in logical (row-major) order, whatever the memory format (channels_last on CPUs and GPUs)
        flat_k = k.reshape(-1)
        magnitude = w.abs().reshape(-1).float()
        alive = torch.where(flat_k, magnitude, torch.full_like(magnitude, math.inf))
        drop = torch.unravel_index(torch.topk(alive, n_move, largest=False).indices, k.shape)
        score = torch.where(flat_k, torch.full_like(magnitude, -math.inf), grad.reshape(-1))
        grow = torch.unravel_index(torch.topk(score, n_move).indices, k.shape)  # never alive before: no undo
        k[drop] = False
        k[grow] = True
        w[grow] = 0.0  # under after_step's no_grad
        self.moved += n_move

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "moved": self.moved, "masks": {n: k.cpu() for n, k in self.masks.items()}}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.step, self.moved = int(st["step"]), int(st["moved"])
        for n, k in st["masks"].items():
            self.masks[n].copy_(k.to(self.masks[n].device))


__all__ = ["MaskRegrowth", "RegrowConfig"]
