"""`prune()`: graph -> channel selection to a budget -> compaction -> equality check -> fine-tune."""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from . import progress
from .autoprune import AutoPruneConfig, structured_costs, train_gates
from .budget import METRIC, Budget, as_budgets, format_budget_value
from .checkpoint import Checkpointer
from .cost import GroupCostModel
from .device import CPU_FP32, Runtime, resolve_runtime
from .distributed import world
from .errors import BudgetError, ConfigError, EquivalenceError
from .gates import ChannelGates
from .graph import PruningGraph, ignored_layer_names
from .heads import flatten_outputs
from .landing import Probe, land
from .methods import AutoPrune, CriterionLike, get_criterion
from .methods.selection import select
from .profiles.counting import count_macs
from .profiles.profile import profile
from .prune_result import PruneResult
from .speed import faster_selection, latency_model, relative_latency
from .targets import load_target
from .tasks import CLASSIFY, get_task, task_for
from .train import TrainConfig, evaluate, recalibrate_bn, train
from .unstructured import prune_unstructured

#: fine-tuning batch when none is given (gate training then keeps AutoPruneConfig.batch_size, 64)
FINETUNE_BATCH_SIZE = 32

FAST_KINDS = {"macs", "params"}
EQUIVALENCE_REL_TOL = 1e-4


def budget_evaluator(graph: PruningGraph, cost: GroupCostModel, budgets: list[Budget], target: Any,
                    input_shape: tuple[int, ...]):
    slow = [b for b in budgets if b.kind not in FAST_KINDS]
    # only the budgeted counts: selection calls this thousands of times, and counting is its whole cost
    fast = {b.kind for b in budgets if b.kind in FAST_KINDS}

    def evaluate_keep(keep: list[torch.Tensor]) -> dict[str, float]:
        metrics = {k: float(cost.evaluate(k, keep)) for k in fast}
        if slow:
            trial = graph.copy()
            trial.compact(keep)
            p = profile(trial.model, input_shape, target)
            metrics.update({k: getattr(p, METRIC[k]) for k in ("latency_ms", "memory_bytes", "size_bytes")})
        return metrics

    return evaluate_keep, not slow


@torch.no_grad()
def check_equivalence(reference: nn.Module, compact: nn.Module, inputs: torch.Tensor) -> tuple[float, float]:
    """Max abs difference of outputs, and the same relative to the reference's output scale."""
    reference.eval()
    compact.eval()
    a = reference(inputs)
    try:
        b = compact(inputs)
    except RuntimeError as e:  # a layer whose shape was not updated consistently
        first = str(e).strip().splitlines()[0]
        raise EquivalenceError(f"the compacted model no longer runs ({first}); some layer in this model is "
                               "not pruned consistently - report it with the model definition") from e
    fa, fb = flatten_outputs(a), flatten_outputs(b)  # several (nested) outputs: every tensor must match
    if [t.shape for t in fa] != [t.shape for t in fb] or not fa:
        raise EquivalenceError(f"compacted model changed the output shapes from {[tuple(t.shape) for t in fa]} to "
                               f"{[tuple(t.shape) for t in fb]}")
    max_abs = max(float((x - y).abs().max()) if x.numel() else 0.0 for x, y in zip(fa, fb))
    scale = max(float(x.abs().max()) if x.numel() else 0.0 for x in fa) or 1.0
    return max_abs, max_abs / scale


def _resolve(budget: Any, target: Any, data: Any, input_shape: tuple[int, ...] | None):
    budgets = as_budgets(budget)
    if not budgets:
        raise BudgetError("no budget given; pass e.g. --budget 100MFLOPs")
    if target is not None and isinstance(target, str):
        target = load_target(target)
    if any(b.kind not in FAST_KINDS for b in budgets) and target is None:
        raise BudgetError("latency, memory and size budgets need a target device; pass --target")
    if input_shape is None:
        if data is None:
            raise BudgetError("pass input_shape or data so the model can be traced")
        input_shape = (1, *data.input_shape)
    return budgets, target, tuple(input_shape)


def channel_rounding(target: Any, round_to: int | None) -> tuple[int, int]:
    """(round_to, narrow) for PruningGraph: the target's channel tile and narrow tile, unless the caller
    chose a round_to (then no narrow count)."""
    if round_to is not None:
        return round_to, 0
    if target is None:
        return 1, 0
    return int(target.channel_multiple or 1), target.narrow_channels()


