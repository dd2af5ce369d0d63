"""The `onnx` format: torch -> model.onnx, checked with onnxruntime."""
from __future__ import annotations

import numpy as np

from .. import progress
from .artifact import Artifact
from .divergence import best_effort, locate_torch_vs_onnx
from .formats import Format
from .job import ExportJob
from .onnx_export import export_onnx, run_onnx


def export_onnx_artifact(job: ExportJob, formats: tuple[Format, ...]) -> list[Artifact]:
    (fmt,) = formats
    path = job.out_dir / fmt.suffix
    with progress.task("export ONNX", total=None):
        export_onnx(job.model, job.example, path)
    art = Artifact(fmt.name, path.name, path.stat().st_size, precision=fmt.precision, verified_by=fmt.verifier)
    x = job.heldout
    runs = [run_onnx(path, x[i:i + 1]) for i in range(len(x))]  # one sample at a time, as apps run it
    if isinstance(runs[0], list):  # several outputs
        job.judge(art, [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))])
    else:
        job.judge(art, np.concatenate(runs))
    if art.failures and job.localize:
        tol = max(job.thresholds.fp32_rel, 1e-4)
        art.divergence = best_effort(lambda: locate_torch_vs_onnx(job.model, path, x, tol=tol).described())
    return [art]
