"""`prune`/`build` with segment or detect data: AutoPrune for any task, as a thin loop around the loop-agnostic `Pruner`.

The task (tasks.py) gives the loss and the metric; this module only runs the schedule: score the dense
model, train weights with the Pruner's penalty for ``epochs``, compact (checked equal on every output),
score, fine-tune for ``finetune_epochs`` with the same loss, score again. The result is the same
`PruneResult` classifiers get, its accuracy fields holding the task's metric (`Task.metric` names it).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from . import progress
from .autoprune import AutoPruneConfig
from .budget import Budget
from .data import DataBundle
from .device import Runtime
from .errors import ConfigError
from .prune_result import PruneResult
from .pruner import Pruner
from .tasks import Batch, Task


def shuffled_batches(bundle: DataBundle, task: Task, batch_size: int, seed: int) -> Iterator[Batch]:
    g = torch.Generator().manual_seed(seed)
    n = len(bundle.train)  # type: ignore[arg-type]
    while True:
        for idx in torch.randperm(n, generator=g).split(batch_size):
            yield task.collate([bundle.train[i] for i in idx.tolist()])


def train_steps(model: nn.Module, task: Task, data: Iterator[Batch], steps: int, lr: float, rt: Runtime, desc: str,
                pruner: Pruner | None = None) -> list[dict[str, float]]:
    """SGD (momentum 0.9, cosine) with the task loss (+ the pruner's penalty); a log line per tenth. fp16 on
    CUDA scales the loss (the Pruner's gate step is scale-free and skips overflowed steps, as the scaler does)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    scaler = rt.scaler()
    log: list[dict[str, float]] = []
    model.train()
    with progress.task(desc, total=steps) as bar:
        for s in range(steps):
            x, y = next(data)
            x = rt.inputs(x)
            with rt.autocast():
                out = model(x)
            loss = task.loss(model, out, tree_map(lambda t: t.to(rt.device), y), tuple(x.shape[-2:]))
            total = loss + pruner.penalty() if pruner is not None else loss
            (total if scaler is None else scaler.scale(total)).backward()
            rec = pruner.step(opt) if pruner is not None else {}
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if (s + 1) % max(1, steps // 10) == 0 or s + 1 == steps:
                log.append({"step": s + 1, "loss": loss.item(), **{k: float(v) for k, v in rec.items()}})
            bar.advance()
            bar.update(info=f"loss {loss.item():.3f}")
    return log


def train_for_task(model: nn.Module, bundle: DataBundle, task: Task, *, epochs: float, lr: float, batch_size: int,
                   seed: int, rt: Runtime) -> list[dict[str, float]]:
    """Plain training with the task loss (the dense warm-up `build` runs when no --weights are given)."""
    steps = max(1, math.ceil(epochs * len(bundle.train) / batch_size))  # type: ignore[arg-type]
    model.to(rt.device)
    try:
        return train_steps(model, task, shuffled_batches(bundle, task, batch_size, seed + 7), steps, lr, rt,
                           f"train dense ({task.name})")
    finally:
        model.cpu()


def check_task_options(task: Task, *, method: Any, granularity: str, distill: bool, qat_epochs: float = 0.0) -> None:
    """Detectors and segmenters prune with structured AutoPrune only: distillation, QAT and the one-shot
    criteria are classifier code for now."""
    if task.name != "classify" and (qat_epochs > 0 or distill or granularity != "structured" or
                                    getattr(method, "name", method) != "autoprune"):
        raise ConfigError(f"--task {task.name} prunes with structured autoprune, without --distill or --qat-epochs "
                          "(classifier-only for now); drop those options")


def prune_for_task(model: nn.Module, bundle: DataBundle, budgets: list[Budget], task: Task, *, target,
                   input_shape: tuple[int, ...], epochs: float, finetune_epochs: float, lr: float, batch_size: int,
                   seed: int, rt: Runtime, autoprune: AutoPruneConfig | None = None,
                   ignore: Iterable[nn.Module | str] = (), speed_exchange: bool = True) -> PruneResult:
    torch.manual_seed(seed)
    per_epoch = math.ceil(len(bundle.train) / batch_size)  # type: ignore[arg-type]
    gate_steps = max(1, math.ceil(epochs * per_epoch))
    ft_steps = math.ceil(finetune_epochs * per_epoch)
    classes = bundle.num_classes
    before = task.score(model, bundle.val, classes)
    model.to(rt.device)  # the gates are made where the model is
    example = torch.zeros(input_shape, device=rt.device)
    cfg = autoprune or AutoPruneConfig(seed=seed)
    pruner = Pruner(model, example, budgets, total_steps=gate_steps, target=target, config=cfg, ignore=ignore,
                    speed_exchange=speed_exchange)
    widths_before = pruner.graph.widths()
    groups = len(pruner.graph.groups)
    gate_log = train_steps(model, task, shuffled_batches(bundle, task, batch_size, seed), gate_steps, lr, rt,
                    f"AutoPrune ({task.name}, gates)", pruner)
    small = pruner.compact()
    rep = pruner.report
    assert rep is not None
    pruned = task.score(small, bundle.val, classes)
    train_log = train_steps(small, task, shuffled_batches(bundle, task, batch_size, seed + 1), ft_steps, lr, rt,
                     f"fine-tune ({task.name})") if ft_steps else []
    after = task.score(small, bundle.val, classes) if ft_steps else pruned
    notes = [f"{task.metric} on the validation split: {before:.4f} dense, {pruned:.4f} after compaction, "
             f"{after:.4f} after {finetune_epochs:g} fine-tune epoch(s)"]
    if rep.left_dense:
        notes.append("channel groups left whole: " + "; ".join(f"{n} ({why})" for n, why in rep.left_dense))
    notes.append("output layers kept whole (their channels are the outputs' contract): " + ", ".join(rep.head_layers))
    if rep.ignored_layers:
        notes.append(f"left whole as asked (ignore): {len(rep.ignored_layers)} layer(s): "
                     + ", ".join(rep.ignored_layers))
    if rep.exchange is not None:
        notes.append(rep.exchange.text())
    return PruneResult(
        model=small.cpu(), history=rep.history, method="autoprune", budgets=budgets, input_shape=input_shape,
        macs_before=rep.macs_before, macs_after=rep.macs_after, params_before=rep.params_before,
        params_after=rep.params_after, equivalence_max_abs=rep.equivalence_max_abs,
        equivalence_rel=rep.equivalence_rel, widths_before=widths_before, widths_after=pruner.graph.widths(),
        groups_total=groups, groups_pruned=len({str(h[0]) for h in rep.history}), accuracy_before=before,
        accuracy_pruned=pruned, accuracy_after=after, train_log=train_log, gate_log=gate_log, notes=notes,
        round_to=pruner.graph.round_to, device=str(rt.device),
        precision=rt.precision)
