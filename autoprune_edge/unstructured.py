"""Unstructured AutoPrune (the paper's "weight pruning"): one gate per conv/linear weight.

The model keeps its shape; pruned weights are zeros. Budgets count non-zero weights (`params`, plus
every parameter that is not a gated weight: biases, norms) or the MACs of non-zero weights (`macs`).
`method="l1"` replaces the gates by gradual magnitude pruning over the same epochs (magnitude.py), the
baseline sparse-training papers use; selection by budget and masked fine-tuning are shared.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from .autoprune import AutoPruneConfig, train_gates
from .budget import Budget, format_budget_value
from .checkpoint import NONE
from .device import CPU_FP32, Runtime
from .distributed import steps_per_epoch
from .errors import BudgetError, BudgetUnreachableError, ConfigError
from .gates import WeightGates
from .graph import trace_layers
from .magnitude import GradualMagnitude, top_weights
from .profiles.counting import count_macs
from .prune_result import PruneResult
from .regrow import MaskRegrowth, RegrowConfig
from .train import TrainConfig, evaluate, train


#: what single weights can be pruned by: per-weight gates, or gradual magnitude pruning (magnitude.py)
UNSTRUCTURED_METHODS = ("autoprune", "l1")


class WeightCost:
    """Non-zero parameters and sparse MACs as functions of per-weight keep masks."""

    KINDS = ("params", "macs")  # the budget kinds it counts, hence the ones unstructured pruning takes

    def __init__(self, model: nn.Module, gates: WeightGates, example: torch.Tensor) -> None:
        layers, _, _ = trace_layers(model, example)
        pos = {layer.name: layer.positions for layer in layers}
        named = dict(model.named_modules())
        self.positions = [float(pos.get(n, 0)) for n in gates.names]
        gated = sum(named[n].weight.numel() for n in gates.names)
        self.params_offset = sum(p.numel() for p in model.parameters()) - gated
        dense_sparse_macs = sum(p * named[n].weight.numel() for p, n in zip(self.positions, gates.names))
        self.macs_offset = count_macs(model, example).macs - dense_sparse_macs

    def __call__(self, keep: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        params = sum(k.sum() for k in keep) + self.params_offset
        macs = sum(k.sum() * p for k, p in zip(keep, self.positions)) + self.macs_offset
        return {"params": params, "macs": macs}


def select_weights(cost: WeightCost, scores: list[torch.Tensor], budgets: list[Budget]) -> list[torch.Tensor]:
    """Keep the highest-scoring weights such that every budget holds (bisection on the count)."""
    total = sum(s.numel() for s in scores)

    def fits(keep: list[torch.Tensor]) -> bool:
        c = cost([k.float() for k in keep])
        return all(float(c[b.kind]) <= b.value for b in budgets)

    if not fits(top_weights(scores, 1)):
        b = budgets[0]
        floor = float(cost([torch.zeros_like(s) for s in scores])[b.kind])
        raise BudgetUnreachableError(f"budget {b.text} cannot be reached even with one weight left "
                                     f"({format_budget_value(b.kind, floor)} in biases and norms)")
    lo, hi = 1, total
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(top_weights(scores, mid)):
            lo = mid
        else:
            hi = mid - 1
    return top_weights(scores, lo)


def prune_unstructured(model: nn.Module, data: Any, budgets: list[Budget], input_shape: tuple[int, ...],
                       cfg: AutoPruneConfig, *, finetune_epochs: float, lr: float, batch_size: int,
                       evaluate_accuracy: bool, seed: int, ckpt: Any = None,
                       distill: tuple[float, float] | None = None, rt: Runtime = CPU_FP32,
                       method: str = "autoprune") -> PruneResult:
    """method: "autoprune" (per-weight gates trained with the weights) or "l1" (gradual magnitude pruning)."""
    ckpt = ckpt or NONE
    if method not in UNSTRUCTURED_METHODS:
        raise ConfigError(f"unstructured pruning takes --method autoprune (per-weight gates) or l1 (gradual "
                          f"magnitude pruning), not {method!r}")
    if any(b.kind not in WeightCost.KINDS for b in budgets):
        raise BudgetError("unstructured pruning takes MACs or params budgets (non-zero weights)")
    torch.manual_seed(seed)
    model.eval()
    example = torch.randn(*input_shape)
    before = count_macs(model, example)
    teacher = copy.deepcopy(model) if distill else None
    widths = {n: list(m.weight.shape[:2]) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    acc_before = evaluate(model, data.val, desc="accuracy (dense)", rt=rt) if evaluate_accuracy and data else None
    gates = WeightGates(model, cfg.gate_config("unstructured"))
    cost = WeightCost(model, gates, example)
    dense_nonzero = int(sum(gates.m[i].numel() for i in range(len(gates.m))))
    gate_log = []
    named = dict(model.named_modules())
    if method == "l1":
        keep = _gradual_magnitude(model, named, gates.names, data, budgets, cost, cfg, seed=seed, ckpt=ckpt, rt=rt)
    else:
        if cfg.epochs > 0:
            gates.attach()
            try:
                gate_log = train_gates(model, gates, data.train, budgets, cost, cfg, desc="AutoPrune (weights)",
                                       ckpt=ckpt, rt=rt).steps
            finally:
                gates.detach(bake=False)
        keep = select_weights(cost, [m.detach() for m in gates.m], budgets)
    masks = {n: k for n, k in zip(gates.names, keep)}
    with torch.no_grad():
        for n, k in masks.items():
            named[n].weight.mul_(k.to(named[n].weight.dtype))
    acc_pruned = evaluate(model, data.val, desc="accuracy (pruned)", rt=rt) if evaluate_accuracy and data else None
    log: list[dict[str, float]] = []
    acc_after = acc_pruned
    moved = 0
    if data is not None and finetune_epochs > 0:
        # masks the gradients (on the training device), keeps pruned weights at zero and, with cfg.regrow,
        # moves weights within each layer; per-layer counts, hence every budget, stay as selected
        total = max(1, math.ceil(finetune_epochs * steps_per_epoch(data.train, batch_size)))
        regrow = MaskRegrowth(named, masks, total, cfg.regrow or RegrowConfig(every=0)).attach()
        try:
            kd_alpha, kd_t = distill or (0.0, 2.0)
            log = train(model, data.train, TrainConfig(epochs=finetune_epochs, lr=lr, batch_size=batch_size,
                                                       seed=seed, weight_decay=0.0, kd_alpha=kd_alpha,
                                                       kd_temperature=kd_t),
                        teacher=teacher, desc="fine-tune (masked)" if cfg.regrow is None else
                        "fine-tune (masked, regrowing)", ckpt=ckpt, rt=rt, step_hook=regrow)
        finally:
            regrow.detach()
        masks = {n: k.cpu() for n, k in regrow.masks.items()}
        keep = [masks[n] for n in gates.names]
        moved = regrow.moved
        with torch.no_grad():
            for n, k in masks.items():
                named[n].weight.mul_(k.to(named[n].weight.dtype))
        if evaluate_accuracy:
            acc_after = evaluate(model, data.val, desc="accuracy (fine-tuned)", rt=rt)
    nonzero = int(sum(int(k.sum()) for k in keep))
    final = cost([k.float() for k in keep])
    model.eval()
    res = PruneResult(
        model=model, history=[], method=method, budgets=budgets, input_shape=tuple(input_shape),
        macs_before=before.macs, macs_after=int(float(final["macs"])), params_before=before.params,
        params_after=int(float(final["params"])), equivalence_max_abs=0.0, equivalence_rel=0.0,
        widths_before=widths, widths_after=copy.deepcopy(widths), groups_total=0, groups_pruned=0,
        accuracy_before=acc_before, accuracy_pruned=acc_pruned, accuracy_after=acc_after, train_log=log,
        gate_log=gate_log, notes=[f"unstructured: {nonzero} of {dense_nonzero} conv/linear weights are non-zero "
                                  f"({dense_nonzero / max(nonzero, 1):.1f}x fewer)"]
        + ([f"regrowth moved {moved} weights within their layers while fine-tuning"] if cfg.regrow else []),
        granularity="unstructured", nonzero_before=dense_nonzero, nonzero_after=nonzero, device=str(rt.device),
        precision=rt.precision)
    return res


def _gradual_magnitude(model: nn.Module, named: dict[str, nn.Module], names: list[str], data: Any,
                       budgets: list[Budget], cost: WeightCost, cfg: AutoPruneConfig, *, seed: int, ckpt: Any,
                       rt: Runtime) -> list[torch.Tensor]:
    """Train the weights for cfg.epochs (the gate phase's optimiser settings) while the magnitude mask
    shrinks to the budget; with no epochs (or no data) it is one-shot magnitude pruning."""
    def final_keep(scores: list[torch.Tensor]) -> list[torch.Tensor]:
        return select_weights(cost, scores, budgets)

    first = final_keep([named[n].weight.detach().abs().float().cpu() for n in names])
    if data is None or cfg.epochs <= 0:
        return first
    total = math.ceil(cfg.epochs * steps_per_epoch(data.train, cfg.batch_size))
    hook = GradualMagnitude(named, names, total, final_keep, int(sum(int(k.sum()) for k in first))).attach()
    try:
        train(model, data.train, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=seed),
              desc="gradual magnitude pruning", ckpt=ckpt, phase="gates", rt=rt, step_hook=hook)
    finally:
        hook.detach()
    return hook.finish()