def prune(model: nn.Module, data: Any = None, budget: str | list[str] | list[Budget] = "100MFLOPs", *,
          target: Any = None, method: CriterionLike = "autoprune", input_shape: tuple[int, ...] | None = None,
          epochs: float = 1.0, finetune_epochs: float = 1.0, lr: float = 0.01, batch_size: int | None = None,
          distill: bool = False, distill_alpha: float = 0.9, distill_temperature: float = 2.0,
          round_to: int | None = None, max_prune_ratio: float = 0.9,
          evaluate_accuracy: bool = True, seed: int = 0, granularity: str = "structured",
          autoprune: Any = None, checkpoint_dir: Any = None, resume: bool = False, device: str = "auto",
          precision: str = "fp32", latency_probe: Probe | None = None,
          ignore: Iterable[nn.Module | str] = (), task: str | None = None, speed_exchange: bool = True) -> PruneResult:
    """Prune `model` to every budget, compact it, verify it, fine-tune it on `data` (a DataBundle).

    method: "autoprune" (learned gates, `epochs` of joint training) or a one-shot scoring baseline; a name
    registered in methods.METHODS, or a methods.Criterion class or object. granularity "unstructured"
    prunes single weights instead of channels (autoprune's per-weight gates, or l1: gradual magnitude
    pruning over `epochs`); the model then keeps its shape and the budget counts non-zero weights / MACs.

    task: classify, segment or detect (None: what ``data`` holds). Segment and detect data go to the task loop
    (task_prune.py: structured AutoPrune with the task's loss, scored by mIoU / mAP@0.5).

    batch_size: both phases; None keeps each phase's default (gates 64, fine-tuning 32). A given
    ``autoprune`` config keeps its own batch_size for the gates.

    distill: fine-tune against the dense model's soft labels, loss = (1-α)·CE + α·T²·KL(T). The defaults
    (α 0.9, T 2) suit the small students pruning produces: at T 4 the soft term swamped a 5-10-50
    LeNet-5 (benchmarks/lenet_mnist.py; issue 3 notes).

    device (auto | cpu | cuda | cuda:N | mps) and precision (auto | fp32 | bf16 | fp16) say where gate
    training, BatchNorm re-estimation, fine-tuning and evaluation run (see device.py); tracing, selection,
    compaction and the equality check run on the CPU, and the model comes back on the CPU. precision
    defaults to fp32 so that a default run gives the same numbers on every CPU; "auto" picks bf16/fp16
    autocast where the hardware has it.

    latency_probe (a compacted model -> measured ms, e.g. profiles.host.LatencyProbe for the machine running
    this) lands a latency budget on measured latency instead of the profile's prediction (landing.py).

    speed_exchange: with a target and only MACs/params budgets, trade blocks of channels between groups after
    the selection where the target's profile predicts a faster model and the kept scores do not fall
    (speed.faster_selection); False keeps the selection by scores alone.
    """
    criterion = get_criterion(method)
    learned = isinstance(criterion, AutoPrune)
    if distill and not (0.0 < distill_alpha <= 1.0 and distill_temperature > 0):
        raise ConfigError(f"distillation needs 0 < alpha <= 1 and temperature > 0, got alpha {distill_alpha} and "
                          f"temperature {distill_temperature}")
    if learned and (data is None or epochs <= 0):
        raise ConfigError("autoprune learns its gates from data over --epochs > 0; pass --data and --epochs, "
                          "or use --method l1 for a one-shot structural run")
    check_batch_size(batch_size)
    rt = resolve_runtime(device, precision)
    budgets, target, input_shape = _resolve(budget, target, data, input_shape)
    cfg = autoprune or AutoPruneConfig(epochs=epochs, lr=lr, seed=seed)
    if autoprune is None and batch_size is not None:
        cfg = dataclasses.replace(cfg, batch_size=batch_size)
    batch_size = batch_size or FINETUNE_BATCH_SIZE
    if cfg.regrow is not None and granularity != "unstructured":
        raise ConfigError("--regrow moves single weights during fine-tuning: it needs --granularity unstructured")
    if task is not None:
        get_task(task)  # a typo fails here, on a structure-only run too
    the_task = task_for(task, data) if data is not None else CLASSIFY
    if the_task is not CLASSIFY:
        # imported here: task_prune runs the Pruner, which builds on this module's selection and checks
        from .task_prune import check_task_options, prune_for_task

        check_task_options(the_task, method=method, granularity=granularity, distill=distill)
        if resume:
            raise ConfigError(f"--resume is not supported for {the_task.name} data yet (the task loop keeps no "
                              "checkpoints); start the run again without --resume")
        return prune_for_task(model, data, budgets, the_task, target=target, input_shape=input_shape, epochs=epochs,
                              finetune_epochs=finetune_epochs, lr=lr, batch_size=batch_size, seed=seed, rt=rt,
                              autoprune=autoprune, ignore=ignore, speed_exchange=speed_exchange)
    if learned:
        check_autoprune_config(cfg)
    ckpt = Checkpointer(checkpoint_dir, resume=resume, main=world().main)
    if granularity == "unstructured":
        return prune_unstructured(model, data, budgets, input_shape, cfg, finetune_epochs=finetune_epochs, lr=lr,
                                  batch_size=batch_size, evaluate_accuracy=evaluate_accuracy, seed=seed, ckpt=ckpt,
                                  distill=(distill_alpha, distill_temperature) if distill else None, rt=rt,
                                  method=criterion.name)
    if granularity != "structured":
        raise ConfigError(f"granularity must be structured or unstructured, not {granularity!r}")
    torch.manual_seed(seed)
    model.eval()
    example = torch.randn(*input_shape)
    dense = copy.deepcopy(model)
    before = count_macs(model, example)

    acc_before = None
    if data is not None and evaluate_accuracy:
        acc_before = evaluate(model, data.val, desc="accuracy (dense)", rt=rt)

    round_to, narrow = channel_rounding(target, round_to)
    ignored = ignored_layer_names(model, ignore)
    graph = PruningGraph(model, example, round_to=round_to, max_prune_ratio=max_prune_ratio, narrow=narrow,
                         ignored_layers=ignored)
    widths_before = graph.widths()
    cost = GroupCostModel(graph)
    evaluator, cheap = budget_evaluator(graph, cost, budgets, target, input_shape)
    notes: list[str] = [f"channel group at {root} left dense: {why}" for root, why in graph.left_dense]
    if ignored:
        notes.append(f"left whole as asked (ignore): {len(ignored)} layer(s): {', '.join(ignored)}")
    gate_log: list[dict[str, float]] = []
    if learned:
        scores, gate_log, gate_notes = _learn_gates(graph, cost, data, budgets, cfg, ckpt, target, input_shape, rt)
        notes += gate_notes
    else:
        with progress.task(f"score channels ({criterion.name})", total=None):
            scores = criterion.scores(graph, data=data, seed=seed)
    with progress.task("select channels to the budget", total=None):
        keep = select(graph, scores, budgets, evaluator, fill=cheap)
    if speed_exchange and cheap and target is not None:
        with progress.task(f"exchange channel blocks for {target.name}'s speed", total=None):
            keep, swap = faster_selection(graph, cost, scores, keep, budgets, evaluator, target, input_shape)
        if swap is not None:
            notes.append(swap.text())
    if latency_probe is not None and any(b.kind == "latency_ms" for b in budgets):
        with progress.task("land the latency budget on measured latency (convert and time candidates)", total=None):
            keep, landing = land(graph, scores, budgets, evaluator, keep, latency_probe)
        notes.append("latency budget landed on measured latency: " + "; ".join(s.text() for s in landing))
    full_kept = all(bool(k.all()) for k in keep)
    if full_kept:
        for b in budgets:
            metric = {"macs": before.macs, "params": before.params}.get(b.kind)
            value = format_budget_value(b.kind, metric) if metric is not None else "its cost"
            notes.append(f"the dense model ({value}) already meets budget {b.text}; nothing was pruned")

    masked = graph.masked_copy(keep)
    history = graph.compact(keep)
    compact = graph.model
    probe = torch.randn(4, *input_shape[1:], generator=torch.Generator().manual_seed(seed + 1))
    if data is not None:
        probe = torch.cat([probe, torch.stack([data.val[i][0] for i in range(min(4, len(data.val)))])])
    max_abs, rel = check_equivalence(masked, compact, probe)
    if rel > EQUIVALENCE_REL_TOL:
        raise EquivalenceError(
            f"the compacted model differs from the masked model by {max_abs:.3g} ({rel:.2%} of the output scale); "
            "a layer in this model is not pruned consistently - report it with the model definition")
    after = count_macs(compact, example)
    for b in budgets:
        achieved = {"macs": after.macs, "params": after.params}.get(b.kind)
        if achieved is not None and achieved > b.value:
            raise BudgetError(f"internal: compacted model has {format_budget_value(b.kind, achieved)}, above "
                              f"{b.text}; please report this")

    acc_pruned = acc_after = None
    log: list[dict[str, float]] = []
    if data is not None and not full_kept:
        # Removing channels shifts the statistics downstream BatchNorm layers see; re-estimate them (no
        # weight changes) so that every method is judged on its channels, not on stale statistics.
        recalibrate_bn(compact, data.train, batches=8, batch_size=batch_size, seed=seed, rt=rt)
    if data is not None and evaluate_accuracy:
        acc_pruned = evaluate(compact, data.val, desc="accuracy (pruned)", rt=rt)
    if data is not None and finetune_epochs > 0 and not full_kept:
        tcfg = TrainConfig(epochs=finetune_epochs, lr=lr, batch_size=batch_size, seed=seed,
                           kd_alpha=distill_alpha if distill else 0.0, kd_temperature=distill_temperature)
        log = train(compact, data.train, tcfg, teacher=dense if distill else None, desc="fine-tune", ckpt=ckpt, rt=rt)
        if evaluate_accuracy:
            acc_after = evaluate(compact, data.val, desc="accuracy (fine-tuned)", rt=rt)
    elif evaluate_accuracy:
        acc_after = acc_pruned
    compact.eval()
    return PruneResult(
        model=compact, history=history, method=criterion.name, budgets=budgets, input_shape=tuple(input_shape),
        macs_before=before.macs, macs_after=after.macs, params_before=before.params, params_after=after.params,
        equivalence_max_abs=max_abs, equivalence_rel=rel, widths_before=widths_before,
        widths_after=graph.widths(), groups_total=len(graph.groups),
        groups_pruned=sum(1 for k in keep if not bool(k.all())), accuracy_before=acc_before,
        accuracy_pruned=acc_pruned, accuracy_after=acc_after, train_log=log, gate_log=gate_log, notes=notes,
        round_to=round_to, device=str(rt.device), precision=rt.precision)


