"""The commands that make files: build (the main job), prune, convert."""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import progress
from ..autoprune import AutoPruneConfig
from ..budget import parse_budgets
from ..converters.convert import convert, partial_build_error, withhold_failures
from ..converters.formats import parse_formats
from ..converters.samples import disjoint_heldout
from ..data import calibration_batch, heldout_batch, load_data
from ..device import resolve_runtime
from ..distributed import world
from ..errors import AutoPruneEdgeError, ConfigError, PartialBuildError
from ..methods import AutoPrune, get_criterion
from ..outputs import check_writable, staged_dir
from ..pipeline import BuildReport, build
from ..plan import save_pruned
from ..pruning import prune
from ..regrow import RegrowConfig
from ..tasks import task_for
from ..unstructured import UNSTRUCTURED_METHODS
from ..workload import load_workload
from .modelref import load_model_ref
from .output import console, emit, parse_shape, parity_args


@dataclass(frozen=True)
class TrainingArgs:
    """The pruning and training flags that build and prune share, checked once."""

    epochs: float
    autoprune: AutoPruneConfig | None  # None for one-shot criteria

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainingArgs:
        criterion = get_criterion(args.method)  # unknown names fail here, in one line
        # l1 on single weights is gradual magnitude pruning: it trains over --epochs like AutoPrune
        trains = isinstance(criterion, AutoPrune) or (args.granularity == "unstructured"
                                                      and criterion.name in UNSTRUCTURED_METHODS)
        if args.epochs and not trains:
            raise ConfigError(f"--epochs (gate-training epochs) applies to learned methods; method "
                              f"{args.method!r} selects channels in one shot: pass --epochs 0")
        epochs = (1.0 if trains else 0.0) if args.epochs is None else args.epochs
        if not trains:
            if args.regrow:
                raise ConfigError("--regrow fine-tunes unstructured masks: use --granularity unstructured with "
                                  "--method autoprune or l1")
            return cls(epochs, None)
        tuned = {k: v for k, v in (("lr_gates", args.lr_gates), ("cost_exponent", args.cost_exponent),
                                   ("speed_weight", args.speed_weight), ("batch_size", args.batch_size))
                 if v is not None}
        regrow = RegrowConfig() if args.regrow else None
        return cls(epochs, AutoPruneConfig(epochs=epochs, lr=args.lr, ste=args.ste, seed=args.seed, regrow=regrow,
                                           **tuned))


def cmd_build(args: argparse.Namespace) -> int:
    t = TrainingArgs.from_args(args)
    partial: PartialBuildError | None = None
    try:
        rep = _run_build(args, t)
    except PartialBuildError as e:  # the passing files were written: show them, then fail with the one line
        if not isinstance(e.report, BuildReport):
            raise
        rep, partial = e.report, e

    def human() -> None:
        c = console()
        card = rep.card
        c.print(f"[bold green]wrote[/] {rep.out_dir}")
        c.print(f"MACs {card.macs.before / 1e6:.1f}M -> {card.macs.after / 1e6:.1f}M, params "
                f"{card.params.before / 1e6:.2f}M -> {card.params.after / 1e6:.2f}M")
        for b in card.budget:
            c.print(f"budget {b.text}: {'met' if b.met else 'NOT met'}")
        for a in card.artifacts:
            lat = ", ".join(f"{t} thread(s) {ms:.2f} ms" for t, ms in a.host_latency_ms.items())
            status = {"FAIL": "[red]FAIL[/]", "withheld": "[red]FAIL, not written[/]"}.get(a.status, a.status)
            c.print(f"  {a.path:<20} {a.bytes / 1e6:7.2f} MB  parity {status}" + (f"  host: {lat}" if lat else ""))
        for a in rep.failing:
            if a.written:
                c.print(f"[yellow]warning:[/] {a.format} fails parity ({'; '.join(a.failures)}); written because "
                        "of --allow-parity-failure")
        c.print(f"report: {rep.out_dir / 'report.html'} (and report.md)")

    emit(args, rep.summary(), human)
    if partial is not None:
        raise partial
    return 0


def _run_build(args: argparse.Namespace, t: TrainingArgs) -> BuildReport:
    return build(model=args.model, data=args.data, target=args.target, budget=parse_budgets(args.budget),
                 out_dir=args.out, weights=args.weights, name=args.name, method=args.method, formats=args.formats,
                 epochs=t.epochs, pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs,
                 lr=args.lr, batch_size=args.batch_size, granularity=args.granularity, distill=args.distill,
                 distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature,
                 autoprune=t.autoprune, device=args.device, precision=args.precision, input_size=args.input_size,
                 allow_download=args.allow_download, compare_targets=tuple(args.compare or ()), seed=args.seed,
                 calib_samples=args.calib_samples, parity_samples=args.parity_samples, parity=parity_args(args),
                 allow_parity_failure=args.allow_parity_failure, int8_io=args.int8_io, qat_epochs=args.qat_epochs,
                 task=args.task, ignore=tuple(args.ignore or ()), speed_exchange=args.speed_exchange)


