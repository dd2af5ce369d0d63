"""AutoPrune training: weights and gates learned together, the budget penalty steered by a controller.

The loss is CE + sum_k lambda_k * cost_k(h(M)) / budget_k. Each cost is the exact group cost model
evaluated on the hard masks, differentiated through the STE, so every gate is pushed according to what
it costs on the chosen target (MACs, parameters, or predicted latency linearised per layer), divided by
k^0.75 for a gate that acts in k layers (`coupling_exponent`): the full cost push
emptied residual streams, whose channels each cost many layers, before anything else. The
paper tunes lambda by hand; here each lambda_k follows the budget error with a multiplicative
(exponentiated-gradient) update: it grows while the masked model is over budget and shrinks while it
is under, so training settles on the budget instead of near it. Weights use SGD with the masked
gradient (and no weight decay on masked entries, so they come back unchanged); gates have their own
optimiser and learning rate (SGD on RMS-normalised gradients by default, or Adam).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .budget import Budget
from .cost import GroupCostModel
from .speed import bend
from .gates import ChannelGates, GateConfig, WeightGates
from .checkpoint import NONE, Checkpointer
from .device import CPU_FP32, Runtime, placed
from .distributed import World, average_gradients, broadcast_, ddp, global_batchnorm, steps_per_epoch, world
from .input_pipeline import PipelineConfig, epoch_batches
from .projection import project_to_target
from .regrow import RegrowConfig
from .train import fit


@dataclass
class AutoPruneConfig:
    epochs: float = 1.0  # gate-training epochs (weights and gates together)
    lr: float = 0.01  # weights (SGD)
    # gates (per step, on the RMS-normalised gradient with nsgd). 0.005: on the short CIFAR schedules of
    # benchmarks/cifar_compare.py (24 gate steps) 0.002 left the gates too close to their L1 start.
    lr_gates: float = 0.005
    # "nsgd": SGD with momentum on the gate gradient divided by its global RMS, so gates compare by the
    # size of their gradients (loss vs cost); "adam": per-gate normalisation (sign-like steps).
    gate_optimizer: str = "nsgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    # None: softplus for channel gates (as both public implementations code it), sigmoid for per-weight
    # gates. softplus grows with m, so per-weight gates that start high (the |w| start favours small
    # layers such as conv1) run away from the rest; on unstructured LeNet-5 at 310x sigmoid kept
    # 212/491/417/268 weights in conv1/conv2/fc1/fc2 against softplus's 256/521/275/336 and lost 0.59 pt
    # instead of 0.90 (10 gate + 10 distilled fine-tune epochs; docs/autoprune.md).
    ste: str | None = None
    leaky_alpha: float = 0.1
    gate_init: float = 0.1
    gate_init_mode: str = "l1"  # or "constant" (the paper's descendants: every gate at the same positive value)
    lambda_init: float | None = None  # None: start where penalty and loss gradients have equal norm
    controller_rate: float = 0.5  # lambda <- lambda * exp(rate * relative error), per step
    project: bool = True  # close the lowest open gates whenever the hard-masked cost exceeds the target
    # ... and reopen the highest closed ones when it is this far (relative) under it (None: never);
    # without it a short schedule's momentum carried ResNet-20 to 1/6 of its target (projection.py)
    reopen_below: float | None = 0.02
    # The controller's target slides from the dense cost to the budget over this fraction of the gate
    # phase (gradual pruning), so the weights spend the rest of it adapting to a mask near the final one.
    ramp: float = 0.5
    # How the target slides: "linear" in cost; "geometric" (log-linear: the same relative cut per step)
    # or "cubic" (Zhu & Gupta 2017's gradual-pruning schedule). At 310x a linear slide spends almost the
    # whole ramp above 1% density and makes the last, hardest 10x in a few steps; None picks "linear"
    # for structured and "geometric" for unstructured gates.
    ramp_shape: str | None = None
    lambda_max: float = 1e4
    # The penalty pushes each gate by c^cost_exponent / k^coupling_exponent, rescaled so the total push is
    # unchanged; c is the gate's marginal cost and k the number of layers its channel is gated in (the
    # consumers whose sgn(W) * dL/dW_eff terms Eq. 7 sums). cost_exponent 1 is importance per MAC (a
    # knapsack), 0 every gate alike (the paper's plain L1 on M). A residual-stream channel of ResNet-56
    # feeds ~10 layers, so it costs ~9x an interior channel, while its loss signal (a sum of k noisy
    # terms) grows only ~sqrt(10)x within a short gate phase; the plain cost push (0) emptied the streams
    # first. 0.5 matches that noise; 0.75, which keeps a little more of the streams, scored better on
    # the CIFAR ResNets at 2x (benchmarks/results/cifar_compare_*). Chains (LeNet: k = 1) are unaffected.
    cost_exponent: float = 1.0
    coupling_exponent: float = 0.75
    # Under a MACs or parameter budget with a target: the share of each gate's push that comes from the
    # target's predicted latency (all its precisions) instead of the budget's quantity (speed.py); 0 off.
    speed_weight: float = 0.0
    seed: int = 0
    log_every: int = 20
    # Unstructured only: during masked fine-tuning, move weights within each layer (drop the smallest,
    # grow where the dense gradient is largest; regrow.py). None: the selected mask stays as it is.
    regrow: RegrowConfig | None = None

    def gate_config(self, granularity: str = "structured") -> GateConfig:
        ste = self.ste or ("sigmoid" if granularity == "unstructured" else "softplus")
        return GateConfig(ste=ste, leaky_alpha=self.leaky_alpha, init=self.gate_init, init_mode=self.gate_init_mode)


@dataclass
class GateTrainLog:
    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)


CostFn = Callable[[list[torch.Tensor]], dict[str, torch.Tensor]]


class Controller:
    """One multiplier per budget; exponentiated-gradient steps on the relative budget error."""

    def __init__(self, budgets: list[Budget], cfg: AutoPruneConfig, lam0: float, start: dict[str, float],
                 total_steps: int, shape: str = "linear") -> None:
        self.budgets = budgets
        self.cfg = cfg
        self.shape = shape
        self.lam = {b.kind: lam0 for b in budgets}
        self.start = start
        self.ramp_steps = max(1, int(cfg.ramp * total_steps))

    def target(self, b: Budget, step: int) -> float:
        s0 = max(self.start.get(b.kind, b.value), b.value)
        t = min(1.0, step / self.ramp_steps)
        if self.shape == "geometric" and b.value > 0:
            return s0 * (b.value / s0) ** t
        if self.shape == "cubic":
            return b.value + (s0 - b.value) * (1.0 - t) ** 3
        return s0 - (s0 - b.value) * t

    def update(self, costs: dict[str, float], step: int) -> None:
        for b in self.budgets:
            tgt = self.target(b, step)
            err = max(-1.0, min(1.0, (costs[b.kind] - tgt) / tgt))
            lam = self.lam[b.kind] * math.exp(self.cfg.controller_rate * err)
            self.lam[b.kind] = min(self.cfg.lambda_max, max(1e-8, lam))

    def penalty(self, costs: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for b in self.budgets:
            total = total + self.lam[b.kind] * costs[b.kind] / b.value
        return total


def structured_costs(cost: GroupCostModel, kinds: set[str], latency_weights: Any = None, speed: Any = None,
                     speed_weight: float = 0.0) -> CostFn:
    """Cost functions of per-channel keep vectors for the budget kinds that can be differentiated.

    ``speed`` (a relative predicted latency, speed.relative_latency) tilts the MACs and parameter costs'
    gradients toward it by ``speed_weight`` (speed.bend; their values stay exact).
    The cost model's sparse float64 arithmetic runs on the CPU wherever the gates live (the keep vectors
    are small; `.cpu()` is differentiable, so gradients flow back to gates on a GPU)."""
    tilt = speed is not None and speed_weight > 0.0
    full = [torch.ones(int(n), dtype=torch.float64) for n in cost.sizes.tolist()]
    dense = {"macs": float(cost.macs(full)), "params": float(cost.params(full))} if tilt else {}

    def fn(keep: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        keep = [k.cpu() for k in keep]
        out: dict[str, torch.Tensor] = {}
        if "macs" in kinds:
            out["macs"] = cost.macs(keep)
        if "params" in kinds:
            out["params"] = cost.params(keep)
        if tilt and out:
            rel = speed(keep)
            out = {k: bend(v, rel, dense[k], speed_weight) for k, v in out.items()}
        if "latency_ms" in kinds and latency_weights is not None:
            out["latency_ms"] = latency_weights(keep)
        return out

    return fn


def masked_weight_bookkeeping(gated_weights: list[tuple[nn.Module, torch.Tensor, Callable[[], torch.Tensor]]],
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
                cost_fn: CostFn, cfg: AutoPruneConfig, *, desc: str = "AutoPrune", ckpt: Checkpointer = NONE,
                phase: str = "gates", rt: Runtime = CPU_FP32,
                pipeline: PipelineConfig = PipelineConfig()) -> GateTrainLog:
    """Joint training of weights and gates with budget control. Gates must be attached.

    The network runs on `rt`'s device under its autocast; the gates, their straight-through gradients,
    the cost model and the controller stay fp32 (float64 for costs). Model and gates go back where they
    were afterwards."""
    with placed(rt, model, gates) as fmt:
        return _train_gates(model, gates, data, budgets, cost_fn, cfg, desc, ckpt, phase, rt, fmt, pipeline)


def _train_gates(model: nn.Module, gates: ChannelGates | WeightGates, data: Dataset, budgets: list[Budget],
                 cost_fn: CostFn, cfg: AutoPruneConfig, desc: str, ckpt: Checkpointer, phase: str, rt: Runtime,
                 fmt: torch.memory_format, pipeline: PipelineConfig) -> GateTrainLog:
    w = world()
    torch.manual_seed(cfg.seed)
    total = max(1, int(math.ceil(cfg.epochs * steps_per_epoch(data, cfg.batch_size))))
    gate_params = list(gates.m)
    broadcast_(gate_params, w)
    gate_ids = {id(p) for p in gate_params}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
    gated = gated_originals(model, gates)
    gated_ids = {id(x) for _, x, _ in gated}
    opt_w = torch.optim.SGD([{"params": [p for p in weights if id(p) not in gated_ids],
                              "weight_decay": cfg.weight_decay},
                             {"params": [p for p in weights if id(p) in gated_ids], "weight_decay": 0.0}],
                            lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.gate_optimizer == "adam":
        opt_m: torch.optim.Optimizer = torch.optim.Adam(gate_params, lr=cfg.lr_gates)
    else:
        opt_m = torch.optim.SGD(gate_params, lr=cfg.lr_gates, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_w, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    resumed = ckpt.has(phase)
    push = penalty_push(gates, cost_fn, budgets, cfg.cost_exponent, cfg.coupling_exponent)
    lam0 = 1.0 if resumed else (cfg.lambda_init if cfg.lambda_init is not None else
                                _balanced_lambda(model, gates, data, cfg, budgets, cost_fn, w, push, rt, fmt))
    with torch.no_grad():
        start = {k: float(v) for k, v in cost_fn([torch.ones_like(m) for m in gate_params]).items()}
    shape = cfg.ramp_shape or ("geometric" if isinstance(gates, WeightGates) else "linear")
    ctrl = Controller(budgets, cfg, lam0, start, total, shape)
    log = GateTrainLog()
    net = ddp(model, w)
    counter = {"step": 0}
    scaler = rt.scaler()

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        with rt.autocast():
            logits = net(x)
        logits = logits.float()  # no-op at fp32
        ce = F.cross_entropy(logits, y)
        costs = cost_fn(scaled_keep(gates.soft_keep(), push))  # outside autocast: fp32 gates, float64 costs
        loss = ce + ctrl.penalty(costs).to(ce.device)
        opt_w.zero_grad(set_to_none=True)
        opt_m.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt_w)
            scaler.unscale_(opt_m)
        average_gradients(gate_params, w)
        if cfg.gate_optimizer != "adam":
            normalise_gradients(gate_params)
        masked_weight_bookkeeping(gated, opt_w, cfg.weight_decay)
        if scaler is None:
            opt_w.step()
            opt_m.step()
        else:  # both steps are skipped on a step whose gradients overflowed
            scaler.step(opt_w)
            scaler.step(opt_m)
            scaler.update()
        sched.step()
        counter["step"] += 1
        if cfg.project:
            project_to_target(gates, cost_fn, ctrl, counter["step"], opt_m, cfg.reopen_below)
        hard = {k: float(v.detach()) for k, v in costs.items()}
        ctrl.update(hard, counter["step"])
        rec = {"loss": ce.item(), "train_acc": float((logits.argmax(-1) == y).float().mean()), **hard}
        if counter["step"] % cfg.log_every == 0:
            log.steps.append({"step": counter["step"], **rec, **{f"lambda_{k}": v for k, v in ctrl.lam.items()},
                              **{f"target_{b.kind}": ctrl.target(b, counter["step"]) for b in budgets},
                              "open_fraction": _open_fraction(gates)})
        return rec

    def state() -> dict[str, Any]:
        st = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
              "gates": [m.detach().clone() for m in gate_params],
              "opt_w": opt_w.state_dict(), "opt_m": opt_m.state_dict(), "sched": sched.state_dict(),
              "lambda": dict(ctrl.lam), "steps": log.steps, "step": counter["step"]}
        if scaler is not None:
            st["scaler"] = scaler.state_dict()
        return st

    def load(st: dict[str, Any]) -> None:
        model.load_state_dict(st["model"])
        with torch.no_grad():
            for m, v in zip(gate_params, st["gates"]):
                m.copy_(v)
        opt_w.load_state_dict(st["opt_w"])
        opt_m.load_state_dict(st["opt_m"])
        sched.load_state_dict(st["sched"])
        ctrl.lam.update(st["lambda"])
        log.steps[:] = list(st["steps"])
        counter["step"] = int(st["step"])
        if scaler is not None and "scaler" in st:
            scaler.load_state_dict(st["scaler"])

    model.train()
    with global_batchnorm(model, w):
        log.epochs = fit(data, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, step=step, state=state,
                         load=load, desc=desc, ckpt=ckpt, phase=phase, w=w, rt=rt, fmt=fmt, pipeline=pipeline)
    if not log.steps or log.steps[-1]["step"] != counter["step"]:
        log.steps.append({"step": counter["step"], **{k: v for k, v in log.epochs[-1].items() if k != "epoch"},
                          **{f"lambda_{k}": v for k, v in ctrl.lam.items()}, "open_fraction": _open_fraction(gates)})
    model.eval()
    return log


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward gradient is multiplied elementwise by `scale`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def scaled_keep(keep: list[torch.Tensor], push: list[torch.Tensor] | None) -> list[torch.Tensor]:
    if push is None:
        return keep
    return [_ScaleGrad.apply(k, s) if k.requires_grad else k for k, s in zip(keep, push)]


def penalty_push(gates: ChannelGates | WeightGates, cost_fn: CostFn, budgets: list[Budget],
                  exponent: float, coupling: float = 0.0) -> list[torch.Tensor] | None:
    """Per-gate factors f turning the cost gradient c into c^exponent / k^coupling, with sum(c f) = sum(c)."""
    fan = [torch.as_tensor(k, dtype=torch.float32) for k in gates.coupling()]
    if exponent == 1.0 and (coupling == 0.0 or all(bool((k == 1).all()) for k in fan)):
        return None
    keep = [torch.ones_like(m, requires_grad=True) for m in gates.m]
    costs = cost_fn(keep)
    reg = sum(costs[b.kind] / b.value for b in budgets if b.kind in costs)
    if not isinstance(reg, torch.Tensor) or not reg.requires_grad:
        return None
    grads = torch.autograd.grad(reg, keep, allow_unused=True)
    marg = [torch.zeros_like(k) if g is None else g.detach().clamp_min(0) for k, g in zip(keep, grads)]
    ungated = getattr(gates, "ungated", {})
    live = torch.cat([c.flatten() for i, c in enumerate(marg) if i not in ungated and c.numel()])
    live = live[live > 0]
    if live.numel() == 0:
        return None
    ref = float(live.mean())
    out = []
    for c, k in zip(marg, fan):
        f = torch.where(c > 0, (c / ref).clamp_min(1e-12) ** (exponent - 1.0), torch.ones_like(c))
        out.append(f * k.clamp_min(1.0) ** (-coupling))
    # the total push stays the unscaled one, so lambda_init and the controller see the same strength
    num = sum(float((c * f).sum()) for c, f in zip(marg, out))
    den = sum(float(c.sum()) for c in marg)
    scale = den / num if num > 0 else 1.0
    return [f * scale for f in out]


@torch.no_grad()
def normalise_gradients(params: list[torch.Tensor]) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    rms = torch.sqrt(sum((g * g).sum() for g in grads) / sum(g.numel() for g in grads))
    if rms > 0:
        for g in grads:
            g.div_(rms)


def _balanced_lambda(model: nn.Module, gates: ChannelGates | WeightGates, data: Dataset, cfg: AutoPruneConfig,
                     budgets: list[Budget], cost_fn: CostFn, w: World,
                     push: list[torch.Tensor] | None = None, rt: Runtime = CPU_FP32,
                     fmt: torch.memory_format = torch.contiguous_format) -> float:
    """The multiplier at which the budget penalty's gradient on the gates matches the loss gradient's norm."""
    x, y = next(epoch_batches(data, cfg.batch_size, seed=cfg.seed, epoch=-1, w=World()))
    gate_params = list(gates.m)
    with rt.autocast():
        logits = model(rt.inputs(x, fmt))
    g_ce = torch.autograd.grad(F.cross_entropy(logits.float(), rt.targets(y)), gate_params, allow_unused=True)
    costs = cost_fn(scaled_keep(gates.soft_keep(), push))
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


def gated_originals(model: nn.Module, gates: ChannelGates | WeightGates):
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
            out.append((mod, orig, lambda g=gates, i=idx, o=orig: (g.m[i].detach() > 0).to(o.dtype)))
        else:
            out.append((mod, orig, lambda par=par, orig=orig: par.keep_mask(orig)))
    return out




