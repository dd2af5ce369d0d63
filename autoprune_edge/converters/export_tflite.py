"""The `tflite-*` formats: model.onnx -> one .tflite per precision (one onnx2tf run for all of them),
each with embedded metadata, run with LiteRT against torch, MAC-counted and (int8) Edge TPU-checked."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__, progress
from ..errors import ConversionError
from ..profiles.host import measure_all_threads
from .artifact import Artifact
from .divergence import Divergence, best_effort, locate_onnx_vs_tflite
from .edgetpu import EDGETPU_PARAM_SRAM_BYTES, check_edgetpu
from .formats import Format
from .job import ExportJob
from .litert import run_tflite, tflite_io_details
from .tflite import onnx_to_tflite
from .tflite_graph import count_tflite_macs
from .tflite_metadata import embed_metadata


def export_tflite(job: ExportJob, formats: tuple[Format, ...]) -> list[Artifact]:
    precisions = [f.precision for f in formats]
    onnx = job.artifact("onnx")
    if onnx is None:
        raise ConversionError("TFLite is converted from the ONNX file; convert 'onnx' first")
    onnx_path = job.out_dir / onnx.path
    if any(f.needs_calibration for f in formats) and job.calib is None:
        raise ConversionError("tflite-int8 needs calibration data; pass --calib-data (or --data for build)")
    with progress.task(f"convert to TFLite ({', '.join(precisions)}) with onnx2tf", total=None):
        files = onnx_to_tflite(onnx_path, job.out_dir, precisions=precisions,
                               calib=job.calib.numpy() if job.calib is not None else None)
    arts: list[Artifact] = []
    for fmt in formats:
        prec = fmt.precision
        path = Path(files[prec])
        io = tflite_io_details(path)
        art = Artifact(fmt.name, path.name, 0, precision=prec, io=io, verified_by=fmt.verifier)
        if job.labels and job.mean and job.std:
            art.metadata = _embed(job, path, fmt.name, prec, io)
        art.bytes = path.stat().st_size
        job.judge(art, run_tflite(path, job.heldout))
        art.macs_counted = count_tflite_macs(path).macs
        if prec == "int8":
            art.edgetpu = check_edgetpu(path, sram_bytes=job.edgetpu_sram_bytes or EDGETPU_PARAM_SRAM_BYTES)
        if art.failures and job.localize:
            done = [*job.done, *arts]
            art.divergence = best_effort(lambda: _blame(job, prec, path, onnx_path, done))
        if job.measure:
            with progress.task(f"measure {path.name} on this host (LiteRT)", total=None):
                ms = measure_all_threads(path, runs=job.measure_runs)
            art.host_latency_ms = {str(t): round(m.median_ms, 4) for t, m in ms.items()}
        arts.append(art)
    return arts


def _embed(job: ExportJob, path: Path, fmt: str, prec: str, io: dict[str, Any]) -> dict[str, Any]:
    info = {"layout": io["input"]["layout"], "input_shape": io["input"]["shape"], "precision": prec,
            "input_quantization": {k: io["input"][k] for k in ("dtype", "scale", "zero_point")},
            "output_quantization": {k: io["output"][k] for k in ("dtype", "scale", "zero_point")},
            "pixel_range": [0.0, 1.0], "producer": f"autoprune-edge {__version__}"}
    return embed_metadata(path, name=job.name, description=f"{job.name} ({fmt}), pruned by autoprune-edge",
                          version=__version__, labels=list(job.labels or ()), mean=list(job.mean or ()),
                          std=list(job.std or ()), info=info)


def _blame(job: ExportJob, prec: str, path: Path, onnx_path: Path, done: list[Artifact]) -> dict[str, Any]:
    """Which step broke a failing .tflite: the ONNX export, onnx2tf, or int8 quantisation (and where)."""
    th = job.thresholds
    onnx_art = next((a for a in done if a.format == "onnx"), None)
    if onnx_art is not None and onnx_art.failures:
        return Divergence("torch -> ONNX export", None, None, None, None, None, "", 0, 0,
                          "the ONNX file it was converted from already differs from torch; see the onnx "
                          "artifact").described()
    fp32 = next((a for a in done if a.format == "tflite-fp32"), None)
    if prec != "fp32" and fp32 is not None and fp32.failures:
        return Divergence("ONNX -> TFLite (onnx2tf)", None, None, None, None, None, "", 0, 0,
                          "the fp32 .tflite fails too, so onnx2tf (not quantisation) is the culprit; see "
                          "tflite-fp32").described()
    if prec == "fp32":
        d = locate_onnx_vs_tflite(onnx_path, path, job.heldout, quantized=False, tol=max(th.fp32_rel, 1e-4))
    else:
        cos = th.int8_cosine if prec == "int8" else th.fp16_cosine
        d = locate_onnx_vs_tflite(onnx_path, path, job.heldout, quantized=True, tol=min(0.5, 5 * (1.0 - cos)))
        if prec == "fp16":
            d.stage = "fp16 conversion (onnx2tf)"
    return d.described()
