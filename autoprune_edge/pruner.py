"""`Pruner`: AutoPrune's learned gates inside the user's own training loop.

The user keeps their model, data, loss, optimiser, AMP and DDP; the pruner adds a budget penalty to
their loss, steps the gates after their backward pass, and at the end turns the gated model into a dense
smaller one, checked equal to the gated model on every output tensor::

    pruner = ape.Pruner(model, example, "2GFLOPs", total_steps=len(loader) * epochs, ignore=[model.head])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)      # gates are not model parameters
    for x, y in loader:
        loss = my_loss(model(x), y) + pruner.penalty()
        loss.backward()
        pruner.step(opt)          # gate update + masking bookkeeping; before opt.step()
        opt.step(); opt.zero_grad()
    small = pruner.compact()

The rules are `train_gates`'s: straight-through gate gradients on the masked weights, the cost-weighted
penalty push, the RMS-normalised gate step, projection onto the moving budget target and the
multiplicative controller. Differences: the controller starts at ``lambda_init`` (default 1; `prune()`
balances it on a first batch of its own loss, which a loop-agnostic pruner does not have) and ramps over
``total_steps``, which the caller states.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .autoprune import (AutoPruneConfig, CostFn, Controller, gated_originals, masked_weight_bookkeeping,
                        normalise_gradients, penalty_push, scaled_keep, structured_costs)
from .budget import Budget, as_budgets
from .cost import GroupCostModel
from .device import device_of
from .distributed import average_gradients, broadcast_, world
from .errors import BudgetError, ConfigError, EquivalenceError
from .gates import ChannelGates
from .graph import PruningGraph, ignored_layer_names
from .methods.selection import select
from .profiles.counting import count_macs
from .projection import project_to_target
from .pruning import (EQUIVALENCE_REL_TOL, FAST_KINDS, budget_evaluator, channel_rounding, check_equivalence,
                      speed_tilt)
from .speed import Exchange, faster_selection, latency_model
from .targets import load_target


@dataclass
class PrunerReport:
    """What `compact()` did: costs before and after, the groups left whole and why."""

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    equivalence_max_abs: float
    equivalence_rel: float
    head_layers: list[str]
    ignored_layers: list[str]
    left_dense: list[tuple[str, str]]
    history: list[list[Any]] = field(default_factory=list)
    steps: int = 0
    exchange: Exchange | None = None  # blocks of channels traded between groups for the target's speed


class Pruner:
    """Learned channel gates for any training loop (see the module docstring).

    ``ignore``: modules (or qualified names) whose output channels stay as they are, containers meaning
    every conv/linear inside; the layers producing the model's outputs are always kept (their channel
    counts are a contract: classes, box coordinates, anchors). ``total_steps``: how many times `step()`
    will be called; the budget target slides from the dense cost to the budget over ``config.ramp`` of them.
    ``speed_exchange``: with a target and MACs/params budgets, `compact()` may trade blocks of channels between
    groups for the target's predicted speed, never lowering the kept gate values' sum (speed.faster_selection).
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, budget: str | Sequence[str] | Sequence[Budget],
                 *, total_steps: int, target: Any = None, ignore: Iterable[nn.Module | str] = (),
                 config: AutoPruneConfig | None = None, round_to: int | None = None,
                 max_prune_ratio: float = 0.9, speed_exchange: bool = True) -> None:
        if total_steps < 1:
            raise ConfigError("total_steps must be at least 1 (the number of times step() will be called)")
        self.budgets = as_budgets(budget)
        if not self.budgets:
            raise BudgetError("no budget given; pass e.g. '100MFLOPs'")
        self.target = load_target(target) if isinstance(target, str) else target
        if any(b.kind not in FAST_KINDS for b in self.budgets) and self.target is None:
            raise BudgetError("latency, memory and size budgets need a target device; pass target=")
        self.cfg = config or AutoPruneConfig()
        self.speed_exchange = speed_exchange
        self.model = model
        self.example = example_inputs
        self.input_shape = tuple(example_inputs.shape)
        round_to, narrow = channel_rounding(self.target, round_to)
        self.ignored = ignored_layer_names(model, ignore)
        was_training = model.training
        self.before = count_macs(model, example_inputs)
        self.graph = PruningGraph(model, example_inputs, ignored_layers=self.ignored, round_to=round_to, narrow=narrow,
                                  max_prune_ratio=max_prune_ratio)
        model.train(was_training)
        self.cost = GroupCostModel(self.graph)
        self.gates = ChannelGates(self.graph, self.cfg.gate_config())
        self.gates.to(device_of(model))
        self.gates.attach()
        learnable = [b for b in self.budgets if b.kind in FAST_KINDS]
        latency = None
        if any(b.kind == "latency_ms" for b in self.budgets):
            latency = latency_model(self.cost, model, self.input_shape, self.target)
            learnable += [b for b in self.budgets if b.kind == "latency_ms"]
        self.learnable = learnable
        self.cost_fn: CostFn = structured_costs(self.cost, {b.kind for b in learnable}, latency,
                                                *speed_tilt(self.cost, model, self.input_shape, self.target,
                                                            learnable, self.cfg))
        self.params = list(self.gates.m)
        self.world = world()  # under torchrun: gates start equal on every rank and step on averaged gradients
        broadcast_(self.params, self.world)
        if self.cfg.gate_optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=self.cfg.lr_gates)
        else:
            self.opt = torch.optim.SGD(self.params, lr=self.cfg.lr_gates, momentum=0.9)
        self.push = penalty_push(self.gates, self.cost_fn, learnable, self.cfg.cost_exponent,
                                 self.cfg.coupling_exponent)
        with torch.no_grad():
            start = {k: float(v) for k, v in self.cost_fn([torch.ones_like(m) for m in self.params]).items()}
        lam0 = self.cfg.lambda_init if self.cfg.lambda_init is not None else 1.0
        self.ctrl = Controller(learnable, self.cfg, lam0, start, total_steps, self.cfg.ramp_shape or "linear")
        self.total_steps = total_steps
        self.steps = 0
        self._gated = gated_originals(model, self.gates)
        self._compacted = False
        self.log: list[dict[str, float]] = []

    def penalty(self) -> torch.Tensor:
        """The budget term to add to the loss: lambda * cost / budget per budget, differentiable in the gates."""
        self._check_open()
        costs = self.cost_fn(scaled_keep(self.gates.soft_keep(), self.push))
        self._costs = {k: float(v.detach()) for k, v in costs.items()}
        return self.ctrl.penalty(costs).to(self.params[0].device)

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """After backward, before ``optimizer.step()``: step the gates, move the budget target and the
        controller. With ``optimizer``, the momentum of weights masked off is cleared so they stay frozen
        (the only change made to the user's optimiser state). Works under AMP (a loss scaled by a
        GradScaler: the gate step is normalised, and skipped when the gradients overflowed) and under
        torchrun (gate gradients averaged over ranks). Returns this step's costs and multipliers."""
        self._check_open()
        average_gradients(self.params, self.world)
        grads = [p.grad for p in self.params if p.grad is not None]
        if not all(bool(torch.isfinite(g).all()) for g in grads):  # a GradScaler overflow: skip it, as it does
            self.opt.zero_grad(set_to_none=True)
            return {"step": self.steps, "skipped": 1.0}
        if self.cfg.gate_optimizer != "adam":
            normalise_gradients(self.params)  # also makes the step independent of a loss scale
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if optimizer is not None:
            masked_weight_bookkeeping(self._gated, optimizer, 0.0)
        self.steps += 1
        if self.cfg.project:
            project_to_target(self.gates, self.cost_fn, self.ctrl, self.steps, self.opt, self.cfg.reopen_below)
        hard = {k: float(v) for k, v in self.cost_fn(self.gates.keep()).items()}
        self.ctrl.update(hard, self.steps)
        rec = {"step": self.steps, **hard, **{f"lambda_{k}": v for k, v in self.ctrl.lam.items()},
               **{f"target_{b.kind}": self.ctrl.target(b, self.steps) for b in self.learnable}}
        if self.steps % self.cfg.log_every == 0 or self.steps == self.total_steps:
            self.log.append(rec)
        return rec

    def compact(self, check_inputs: torch.Tensor | None = None) -> nn.Module:
        """Remove the gates, select channels to the budget from the gate values, and physically remove the
        pruned ones. Returns the dense smaller model (the same object as the one passed in, in eval mode),
        after checking it computes what the gated model computes on every output tensor."""
        self._check_open()
        self.gates.detach()
        self._compacted = True
        device = self.example.device
        graph = self.graph
        evaluator, cheap = budget_evaluator(graph, self.cost, self.budgets, self.target, self.input_shape)
        scores = self.gates.scores()
        keep = select(graph, scores, self.budgets, evaluator, fill=cheap)
        swap = None
        if self.speed_exchange and cheap and self.target is not None:
            keep, swap = faster_selection(graph, self.cost, scores, keep, self.budgets, evaluator, self.target,
                                          self.input_shape)
        masked = graph.masked_copy(keep)
        history = graph.compact(keep)
        probe = check_inputs if check_inputs is not None else torch.cat(
            [self.example, torch.randn(3, *self.input_shape[1:], generator=torch.Generator().manual_seed(0)
                                       ).to(device, self.example.dtype)])
        max_abs, rel = check_equivalence(masked, graph.model, probe)
        if rel > EQUIVALENCE_REL_TOL:
            raise EquivalenceError(f"the compacted model differs from the gated model by {max_abs:.3g} ({rel:.2%} of "
                                   "the output scale); report it with the model definition")
        after = count_macs(graph.model, self.example)
        self.report = PrunerReport(self.before.macs, after.macs, self.before.params, after.params, max_abs, rel,
                                   list(graph.output_layers), self.ignored, list(graph.left_dense), history,
                                   self.steps, swap)
        return graph.model.eval()

    def _check_open(self) -> None:
        if self._compacted:
            raise ConfigError("this Pruner has already compacted its model; make a new Pruner to prune again")
