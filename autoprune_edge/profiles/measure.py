"""``autoprune-edge measure``: time .tflite files with the LiteRT interpreter and record what calibration needs.

Runs anywhere numpy and ai-edge-litert (or tflite-runtime) are installed: no torch is imported, so
it works on a Raspberry Pi, a Jetson, or a phone's Python. The result is a JSON document::

    {"format": "autoprune-edge-measurements", "version": 1, "created": "...", "tool": "...",
     "device": {"machine": "aarch64", "cpu": "...", "cpu_count": 4, "runtime": "ai-edge-litert 2.1.0", ...},
     "measurements": [
        {"model": "model_int8.tflite", "sha256": "...", "bytes": 4012345, "precision": "int8",
         "threads": 4, "runs": 50, "warmup": 10, "delegate": null,
         "median_ms": 18.2, "p10_ms": 17.9, "p90_ms": 19.0, "min_ms": 17.6, "mean_ms": 18.3,
         "macs": 300774272, "io_elements": 151528,
         "kernels": [{"name": "0:CONV_2D", "op": "CONV_2D", "op_class": "conv3x3", "macs": ..., ...}, ...]}
     ]}

``kernels`` is the per-op description of the graph (op, class, channel counts, element counts) read from
the file itself, so ``autoprune-edge calibrate --measurements results.json`` can refit a target profile
without the original model.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata as md
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..cpu import cpu_name, speed_flags
from ..errors import AutoPruneEdgeError
from .host import measure_tflite
from .tflite_ops import read_kernels

FORMAT = "autoprune-edge-measurements"
VERSION = 1


class MeasurementsError(AutoPruneEdgeError):
    """A measurements file is missing, malformed, or has no usable measurement."""


def runtime_version() -> str:
    """The TFLite runtime package installed here and its version (what a timing depends on)."""
    for dist in ("ai-edge-litert", "tflite-runtime", "tensorflow"):
        try:
            return f"{dist} {md.version(dist)}"
        except md.PackageNotFoundError:
            continue
    return "unknown"


def device_info() -> dict:
    return {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu": cpu_name(),
        "cpu_flags": list(speed_flags()),
        "cpu_count": os.cpu_count(),
        "runtime": runtime_version(),
        "python": platform.python_version(),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def measure_file(path: str | Path, *, threads: int = 1, runs: int = 50, warmup: int = 10,
                 delegate: str | None = None) -> dict:
    """One measurement record (see the module docstring) for one .tflite file."""
    path = Path(path)
    if not path.is_file():
        raise MeasurementsError(f"{path}: no such .tflite file")
    if threads < 1 or runs < 1 or warmup < 0:
        raise MeasurementsError("threads and runs must be >= 1 and warmup >= 0")
    kernels, summary = read_kernels(path)
    try:
        m = measure_tflite(path, threads=threads, runs=runs, warmup=warmup, delegate=delegate)
    except ImportError as e:
        raise MeasurementsError(str(e)) from None
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MeasurementsError(f"{path}: the LiteRT interpreter failed: {first[:300]}") from None
    return {
        "model": path.name,
        "path": str(path),
        "sha256": _sha256(path),
        "bytes": path.stat().st_size,
        "precision": summary["precision"],
        "threads": int(threads),
        "runs": int(runs),
        "warmup": int(warmup),
        "delegate": delegate,
        "median_ms": m.median_ms,
        "p10_ms": m.p10_ms,
        "p90_ms": m.p90_ms,
        "min_ms": m.min_ms,
        "mean_ms": m.mean_ms,
        "macs": summary["macs"],
        "io_elements": summary["io_elements"],
        "kernels": [asdict(k) for k in kernels],
    }


def new_document(measurements: list[dict], device: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "tool": f"autoprune-edge {__version__} measure",
        "device": device if device is not None else device_info(),
        "measurements": measurements,
    }


def measure(paths: list[str | Path], *, threads: int = 1, runs: int = 50, warmup: int = 10,
            delegate: str | None = None, out: str | Path | None = None, append: bool = False) -> dict:
    """Measure every file; write the JSON document to ``out`` (appending to an existing one if asked)."""
    if not paths:
        raise MeasurementsError("no .tflite file given")
    records = [measure_file(p, threads=threads, runs=runs, warmup=warmup, delegate=delegate) for p in paths]
    doc = new_document(records)
    if out is not None:
        out = Path(out)
        if append and out.exists():
            old = load_measurements(out)
            old["measurements"].extend(records)
            doc = old
        write_document(doc, out)
    return doc


def write_document(doc: dict, out: str | Path) -> None:
    """Write a measurements document atomically (a temp file moved into place)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, out)
    except OSError as e:
        raise MeasurementsError(f"cannot write {out}: {e.strerror}") from None


_REQUIRED = {"model": str, "precision": str, "threads": int, "median_ms": (int, float), "kernels": list}


def load_measurements(path: str | Path) -> dict:
    """Read and validate a measurements document; one-line MeasurementsError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MeasurementsError(f"{path}: no such measurements file (write one with 'autoprune-edge measure')") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MeasurementsError(f"{path}: cannot read: {e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise MeasurementsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MeasurementsError(f"{path}: not an autoprune-edge measurements file (no \"format\": \"{FORMAT}\"); "
                                "write one with 'autoprune-edge measure'")
    if doc.get("version") != VERSION:
        raise MeasurementsError(f"{path}: measurements format version {doc.get('version')!r} is not supported (expected {VERSION})")
    ms = doc.get("measurements")
    if not isinstance(ms, list) or not ms:
        raise MeasurementsError(f"{path}: has no measurements")
    for i, m in enumerate(ms):
        if not isinstance(m, dict):
            raise MeasurementsError(f"{path}: measurements[{i}] is not an object")
        for key, typ in _REQUIRED.items():
            if key not in m:
                raise MeasurementsError(f"{path}: measurements[{i}] has no \"{key}\"")
            if not isinstance(m[key], typ) or isinstance(m[key], bool):
                raise MeasurementsError(f"{path}: measurements[{i}].{key} has the wrong type")
        if not m["median_ms"] > 0:
            raise MeasurementsError(f"{path}: measurements[{i}].median_ms must be > 0")
        if m["threads"] < 1:
            raise MeasurementsError(f"{path}: measurements[{i}].threads must be >= 1")
        if not m["kernels"]:
            raise MeasurementsError(f"{path}: measurements[{i}] ({m['model']}) has an empty kernel list")
        for j, k in enumerate(m["kernels"]):
            if not isinstance(k, dict) or not {"op", "op_class"} <= set(k):
                raise MeasurementsError(f"{path}: measurements[{i}].kernels[{j}] needs \"op\" and \"op_class\"")
    doc.setdefault("device", {})
    return doc
