"""AutoPrune training: weights and gates learned together, the budget penalty steered by a controller.

The loss is CE + sum_k lambda_k * cost_k(h(M)) / budget_k. Each cost is the exact group cost model
evaluated on the hard masks, differentiated through the STE, so every gate is pushed in proportion to
what it costs on the chosen target (MACs, parameters, or predicted latency linearised per layer). The
paper tunes lambda by hand; here each lambda_k follows the budget error with a multiplicative
(exponentiated-gradient) update: it grows while the masked model is over budget and shrinks while it
is under, so training settles on the budget instead of near it. Weights use SGD with the masked
gradient (and no weight decay on masked entries, so they come back unchanged); gates use Adam.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from . import progress
from .budget import Budget
from .cost import GroupCostModel
from .gates import ChannelGates, GateConfig, WeightGates
from .train import make_loader, recalibrate_bn


@dataclass
class AutoPruneConfig:
    epochs: float = 1.0  # gate-training epochs (weights and gates together)
    lr: float = 0.01  # weights (SGD)
    lr_gates: float = 0.01  # gates (Adam)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    ste: str = "softplus"
    leaky_alpha: float = 0.1
    gate_init: float = 0.1
    lambda_init: float | None = None  # None: start where penalty and loss gradients have equal norm
    controller_rate: float = 0.05  # lambda <- lambda * exp(rate * relative error), per step
    lambda_max: float = 1e4
    seed: int = 0
    log_every: int = 20

    def gate_config(self) -> GateConfig:
        return GateConfig(ste=self.ste, leaky_alpha=self.leaky_alpha, init=self.gate_init)


@dataclass
class GateTrainLog:
    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)


CostFn = Callable[[list[torch.Tensor]], dict[str, torch.Tensor]]


class _Controller:
    """One multiplier per budget; exponentiated-gradient steps on the relative budget error."""

    def __init__(self, budgets: list[Budget], cfg: AutoPruneConfig, lam0: float) -> None:
        self.budgets = budgets
        self.cfg = cfg
        self.lam = {b.kind: lam0 for b in budgets}

    def update(self, costs: dict[str, float]) -> None:
        for b in self.budgets:
            err = max(-1.0, min(1.0, (costs[b.kind] - b.value) / b.value))
            lam = self.lam[b.kind] * math.exp(self.cfg.controller_rate * err)
            self.lam[b.kind] = min(self.cfg.lambda_max, max(1e-8, lam))

    def penalty(self, costs: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for b in self.budgets:
            total = total + self.lam[b.kind] * costs[b.kind] / b.value
        return total


def structured_costs(cost: GroupCostModel, kinds: set[str], latency_weights: Any = None) -> CostFn:
    """Cost functions of per-channel keep vectors for the budget kinds that can be differentiated."""

    def fn(keep: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "macs" in kinds:
            out["macs"] = cost.macs(keep)
        if "params" in kinds:
            out["params"] = cost.params(keep)
        if "latency_ms" in kinds and latency_weights is not None:
            out["latency_ms"] = latency_weights(keep)
        return out

    return fn


def _masked_weight_bookkeeping(gated_weights: list[tuple[nn.Module, torch.Tensor, Callable[[], torch.Tensor]]],
                               opt: torch.optim.Optimizer, wd: float) -> None:
    """Weight decay only on open entries, and no momentum carried into masked ones (they stay frozen)."""
    for _, w, mask_fn in gated_weights:
        if w.grad is None:
            continue
        mask = mask_fn()
        if wd:
            w.grad.add_(w.detach() * mask, alpha=wd)
        state = opt.state.get(w)
        if state and state.get("momentum_buffer") is not None:
            state["momentum_buffer"].mul_(mask)


def train_gates(model: nn.Module, gates: ChannelGates | WeightGates, data: Dataset, budgets: list[Budget],
                cost_fn: CostFn, cfg: AutoPruneConfig, *, desc: str = "AutoPrune") -> GateTrainLog:
    """Joint training of weights and gates with budget control. Gates must be attached."""
    torch.manual_seed(cfg.seed)
    loader = make_loader(data, cfg.batch_size, shuffle=True, seed=cfg.seed)
    steps_total = max(1, int(math.ceil(cfg.epochs * len(loader))))
    gate_params = list(gates.m)
    gate_ids = {id(p) for p in gate_params}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
    gated = _gated_originals(model, gates)
    gated_ids = {id(w) for _, w, _ in gated}
    opt_w = torch.optim.SGD([{"params": [w for w in weights if id(w) not in gated_ids],
                              "weight_decay": cfg.weight_decay},
                             {"params": [w for w in weights if id(w) in gated_ids], "weight_decay": 0.0}],
                            lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    opt_m = torch.optim.Adam(gate_params, lr=cfg.lr_gates)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_w, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps_total)
                                                                                    / steps_total)))
    lam0 = cfg.lambda_init if cfg.lambda_init is not None else _balanced_lambda(model, gates, loader, budgets,
                                                                                  cost_fn)
    ctrl = _Controller(budgets, cfg, lam0)
    log = GateTrainLog()
    model.train()
    step = 0
    with progress.task(desc, total=steps_total) as bar:
        while step < steps_total:
            loss_sum = correct = seen = 0.0
            for x, y in loader:
                logits = model(x)
                ce = F.cross_entropy(logits, y)
                costs = cost_fn(gates.soft_keep())
                loss = ce + ctrl.penalty(costs)
                opt_w.zero_grad(set_to_none=True)
                opt_m.zero_grad(set_to_none=True)
                loss.backward()
                _masked_weight_bookkeeping(gated, opt_w, cfg.weight_decay)
                opt_w.step()
                opt_m.step()
                sched.step()
                hard = {k: float(v.detach()) for k, v in costs.items()}
                ctrl.update(hard)
                loss_sum += ce.item() * len(y)
                correct += float((logits.argmax(-1) == y).sum())
                seen += len(y)
                step += 1
                if step % cfg.log_every == 0 or step == steps_total:
                    rec = {"step": step, "epoch": step / len(loader), "loss": ce.item(), **hard,
                           **{f"lambda_{k}": v for k, v in ctrl.lam.items()},
                           "open_fraction": _open_fraction(gates)}
                    log.steps.append(rec)
                bar.advance()
                bar.update(info=" ".join(f"{k} {v / 1e6:.2f}M" if k in ("macs", "params") else f"{k} {v:.2f}"
                                         for k, v in hard.items()))
                if step >= steps_total:
                    break
            log.epochs.append({"epoch": step / len(loader), "loss": loss_sum / max(seen, 1),
                               "train_acc": correct / max(seen, 1), **{k: float(v) for k, v in hard.items()}})
    model.eval()
    return log


def _balanced_lambda(model: nn.Module, gates: ChannelGates | WeightGates, loader: Any, budgets: list[Budget],
                     cost_fn: CostFn) -> float:
    """The multiplier at which the budget penalty's gradient on the gates matches the loss gradient's norm."""
    x, y = next(iter(loader))
    gate_params = list(gates.m)
    g_ce = torch.autograd.grad(F.cross_entropy(model(x), y), gate_params, allow_unused=True)
    costs = cost_fn(gates.soft_keep())
    reg = sum(costs[b.kind] / b.value for b in budgets if b.kind in costs)
    if not isinstance(reg, torch.Tensor) or not reg.requires_grad:
        return 1.0
    g_r = torch.autograd.grad(reg, gate_params, allow_unused=True)
    n_ce = math.sqrt(sum(float((g ** 2).sum()) for g in g_ce if g is not None))
    n_r = math.sqrt(sum(float((g ** 2).sum()) for g in g_r if g is not None))
    return n_ce / n_r if n_r > 0 and n_ce > 0 else 1.0


def _open_fraction(gates: ChannelGates | WeightGates) -> float:
    keep = gates.keep()
    return float(sum(int(k.sum()) for k in keep) / max(1, sum(k.numel() for k in keep)))


def _gated_originals(model: nn.Module, gates: ChannelGates | WeightGates):
    """(module, original weight, current mask broadcast to the weight) for every gated weight."""
    out = []
    for mod in model.modules():
        params = getattr(mod, "parametrizations", None)
        if params is None or "weight" not in params:
            continue
        p = params["weight"]
        orig = p.original
        par = p[0]
        if isinstance(gates, WeightGates):
            idx = par.index
            out.append((mod, orig, lambda g=gates, i=idx: (g.m[i].detach() > 0).to(orig.dtype)))
        else:
            def mask_fn(par=par, orig=orig) -> torch.Tensor:
                g = par._gates[0]
                m_in = orig.new_ones(par.width)
                for gi, root, cons in par.terms:
                    m_in = m_in.index_put((cons,), g.m[gi].detach()[root])
                shape = [1] * orig.dim()
                shape[par.dim] = -1
                return (m_in > 0).to(orig.dtype).view(shape)
            out.append((mod, orig, mask_fn))
    return out


def config_dict(cfg: AutoPruneConfig) -> dict[str, Any]:
    return asdict(cfg)


def recalibrate(model: nn.Module, data: Dataset, batch_size: int, seed: int) -> None:
    recalibrate_bn(model, data, batches=8, batch_size=batch_size, seed=seed)
