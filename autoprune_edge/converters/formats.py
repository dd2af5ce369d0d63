"""The output formats, one row each: the single table that convert(), parity, the target schema, the CLI
help and the reports read. Adding a format is one exporter module plus one row here.

Torch-free on purpose (target profiles and parity import it); exporters are named by import path and
loaded only when a format is converted.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import AutoPruneEdgeError


@dataclass(frozen=True)
class Format:
    """One artifact kind. ``exporter`` ("module:function") takes ``(ExportJob, tuple[Format, ...])`` and
    returns Artifacts; rows sharing an exporter are converted in one call (one onnx2tf run for all TFLite)."""

    name: str
    precision: str  # numeric regime of the file
    suffix: str  # file (or package folder) name written into the output folder
    exporter: str
    verifier: str  # how the artifact is checked against torch
    parity: str | None  # regime parity is judged in (ParityThresholds); None: not run numerically
    target_precision: str | None  # precision it runs at on a target (None: not a deployment format)
    needs_onnx: bool = False  # converted from the ONNX file, which then ships with it
    needs_calibration: bool = False  # representative data from the user
    parity_note: str = ""  # a line for reports when the check is not numeric

    def load_exporter(self) -> Callable:
        module, func = self.exporter.split(":")
        return getattr(importlib.import_module(module), func)


_TFL = "autoprune_edge.converters.export_tflite:export_tflite"
_TFL_CHECK = "LiteRT interpreter vs torch"

FORMATS: tuple[Format, ...] = (
    Format("onnx", "fp32", "model.onnx", "autoprune_edge.converters.export_onnx:export_onnx_artifact",
           "onnxruntime (CPU) vs torch", parity="fp32", target_precision=None),
    Format("tflite-fp32", "fp32", "model_fp32.tflite", _TFL, _TFL_CHECK, parity="fp32", target_precision="fp32",
           needs_onnx=True),
    Format("tflite-fp16", "fp16", "model_fp16.tflite", _TFL, _TFL_CHECK, parity="fp16", target_precision="fp16",
           needs_onnx=True),
    Format("tflite-int8", "int8", "model_int8.tflite", _TFL, _TFL_CHECK, parity="int8", target_precision="int8",
           needs_onnx=True, needs_calibration=True),
    Format("coreml", "fp16", "model.mlpackage", "autoprune_edge.converters.export_coreml:export_coreml",
           "spec check only (Core ML prediction needs macOS): I/O shapes, op list, MACs of the MIL program vs "
           "torch, fp16 compute", parity=None, target_precision="fp16",
           parity_note="Core ML: spec check only (prediction needs macOS)"),
)
FORMAT_NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS)
DEFAULT_FORMATS: tuple[str, ...] = ("onnx", "tflite-fp32")
PRECISION_ORDER = ("fp32", "fp16", "int8")
# Tensor types an int8 file can take and return. uint8 (the default) is what camera frames are and what
# MediaPipe Tasks / the TFLite Task Library accept; for image models it also means raw 0..255 pixels in.
INT8_IO: tuple[str, ...] = ("uint8", "int8", "float32")
_BY_NAME = {f.name: f for f in FORMATS}


def format_named(name: str) -> Format:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise AutoPruneEdgeError(f"unknown format {name!r}; choose from {', '.join(FORMAT_NAMES)}") from None


def parse_formats(formats: str | Sequence[str] | None, default: tuple[str, ...] = DEFAULT_FORMATS) -> tuple[str, ...]:
    """Validate a format list, in table order; a format built from ONNX brings ONNX along (it ships with it)."""
    if formats is None:
        formats = default
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    bad = [f for f in items if f not in _BY_NAME]
    if bad or not items:
        raise AutoPruneEdgeError(f"unknown format {bad[0] if bad else '(none)'!r}; choose from "
                                 f"{', '.join(FORMAT_NAMES)}")
    if any(_BY_NAME[f].needs_onnx for f in items) and "onnx" not in items:
        items.insert(0, "onnx")
    order = {f: i for i, f in enumerate(FORMAT_NAMES)}
    return tuple(sorted(dict.fromkeys(items), key=order.__getitem__))


def shipped_precisions(formats: Sequence[str]) -> set[str]:
    """Precisions the shipped files run at on a target (ONNX is an interchange file, not counted)."""
    return {p for p in (_BY_NAME[f].target_precision for f in formats) if p is not None}


def parity_notes() -> str:
    """What reports say about formats whose parity is not numeric."""
    return " ".join(f"{f.parity_note}." for f in FORMATS if f.parity_note)


def formats_help() -> str:
    return ",".join(FORMAT_NAMES)