def _learn_gates(graph: PruningGraph, cost: GroupCostModel, data: Any, budgets: list[Budget], cfg: Any, ckpt: Any,
                 target: Any = None, input_shape: tuple[int, ...] | None = None, rt: Runtime = CPU_FP32):
    """Train weights and channel gates together on `data`; return gate values as channel scores."""
    gates = ChannelGates(graph, cfg.gate_config())
    notes = [f"channel group at {graph.groups[i].root} left dense: {why}" for i, why in sorted(gates.ungated.items())]
    latency = None
    if target is not None and any(b.kind == "latency_ms" for b in budgets):
        latency = latency_model(cost, graph.model, input_shape, target)
    learnable = [b for b in budgets if b.kind in FAST_KINDS or (b.kind == "latency_ms" and latency is not None)]
    if cfg.epochs <= 0 or data is None:
        return gates.scores(), [], notes
    if len(learnable) < len(budgets):
        notes.append("memory and size budgets are met by the final selection only (gate training steers "
                     "MACs, parameters and latency)")
    gates.attach()
    try:
        speed, weight = speed_tilt(cost, graph.model, input_shape, target, learnable, cfg)
        if speed is not None:
            notes.append(f"speed tilt {weight:g}: each gate was pushed {weight:.0%} by {target.name}'s predicted "
                         f"latency ({', '.join(target.precisions)}) and {1 - weight:.0%} by the budget's own cost")
        costs = structured_costs(cost, {b.kind for b in learnable}, latency, speed, weight)
        log = train_gates(graph.model, gates, data.train, learnable, costs, cfg, ckpt=ckpt, rt=rt)
    finally:
        gates.detach()
    return gates.scores(), log.steps, notes


