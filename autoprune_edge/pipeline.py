"""`build`, the main job, read top to bottom as the pipeline (the module is not named build.py because
that would shadow ``autoprune_edge.build``, the function): model + data -> prune (graph, gates,
budget, compact, finetune) -> convert -> profile -> artifacts in out/<name>/.

A failing artifact is withheld: `build` writes the folder with every artifact that passed (the card and
reports list the failing one as not written, with by how much it failed and the first diverging layer)
and then raises PartialBuildError naming it, so a script sees a non-zero exit. With
``allow_parity_failure=True`` the failing file is written too, marked ``"parity_ok": false``.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__, progress
from .autoprune import AutoPruneConfig
from .budget import Budget, as_budgets
from .buildcard import calibration_info, describe_build, parity_info
from .converters.artifact import Artifact
from .converters.convert import convert, partial_build_error, withhold_failures
from .converters.edgetpu import edgetpu_sram_bytes
from .converters.formats import DEFAULT_FORMATS, parse_formats, shipped_precisions
from .converters.parity import ParityThresholds
from .converters.samples import disjoint_heldout, sample_hashes
from .data import calibration_batch, heldout_batch
from .device import resolve_runtime
from .errors import AutoPruneEdgeError, BudgetError
from .modelcard import DataSource, ModelCard
from .outputs import check_writable, staged_dir
from .plan import save_pruned
from .profiles.compare import predict_targets
from .profiles.host import LatencyProbe, host_profile_note, measures_here
from .profiles.host_calibration import calibration_note
from .pruning import FINETUNE_BATCH_SIZE, check_autoprune_config, check_batch_size, prune
from .qat import quantisation_aware_finetune
from .report import write_report
from .report_html import write_html_report
from .targets import load_target
from .task_prune import check_task_options, train_for_task
from .tasks import CLASSIFY, get_task, output_shapes, task_for, write_decoding
from .train import TrainConfig, evaluate, train
from .workload import load_workload


@dataclass
class BuildReport:
    out_dir: Path
    card: ModelCard

    def summary(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), **self.card.to_dict()}

    @property
    def failing(self) -> list[Artifact]:
        return self.card.failing


def build(model: str = "mobilenet_v2", data: str = "synthetic", target: str = "raspberrypi4",
          budget: str | Sequence[str] | Sequence[Budget] = "100MFLOPs", out_dir: str | Path = "out", *,
          weights: str | None = None, name: str | None = None, method: Any = "autoprune", epochs: float = 1.0,
          formats: str | tuple[str, ...] | None = None, pretrain_epochs: float | None = None,
          finetune_epochs: float = 1.0, lr: float = 0.01, batch_size: int | None = None, granularity: str = "structured",
          distill: bool = False, distill_alpha: float = 0.9, distill_temperature: float = 2.0,
          autoprune: AutoPruneConfig | None = None, device: str = "auto", precision: str = "fp32",
          input_size: int | None = None, allow_download: bool = False, measure_runs: int = 30,
          calib_samples: int = 200, parity_samples: int = 64, compare_targets: tuple[str, ...] | None = None,
          parity: ParityThresholds | dict | None = None, allow_parity_failure: bool = False,
          html_report: bool = True, seed: int = 0, int8_io: str = "uint8", qat_epochs: float = 0.0,
          land_measured: bool | None = None, task: str | None = None, ignore: Sequence[str] = (),
          speed_exchange: bool = True) -> BuildReport:
    """Prune `model` for `target` under `budget`, convert it, verify every artifact, write out/<name>/.

    ``formats`` defaults to the target profile's ``default_formats``. ``parity`` sets the pass limits
    (see ParityThresholds); a failing artifact is withheld and PartialBuildError raised after the folder
    with the passing ones is written (its ``report`` is this function's result), unless
    ``allow_parity_failure``. The pruning options (method .. precision) mean what they mean in `prune()`;
    conversion and profiling always run on the CPU. ``int8_io`` is the int8 file's tensor type (uint8:
    raw 0..255 pixels in, the normalisation inside the model; int8; float32). ``qat_epochs`` > 0 fine-tunes
    the pruned model with int8 rounding simulated (qat.py) before anything is converted, at a tenth of ``lr``.
    ``land_measured`` lands a latency budget on the fp32 file's latency measured here (landing.py); by default
    on when the target is the machine running the build: ``host``, or a profile ``calibrate`` fitted on this CPU
    (profiles.host.measures_here). ``task`` (classify, segment, detect;
    default: what the data holds) picks the loss and metric (tasks.py); segmenters and detectors are pruned
    with the loop-agnostic Pruner (task_prune.py) and their files carry no classifier metadata. ``ignore``:
    module names (as in ``model.named_modules()``) whose layers keep all their channels, e.g. "backbone".
    """
    t0 = time.perf_counter()
    budgets = as_budgets(budget)
    if not budgets:
        raise BudgetError("no budget given; pass e.g. --budget 100MFLOPs")
    tgt = load_target(target)
    fmts = parse_formats(formats, default=tuple(tgt.default_formats) or DEFAULT_FORMATS)
    formats_from = "--formats" if formats is not None else f"target {tgt.name} default_formats"
    th = ParityThresholds.coerce(parity)
    rt = resolve_runtime(device, precision)  # a bad --device / --precision fails before any work
    if calib_samples < 1 or parity_samples < 1:
        raise AutoPruneEdgeError("--calib-samples and --parity-samples must be at least 1")
    check_batch_size(batch_size)
    if not (math.isfinite(qat_epochs) and qat_epochs >= 0):
        raise AutoPruneEdgeError(f"--qat-epochs must be a number >= 0, got {qat_epochs}")
    if qat_epochs > 0 and "tflite-int8" not in fmts:
        raise AutoPruneEdgeError("--qat-epochs trains for the int8 file, but tflite-int8 is not among the formats "
                                 f"({', '.join(fmts)}); add it with --formats or drop --qat-epochs")
    if task is not None:
        get_task(task)  # a typo fails before any work
    if autoprune is not None:
        check_autoprune_config(autoprune)  # prune() checks it too, after the data load and pretraining
    name = name or f"{model.replace(':', '_').replace('.', '_')}-{tgt.name}"
    dest = check_writable(Path(out_dir) / name)

    work = load_workload(model, data, weights=weights, input_size=input_size, allow_download=allow_download,
                         seed=seed)
    bundle, input_shape = work.data, work.input_shape
    if bundle is None:
        raise AutoPruneEdgeError("build needs data to fine-tune, calibrate and check on; pass e.g. --data synthetic")
    the_task = task_for(task, bundle)
    # prune() checks these too, but a build would first spend the pretraining epochs
    check_task_options(the_task, method=method, granularity=granularity, distill=distill, qat_epochs=qat_epochs)
    if pretrain_epochs is None:
        pretrain_epochs = 0.0 if weights else 1.0
    one_batch = batch_size or FINETUNE_BATCH_SIZE  # for the steps that have no phase default of their own
    pretrain_log = []
    if pretrain_epochs > 0:
        progress.log(f"training the dense {model} for {pretrain_epochs:g} epoch(s) on {bundle.name} data first "
                     "(no --weights given)")
    if pretrain_epochs > 0 and the_task is not CLASSIFY:
        pretrain_log = train_for_task(work.model, bundle, the_task, epochs=pretrain_epochs, lr=lr,
                                      batch_size=one_batch, seed=seed, rt=rt)
    elif pretrain_epochs > 0:
        pretrain_log = train(work.model, bundle.train, TrainConfig(epochs=pretrain_epochs, lr=1e-3,
                                                                   weight_decay=1e-4, optimizer="adam", seed=seed),
                             desc="train dense", rt=rt)

    host_note = host_profile_note(tgt)
    if host_note:
        progress.log(host_note)
    if land_measured is None:
        land_measured = measures_here(tgt)
    land = land_measured and any(b.kind == "latency_ms" for b in budgets) and the_task is CLASSIFY
    # the probe converts the dense model now, before prune() compacts it in place
    with LatencyProbe(work.model, input_shape, threads=tgt.runtime.threads) if land else nullcontext() as probe:
        result = prune(work.model, bundle, budgets, target=tgt, method=method, input_shape=input_shape,
                       epochs=epochs, finetune_epochs=finetune_epochs, lr=lr, batch_size=batch_size,
                       granularity=granularity, distill=distill, distill_alpha=distill_alpha,
                       distill_temperature=distill_temperature, autoprune=autoprune, device=device,
                       precision=precision, seed=seed, latency_probe=probe, ignore=ignore, task=the_task.name,
                       speed_exchange=speed_exchange)
    result.notes += [n for n in (host_note, calibration_note(tgt)) if n]
    qat = None
    if qat_epochs > 0:
        before_qat = result.accuracy_after
        qat = quantisation_aware_finetune(result.model, bundle.train, qat_epochs, lr=lr / 10, batch_size=one_batch,
                                          seed=seed, rt=rt)
        result.accuracy_after = evaluate(result.model, bundle.val, desc="accuracy (after QAT)", rt=rt)
        qat.accuracy_before, qat.accuracy_after = before_qat, result.accuracy_after

    with staged_dir(dest) as tmp:
        save_pruned(tmp / "pruned", result.model, work.spec, result.history, input_shape, work.meta())
        calib = calibration_batch(bundle, calib_samples, seed=seed) if "tflite-int8" in fmts else None
        held, dropped = disjoint_heldout(heldout_batch(bundle, parity_samples), calib)
        arts = convert(result.model, torch.zeros(input_shape), tmp, formats=fmts, calib=calib, heldout=held,
                       measure_runs=measure_runs, thresholds=th,
                       labels=list(bundle.class_names) if the_task is CLASSIFY else None,
                       mean=list(bundle.mean), std=list(bundle.std), name=name,
                       edgetpu_sram_bytes=edgetpu_sram_bytes(tgt), int8_io=int8_io,
                       time_pixel_step=measures_here(tgt))
        (tmp / "labels.txt").write_text("\n".join(bundle.class_names) + "\n")
        write_decoding(result.model, input_shape, tmp)
        withheld = [] if allow_parity_failure else withhold_failures(arts, tmp)
        targets = [tgt, *(load_target(t) for t in (compare_targets or ()))]
        predicted = predict_targets(result.model, input_shape, targets, shipped_precisions(fmts))
        inputs = (f"the first {len(held)} images of the validation split of {bundle.name} data"
                  + (f" ({dropped} dropped: they also occur in the calibration set)" if dropped else ""))
        card = describe_build(
            version=__version__, model=model, spec=work.spec, data=bundle, target=tgt, budgets=budgets,
            result=result, artifacts=arts, predicted=predicted, input_shape=input_shape,
            pretrain_epochs=pretrain_epochs, pretrain_log=pretrain_log, finetune_epochs=finetune_epochs, qat=qat,
            task=the_task, outputs=output_shapes(result.model, input_shape),
            seconds=time.perf_counter() - t0, formats=fmts, formats_from=formats_from,
            parity=parity_info(th.to_dict(), inputs, len(held), dropped),
            calibration=None if calib is None else calibration_info(len(calib), seed, len(set(sample_hashes(calib)))),
            data_source=DataSource(data, seed, bundle.name, len(bundle.train), len(bundle.val),
                                   list(bundle.input_shape)))
        (tmp / "model_card.json").write_text(card.to_json())
        write_report(tmp / "report.md", card)
        if html_report:
            write_html_report(tmp / "report.html", card)
    report = BuildReport(dest, card)
    if withheld:
        raise partial_build_error(withheld, [a for a in arts if a.written], dest,
                                  "pass --allow-parity-failure to write failing files too, marked as failing, or "
                                  "relax the --parity-* thresholds", report=report)
    return report
