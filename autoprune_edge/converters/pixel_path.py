"""Which of two equivalent first ops a uint8-pixel int8 file ships with, decided by timing both here.

The converter writes the uint8 -> int8 step as one QUANTIZE. XNNPACK does not run that op (it runs
uint8 -> float DEQUANTIZE and float -> int8 QUANTIZE), so on this kind of CPU it falls back to the
interpreter's own kernel: about 0.12 ms of a 1.65 ms pruned MobileNetV2 on a Zen 4, and the file with the
delegated pair instead (tflite_graph.dequantize_pixel_input) ran 1.555 ms against 1.648. Whether that holds on
an ARM core was not measured, so the rewrite is never applied blind: only when the build's target is the
machine running it (the exporter is told so), both files are timed interleaved here and the twin ships if it
is at least 1 % faster, with both timings in the model card. The two files must give identical outputs on the
parity inputs, else the plain one ships. The twin holds a float copy of the input in its tensor arena
(588 KiB at 224x224x3), which the memory prediction leaves out.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..profiles.host import measure_tflite
from .litert import run_tflite
from .tflite_graph import dequantize_pixel_input

ROUNDS = 4  # interleaved visits of each file (p10 of RUNS invokes after 5 each)
RUNS = 20
MARGIN = 0.99  # the twin ships only when at least 1 % faster: a tie is timing noise, and the plain file has one op less


@dataclass(frozen=True)
class PixelPath:
    """What the int8 file's first step is and how long each candidate took here (median visit, ms)."""

    chosen: str  # "quantize" (the converter's single uint8 -> int8 op) or "dequantize+quantize"
    quantize_ms: float
    dequantize_ms: float

    def text(self) -> str:
        return (f"uint8 input step: {self.chosen} (timed here: QUANTIZE uint8->int8 {self.quantize_ms:.3f} ms, "
                f"DEQUANTIZE + QUANTIZE {self.dequantize_ms:.3f} ms)")


def faster_pixel_path(path: Path, pixels: np.ndarray, work: Path) -> tuple[Path, PixelPath | None]:
    """``path`` or its DEQUANTIZE + QUANTIZE twin (written in ``work``) where the twin runs at least 1 % faster
    here and gives the same outputs on ``pixels``; None when the file has no uint8 -> int8 input step."""
    twin = Path(work) / f"{Path(path).stem}_dequantize.tflite"
    if not dequantize_pixel_input(path, twin):
        return path, None
    same = all(np.array_equal(a, b) for a, b in zip(_outputs(path, pixels), _outputs(twin, pixels)))
    visits: dict[Path, list[float]] = {path: [], twin: []}
    for _ in range(ROUNDS):
        for p in visits:
            visits[p].append(measure_tflite(p, threads=1, runs=RUNS, warmup=5).p10_ms)
    plain_ms, twin_ms = (statistics.median(v) for v in visits.values())
    if same and twin_ms < MARGIN * plain_ms:
        return twin, PixelPath("dequantize+quantize", plain_ms, twin_ms)
    return path, PixelPath("quantize", plain_ms, twin_ms)


def _outputs(path: Path, pixels: np.ndarray) -> list[np.ndarray]:
    out = run_tflite(path, pixels)
    return out if isinstance(out, list) else [out]