def speed_tilt(cost: GroupCostModel, model: nn.Module, input_shape: tuple[int, ...] | None, target: Any,
               learnable: list[Budget], cfg: AutoPruneConfig) -> tuple[Any, float]:
    """(relative latency, weight) for structured_costs: the target's speed as the gates' second objective
    under a MACs or parameter budget (speed.py), or (None, 0) where there is nothing to tilt."""
    weight = cfg.speed_weight
    if target is None or input_shape is None or weight <= 0.0 or not any(b.kind in FAST_KINDS for b in learnable):
        return None, 0.0
    return relative_latency(cost, model, input_shape, target, tuple(target.precisions)), weight


def check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch size must be a positive number of images, got {batch_size}")


def check_autoprune_config(cfg: AutoPruneConfig) -> None:
    """Catch settings the gate trainer would misread, before any training time is spent."""
    if not 0.0 <= cfg.cost_exponent <= 1.0:
        raise ConfigError(f"cost exponent must be between 0 (every gate alike) and 1 (importance per MAC), "
                          f"got {cfg.cost_exponent}")
    if not 0.0 <= cfg.speed_weight <= 1.0:
        raise ConfigError(f"speed weight must be between 0 (MACs or params alone) and 1 (predicted latency alone), "
                          f"got {cfg.speed_weight}")
    if not 0.0 <= cfg.coupling_exponent <= 1.0:
        raise ConfigError(f"coupling exponent must be between 0 and 1, got {cfg.coupling_exponent}")
    if cfg.regrow is not None and not (cfg.regrow.every >= 0 and 0.0 <= cfg.regrow.fraction < 1.0
                                       and 0.0 < cfg.regrow.until <= 1.0):
        raise ConfigError(f"regrowth needs every >= 0, 0 <= fraction < 1 and 0 < until <= 1, got {cfg.regrow}")
    if cfg.ramp_shape not in (None, "linear", "geometric", "cubic"):
        raise ConfigError(f"unknown ramp shape {cfg.ramp_shape!r}; use linear, geometric or cubic "
                          "(or None for the granularity's default)")
