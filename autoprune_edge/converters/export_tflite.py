"""The `tflite-*` formats: model.onnx -> model_fp32/fp16.tflite (one onnx2tf run for both), and
model_int8.tflite from its own prepared model (int8_prep: BatchNorm folded, bias correction when plain
PTQ misses parity, the normalisation inside the model for uint8 pixel input). Each file gets embedded
metadata, is run with LiteRT against the user's torch model, MAC-counted and (int8) Edge TPU-checked."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__, progress
from ..errors import ConversionError, ParityError
from ..profiles.host import measure_all_threads
from .artifact import Artifact, Int8Info, RecipeTrial
from .divergence import Divergence, best_effort, locate_onnx_vs_tflite
from .edgetpu import EDGETPU_PARAM_SRAM_BYTES, check_edgetpu
from .formats import Format
from .int8_prep import RECIPES, Int8Recipe, PixelInput, PreparedModel, pixel_input, prepare_for_int8, to_pixels
from .job import ExportJob
from .onnx_export import export_onnx
from .litert import run_tflite, tflite_io_details
from .tflite import onnx_to_tflite
from .pixel_path import faster_pixel_path
from .tflite_graph import count_tflite_macs, drop_identity_clamps, set_input_quantization
from .tflite_metadata import embed_metadata


def export_tflite(job: ExportJob, formats: tuple[Format, ...]) -> list[Artifact]:
    onnx = job.artifact("onnx")
    if onnx is None:
        raise ConversionError("TFLite is converted from the ONNX file; convert 'onnx' first")
    onnx_path = job.out_dir / onnx.path
    if any(f.needs_calibration for f in formats) and job.calib is None:
        raise ConversionError("tflite-int8 needs calibration data; pass --calib-data (or --data for build)")
    floats = [f for f in formats if f.precision != "int8"]
    arts: list[Artifact] = []
    if floats:
        precisions = [f.precision for f in floats]
        with progress.task(f"convert to TFLite ({', '.join(precisions)}) with onnx2tf", total=None):
            probe = job.calib.numpy() if job.calib is not None else job.heldout  # training images when there are
            files = onnx_to_tflite(onnx_path, job.out_dir, precisions=precisions, test_data=probe)
        for fmt in floats:
            arts.append(_finish(job, fmt, Path(files[fmt.precision]), job.heldout, onnx_path, arts))
    for fmt in formats:
        if fmt.precision == "int8":
            arts.append(_export_int8(job, fmt, arts))
    return arts


def _export_int8(job: ExportJob, fmt: Format, done: list[Artifact]) -> Artifact:
    """Try the int8 recipes cheapest first, keep the first that passes parity (else the closest)."""
    pixel = job.int8_io == "uint8" and bool(job.mean and job.std) and job.example.dim() == 4
    held = torch.from_numpy(job.heldout)
    held_in = (to_pixels(held, job.mean, job.std) if pixel else held).numpy()
    calib_in = to_pixels(job.calib, job.mean, job.std) if pixel else job.calib
    tried: list[RecipeTrial] = []
    best: tuple[tuple[bool, float, float], Path, Path, Int8Recipe, PreparedModel, int] | None = None
    with tempfile.TemporaryDirectory(prefix="ape_int8_") as tmp:
        for recipe in RECIPES:
            with progress.task(f"int8 ({recipe.name}, {job.int8_io} I/O): prepare, export, quantise", total=None):
                prep = prepare_for_int8(job.model, recipe, job.calib)
                net = pixel_input(prep.model, job.mean, job.std) if pixel else prep.model
                rdir = Path(tmp) / recipe.name
                src = export_onnx(net, torch.zeros_like(job.example), rdir / "model.onnx")
                path = onnx_to_tflite(src, rdir, precisions=["int8"], calib=calib_in.numpy(),
                                      int8_io=job.int8_io, test_data=calib_in.numpy())["int8"]
                if pixel:
                    set_input_quantization(path, 1.0, 0)  # raw camera bytes go straight in
                drop_identity_clamps(path)
                # a PixelInput wrapper (normalisation not foldable) is a 1x1 depthwise conv: 1 MAC per input value
                added = int(np.prod(job.example.shape[1:])) if isinstance(net, PixelInput) else 0
            try:
                p = job.parity(run_tflite(path, held_in), output_step(tflite_io_details(path)))
            except ParityError:  # an output came back in another layout: this recipe's file cannot ship
                continue
            fails = job.thresholds.failures(fmt.name, p)
            tried.append(RecipeTrial(recipe.name, recipe.note, round(p.top1_agreement, 4), round(p.cosine, 6),
                                     round(p.rel, 6), not fails,
                                     None if p.top1_decided is None else round(p.top1_decided, 4), p.decided))
            key = (not fails, p.top1_agreement, p.cosine)
            if best is None or key > best[0]:
                best = (key, path, src, recipe, prep, added)
            if not fails:
                break
        if best is None:
            raise ConversionError("no int8 file could be compared with torch (an output changed layout in every "
                                  "recipe); ship fp32/fp16 instead")
        _, path, src, recipe, prep, added = best
        step = None
        if pixel and job.time_pixel_step:  # the target is this machine: ship the faster uint8 input step
            with progress.task("int8: time the uint8 input step two ways (QUANTIZE or DEQUANTIZE + QUANTIZE)",
                               total=None):
                path, step = faster_pixel_path(path, held_in, Path(tmp))
        dst = job.out_dir / fmt.suffix
        shutil.copyfile(path, dst)
        art = _finish(job, fmt, dst, held_in, src, done, pixel=pixel, added_macs=added)
    art.int8 = Int8Info(job.int8_io, pixel, recipe.name, tried, prep.folded_batchnorms, prep.equalised_pairs,
                        prep.corrected_layers, _how_to_feed(job.int8_io, pixel), prep.clipped_activations,
                        step.text() if step else None)
    return art


def output_step(io: dict[str, Any]) -> float:
    """The logit resolution of an int8 file from its `tflite_io_details`: the output tensor's scale (float32
    I/O files keep the int8 output inside, before a DEQUANTIZE; that scale is not read here, so 0: judged on
    all inputs)."""
    out = io["output"]
    return float(out["scale"]) if out["quantized"] else 0.0


def _how_to_feed(io: str, pixel: bool) -> str:
    if pixel:
        return ("uint8 RGB pixels 0..255 as they are (NHWC; scale 1, zero point 0): the normalisation is inside the "
                "model; logits = (q_out - zero_point) * scale with the output's uint8 scale/zero point")
    if io == "float32":
        return "float32 normalised NHWC input, float32 logits (quantise/dequantise ops are inside the model)"
    return (f"q = clip(round(x / scale) + zero_point) to {io} on the normalised NHWC input; "
            "logits = (q_out - zero_point) * scale")


def _finish(job: ExportJob, fmt: Format, path: Path, x: np.ndarray, onnx_path: Path, done: list[Artifact], *,
            pixel: bool = False, added_macs: int = 0) -> Artifact:
    """Metadata, parity on ``x`` (in the file's own input units), MACs, Edge TPU check, blame, timing."""
    prec = fmt.precision
    io = tflite_io_details(path)
    art = Artifact(fmt.name, path.name, 0, precision=prec, io=io, verified_by=fmt.verifier)
    if job.labels and job.mean and job.std:
        art.metadata = _embed(job, path, fmt.name, prec, io, pixel)
    art.bytes = path.stat().st_size
    job.judge(art, run_tflite(path, x), output_step(io) if prec == "int8" else 0.0)
    art.macs_counted = count_tflite_macs(path).macs
    art.macs_counted -= added_macs  # an input normalisation op this toolkit added, not the user's network
    if prec == "int8":
        art.edgetpu = check_edgetpu(path, sram_bytes=job.edgetpu_sram_bytes or EDGETPU_PARAM_SRAM_BYTES)
    if art.failures and job.localize:
        prior = [*job.done, *done]
        art.divergence = best_effort(lambda: _blame(job, prec, path, onnx_path, x, prior))
    if job.measure:
        with progress.task(f"measure {path.name} on this host (LiteRT)", total=None):
            ms = measure_all_threads(path, runs=job.measure_runs)
        art.host_latency_ms = {str(t): round(m.median_ms, 4) for t, m in ms.items()}
    return art


def _embed(job: ExportJob, path: Path, fmt: str, prec: str, io: dict[str, Any], pixel: bool) -> dict[str, Any]:
    info = {"layout": io["input"]["layout"], "input_shape": io["input"]["shape"], "precision": prec,
            "input_quantization": {k: io["input"][k] for k in ("dtype", "scale", "zero_point")},
            "output_quantization": {k: io["output"][k] for k in ("dtype", "scale", "zero_point")},
            "pixel_range": [0.0, 255.0] if pixel else [0.0, 1.0], "producer": f"autoprune-edge {__version__}"}
    channels = len(job.mean or ())
    mean, std = ([0.0] * channels, [1.0 / 255.0] * channels) if pixel else (list(job.mean or ()), list(job.std or ()))
    note = (f"{io['input']['layout']} {io['input']['shape']} uint8 pixels 0..255 as they are; the normalisation "
            f"(mean {list(job.mean or ())}, std {list(job.std or ())} on [0, 1]) is inside the model") if pixel else None
    if pixel:
        info["normalization_inside_model"] = {"mean": list(job.mean or ()), "std": list(job.std or ())}
    return embed_metadata(path, name=job.name, description=f"{job.name} ({fmt}), pruned by autoprune-edge",
                          version=__version__, labels=list(job.labels or ()), mean=mean, std=std, info=info,
                          input_description=note)


def _blame(job: ExportJob, prec: str, path: Path, onnx_path: Path, x: np.ndarray, done: list[Artifact]
           ) -> dict[str, Any]:
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
        d = locate_onnx_vs_tflite(onnx_path, path, x, quantized=False, tol=max(th.fp32_rel, 1e-4))
    else:
        cos = th.int8_cosine if prec == "int8" else th.fp16_cosine
        d = locate_onnx_vs_tflite(onnx_path, path, x, quantized=True, tol=min(0.5, 5 * (1.0 - cos)))
        if prec == "fp16":
            d.stage = "fp16 conversion (onnx2tf)"
    return d.described()