def cmd_prune(args: argparse.Namespace) -> int:
    budgets = parse_budgets(args.budget)
    dest = check_writable(Path(args.out))
    t = TrainingArgs.from_args(args)
    resolve_runtime(args.device, args.precision)  # a bad --device / --precision fails before any work
    work = load_workload(args.model, args.data, weights=args.weights, input_size=args.input_size,
                         allow_download=args.allow_download, seed=args.seed)
    bundle = work.data
    w = world()
    if not w.main:
        progress.set_quiet(True)
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else dest.parent / f".{dest.name}.checkpoint"
    res = prune(work.model, bundle, budgets, target=args.target, method=args.method, input_shape=work.input_shape,
                epochs=t.epochs, granularity=args.granularity, autoprune=t.autoprune, distill=args.distill,
                distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature,
                finetune_epochs=args.finetune_epochs if bundle is not None else 0, lr=args.lr,
                batch_size=args.batch_size, device=args.device, precision=args.precision, seed=args.seed,
                evaluate_accuracy=bundle is not None, checkpoint_dir=ckpt_dir, resume=args.resume,
                ignore=tuple(args.ignore or ()), task=args.task, speed_exchange=args.speed_exchange)
    if not w.main:
        return 0  # under torchrun, rank 0 writes the result
    with staged_dir(dest) as tmp:
        save_pruned(tmp, res.model, work.spec, res.history, work.input_shape, work.meta())
        (tmp / "summary.json").write_text(json.dumps(res.summary(), indent=1))
        if res.gate_log:
            (tmp / "gate_log.json").write_text(json.dumps(res.gate_log, indent=1))
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: the next run starts fresh

    def human() -> None:
        c = console()
        s = res.summary()
        c.print(f"[bold green]wrote[/] {dest} (plan.json + model.safetensors)")
        c.print(f"MACs {s['macs_before'] / 1e6:.1f}M -> {s['macs_after'] / 1e6:.1f}M; params "
                f"{s['params_before'] / 1e6:.3f}M -> {s['params_after'] / 1e6:.3f}M; "
                f"{s['groups_pruned']}/{s['groups_total']} channel groups pruned")
        c.print(f"compacted = masked within {s['equivalence_max_abs']:.2e} (max abs)")
        if s["accuracy_after"] is not None:
            metric = task_for(args.task, bundle).metric
            c.print(f"{metric} {100 * s['accuracy_before']:.1f}% -> {100 * s['accuracy_after']:.1f}%")
        for n in s["notes"]:
            c.print(f"[yellow]note:[/] {n}")

    emit(args, {"out_dir": str(dest), **res.summary()}, human)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    fmts = parse_formats(args.formats)
    dest = check_writable(Path(args.out))
    model, input_shape, meta = load_model_ref(args.model, weights=args.weights,
                                              input_shape=parse_shape(args.input_shape))
    calib = held = None
    if args.calib_data:
        bundle = load_data(args.calib_data, input_size=input_shape[-1], channels=input_shape[1])
        if tuple(bundle.input_shape) != tuple(input_shape[1:]):
            raise AutoPruneEdgeError(f"--calib-data images are {bundle.input_shape} but the model takes "
                                     f"{tuple(input_shape[1:])}")
        calib = calibration_batch(bundle, args.calib_samples)
        held, _dropped = disjoint_heldout(heldout_batch(bundle, args.parity_samples), calib)
    elif "tflite-int8" in fmts:
        raise AutoPruneEdgeError("tflite-int8 needs representative data: pass --calib-data (e.g. "
                                 "cifar10:PATH or folder:PATH)")
    with staged_dir(dest) as tmp:
        labels = meta.get("class_names")
        arts = convert(model, torch.zeros(input_shape), tmp, formats=fmts, calib=calib, heldout=held,
                       measure=not args.no_measure, thresholds=parity_args(args), labels=labels,
                       mean=meta.get("mean"), std=meta.get("std"), name=Path(args.model).name,
                       int8_io=args.int8_io)
        withheld = [] if args.allow_parity_failure else withhold_failures(arts, tmp)
        if labels:
            (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
        (tmp / "artifacts.json").write_text(json.dumps([asdict(a) for a in arts], indent=1))

    def human() -> None:
        c = console()
        c.print(f"[bold green]wrote[/] {dest}")
        for a in arts:
            p: dict[str, Any] = a.parity or {}
            c.print(f"  {a.path:<20} {a.bytes / 1e6:7.2f} MB  {a.status:<8}  max|diff| {p.get('max_abs', float('nan')):.2e}"
                    f"  cos {p.get('cosine', float('nan')):.5f}"
                    + (f"  MACs {a.macs_counted / 1e6:.1f}M" if a.macs_counted else "")
                    + "".join(f"  {t}T {ms:.2f} ms" for t, ms in a.host_latency_ms.items()))

    emit(args, {"out_dir": str(dest), "artifacts": [asdict(a) for a in arts]}, human)
    if withheld:
        raise partial_build_error(withheld, [a for a in arts if a.written], dest,
                                  "pass --allow-parity-failure to write failing files too")
    return 0
