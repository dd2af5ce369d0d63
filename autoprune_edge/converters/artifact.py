"""`Artifact`: one written model file and what checking it against torch found."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .edgetpu import EdgeTpuReport


@dataclass
class RecipeTrial:
    """One int8 recipe tried on the way to the shipped file, and its parity against torch."""

    recipe: str
    what: str
    top1_agreement: float
    cosine: float
    rel: float
    passed: bool
    top1_decided: float | None = None  # on the decidable images (parity.Parity)
    decided: int | None = None


@dataclass
class Int8Info:
    """How the int8 file was made and how to feed it."""

    io: str  # tensor type of its input/output: uint8, int8 or float32
    pixel_input: bool  # uint8 RGB pixels 0..255 go straight in (the normalisation is inside)
    recipe: str  # the recipe that shipped (int8_prep.RECIPES)
    tried: list[RecipeTrial] = field(default_factory=list)  # cheapest first, up to the one that shipped
    batchnorms_folded: int = 0
    equalised_pairs: int = 0
    bias_corrected_layers: int = 0
    how_to_feed: str = ""
    clipped_activations: int = 0
    input_step: str | None = None  # uint8 files timed here: which input step shipped, both timings (pixel_path.py)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Int8Info:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        trial = {f.name for f in fields(RecipeTrial)}
        kw["tried"] = [RecipeTrial(**{k: v for k, v in t.items() if k in trial}) for t in kw.get("tried", [])]
        return cls(**kw)


@dataclass
class Artifact:
    format: str
    path: str
    bytes: int
    parity: dict[str, float] | None = None
    parity_ok: bool | None = None  # None: not run numerically (Core ML on Linux)
    macs_counted: int | None = None  # counted from the file's own graph, independently of torch
    host_latency_ms: dict[str, float] = field(default_factory=dict)  # threads -> median ms
    io: dict[str, Any] | None = None
    precision: str | None = None
    failures: list[str] = field(default_factory=list)  # why it fails parity / verification (empty: ok)
    divergence: dict[str, Any] | None = None  # first diverging layer, when it fails
    metadata: dict[str, Any] | None = None  # what was embedded into the file
    edgetpu: EdgeTpuReport | None = None  # Edge TPU readiness (int8 TFLite)
    coreml: dict[str, Any] | None = None  # Core ML spec summary
    int8: Int8Info | None = None  # int8 I/O type, the quantisation recipe chosen and what each one tried
    verified_by: str = ""
    written: bool = True  # False: it failed its check and its file was withheld from the output folder

    @property
    def ok(self) -> bool:
        return not self.failures

    def failure_line(self) -> str:
        where = f"; {self.divergence['summary']}" if self.divergence and self.divergence.get("summary") else ""
        return f"{self.format} ({self.path}): {', '.join(self.failures)}{where}"

    @property
    def status(self) -> str:
        """One word for tables: ok, spec ok (not run numerically), FAIL (shipped anyway) or withheld."""
        if self.failures:
            return "FAIL" if self.written else "withheld"
        return "ok" if self.parity_ok else "spec ok"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        """Read back one entry of a saved model card (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("edgetpu") is not None:
            kw["edgetpu"] = EdgeTpuReport.from_dict(kw["edgetpu"])
        if kw.get("int8") is not None:
            kw["int8"] = Int8Info.from_dict(kw["int8"])
        return cls(**kw)


def file_bytes(path: Path) -> int:
    """Size of a file, or of a package folder (Core ML's .mlpackage) summed over its files."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() \
        else path.stat().st_size
