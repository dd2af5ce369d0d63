"""`convert()`: write the requested artifacts and check each against torch, one exporter per format.

Parity policy (documented in the README): every artifact is run against torch on held-out inputs
(validation images never used for int8 calibration) and judged with ``ParityThresholds``. Failing
artifacts are returned with ``failures`` set, not raised: the caller decides. ``build`` and the
``convert`` command keep every file that passed, withhold (delete) the failing ones and then raise
PartialBuildError naming them, unless told to keep failing files too.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from ..errors import AutoPruneEdgeError, PartialBuildError
from ..heads import flatten_outputs
from .artifact import Artifact
from .formats import INT8_IO, Format, format_named, parse_formats
from .job import ExportJob
from .parity import ParityThresholds


def convert(model: nn.Module, example: torch.Tensor, out_dir: Path, *, formats: str | tuple[str, ...] | None = None,
            calib: torch.Tensor | None = None, heldout: torch.Tensor | None = None, measure: bool = True,
            measure_runs: int = 30, thresholds: ParityThresholds | dict | None = None,
            labels: list[str] | None = None, mean: list[float] | None = None, std: list[float] | None = None,
            name: str = "model", localize: bool = True, edgetpu_sram_bytes: int | None = None,
            int8_io: str = "uint8", time_pixel_step: bool = False) -> list[Artifact]:
    """Write the requested artifacts into `out_dir` (which must exist) and check each against torch.

    ``heldout`` (NCHW, normalised) are the parity inputs; they must not overlap ``calib`` (the int8
    calibration samples). With ``labels`` (+ mean/std) the .tflite files get embedded metadata and the
    Core ML package gets the labels as user metadata. Every int8 .tflite gets an Edge TPU readiness
    check against ``edgetpu_sram_bytes`` of parameter cache (default ~7 MiB). ``int8_io`` is the int8
    file's input/output type: uint8 (default; for image models with mean/std the file then takes raw
    0..255 pixels, normalisation inside), int8, or float32. ``time_pixel_step`` (the target is this
    machine): the uint8-pixel int8 file ships with whichever of two equivalent input steps runs faster here
    (converters/pixel_path.py).
    """
    fmts = parse_formats(formats)
    if int8_io not in INT8_IO:
        raise AutoPruneEdgeError(f"unknown --int8-io {int8_io!r}; choose from {', '.join(INT8_IO)}")
    model = model.eval()
    heldout = heldout if heldout is not None else torch.randn(8, *example.shape[1:],
                                                               generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        outs = [o.numpy() for o in flatten_outputs(model(heldout))]
    ref = outs[0] if len(outs) == 1 else outs  # several outputs (detectors, segmenters): judged one by one
    job = ExportJob(model=model, example=example, out_dir=Path(out_dir), heldout=heldout.detach().float().numpy(),
                    reference=ref, thresholds=ParityThresholds.coerce(thresholds), calib=calib, labels=labels,
                    mean=mean, std=std, name=name, measure=measure, measure_runs=measure_runs, localize=localize,
                    edgetpu_sram_bytes=edgetpu_sram_bytes, int8_io=int8_io,
                    time_pixel_step=time_pixel_step)
    if isinstance(ref, list):
        job.localize = False  # the layer-by-layer search compares one output tensor
        if "coreml" in fmts:
            raise AutoPruneEdgeError(f"Core ML export of a model with {len(ref)} outputs is not supported yet; "
                                     "drop coreml from --formats")
    for group in _by_exporter([format_named(f) for f in fmts]):
        job.done += group[0].load_exporter()(job, group)
    return job.done


def _by_exporter(fmts: list[Format]) -> list[tuple[Format, ...]]:
    """Formats grouped by exporter, in table order (formats sharing one are converted in one call)."""
    groups: dict[str, list[Format]] = {}
    for f in fmts:
        groups.setdefault(f.exporter, []).append(f)
    return [tuple(g) for g in groups.values()]


def withhold_failures(arts: list[Artifact], out_dir: Path) -> list[Artifact]:
    """Delete the files of failing artifacts so that only verified files ship; they stay listed, marked
    ``written=False``, so the card and report say what was withheld and why. Returns the withheld ones."""
    failing = [a for a in arts if a.failures]
    for a in failing:
        path = Path(out_dir) / a.path
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        a.written = False
    return failing


def partial_build_error(withheld: list[Artifact], written: list[Artifact], dest: Path, hint: str,
                        report: object = None) -> PartialBuildError:
    """The one-line error for a folder written without its failing artifacts."""
    kept = ", ".join(a.path for a in written) or "no model file"
    return PartialBuildError(
        "parity check failed: " + " | ".join(a.failure_line() for a in withheld)
        + f" - not written; the files that passed ({kept}) are in {dest} ({hint})",
        out_dir=dest, withheld=[a.format for a in withheld], report=report)
