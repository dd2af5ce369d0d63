"""Numerical parity between a reference output (torch) and a converted artifact's output."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from autoprune_edge.errors import AutoPruneEdgeError, ParityError

from .formats import FORMATS


@dataclass
class Parity:
    max_abs: float
    rel: float  # max_abs / max|ref|
    cosine: float  # mean per-sample cosine similarity of the flattened outputs
    top1_agreement: float  # fraction of samples (or positions, for dense outputs) with the same argmax
    n: int
    # Models with several outputs (detectors, segmenters): each output compared on its own, the worst
    # number of each kind kept above and the per-output numbers here. Top-1 agreement is then reported
    # but not judged: an argmax over box coordinates or anchors means nothing.
    outputs: int = 1
    per_output: list[dict] | None = None
    top1_judged: bool = True
    # A quantised output cannot order two logits closer than its own step: top-1 agreement also counted
    # only on the inputs whose reference top-1 leads the runner-up by at least `step` (int8 files: the
    # output tensor's scale). None when no step was given or the output is not (N, classes).
    step: float = 0.0
    decided: int | None = None
    top1_decided: float | None = None

    def judged_top1(self) -> tuple[float, str]:
        """The top-1 agreement a limit is checked against, and on which inputs.

        The decided subset counts only when it is at least half of the inputs; a model that undecided
        is judged on all of them."""
        if self.top1_decided is not None and self.decided is not None and 2 * self.decided >= self.n:
            return self.top1_decided, (f"the {self.decided} of {self.n} inputs whose reference top-1 leads by at "
                                       f"least one output step ({self.step:.3g})")
        return self.top1_agreement, f"{self.n} inputs"

    def ok(self, max_rel: float) -> bool:
        return bool(np.isfinite(self.rel) and self.rel <= max_rel)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"max|d|={self.max_abs:.3g} rel={self.rel:.3g} cos={self.cosine:.6f} "
            f"top1={self.top1_agreement:.1%} (n={self.n})"
        )


def compare(ref: np.ndarray | list[np.ndarray], got: np.ndarray | list[np.ndarray], *, step: float = 0.0) -> Parity:
    """Compare outputs of shape (N, ...) sample by sample. Class axis is axis 1.

    Lists (a model's several outputs, in the same order) are compared output by output and summarised
    by the worst of each number. ``step`` > 0 (a quantised output's resolution) adds the top-1 agreement
    on the inputs whose reference margin is at least that (2-D outputs only)."""
    if isinstance(ref, (list, tuple)):
        got = list(got) if isinstance(got, (list, tuple)) else [got]
        if len(got) != len(ref):
            raise ParityError(f"the converted model has {len(got)} outputs, torch has {len(ref)}")
        per = [compare(r, g) for r, g in zip(ref, got)]
        return Parity(max_abs=max(q.max_abs for q in per), rel=max(q.rel for q in per),
                      cosine=min(q.cosine for q in per), top1_agreement=min(q.top1_agreement for q in per),
                      n=per[0].n, outputs=len(per), per_output=[q.to_dict() for q in per],
                      top1_judged=len(per) == 1)
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        raise ParityError(
            f"output shapes differ: reference {list(ref.shape)} vs converted {list(got.shape)}; "
            "check the layout of the converted model's output"
        )
    if ref.ndim == 0 or ref.shape[0] == 0:
        raise ParityError("no samples to compare; pass at least one input")
    if ref.ndim == 1:
        ref, got = ref[None], got[None]
    n = ref.shape[0]
    r = ref.reshape(n, -1)
    g = got.reshape(n, -1)
    diff = np.abs(r - g)
    max_abs = float(diff.max()) if np.isfinite(diff).all() else math.inf
    scale = float(np.abs(r).max())
    if scale > 0:
        rel = max_abs / scale
    else:
        rel = 0.0 if max_abs == 0 else math.inf
    nr = np.linalg.norm(r, axis=1)
    ng = np.linalg.norm(g, axis=1)
    dots = (r * g).sum(axis=1)
    both_zero = (nr == 0) & (ng == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(both_zero, 1.0, dots / (nr * ng))
    cos = np.nan_to_num(cos, nan=0.0)
    decided = top1_decided = None
    if ref.ndim == 2:
        same = r.argmax(axis=1) == g.argmax(axis=1)
        top1 = float(same.mean())
        if step > 0 and r.shape[1] > 1:
            top2 = np.sort(r, axis=1)[:, -2:]
            sure = (top2[:, 1] - top2[:, 0]) >= step
            decided = int(sure.sum())
            top1_decided = float(same[sure].mean()) if decided else None
    else:  # dense outputs (N, C, ...): argmax over the class axis at every position
        top1 = float((ref.argmax(axis=1) == got.argmax(axis=1)).mean())
    return Parity(max_abs=max_abs, rel=float(rel), cosine=float(cos.mean()), top1_agreement=top1, n=int(n),
                  step=float(step) if decided is not None else 0.0, decided=decided, top1_decided=top1_decided)


def top1_text(p: dict) -> str:
    """A parity dict's top-1 agreement for tables: "86 %", or "86 % (98 % on 44 decidable)"."""
    if p.get("top1_judged") is False:  # an argmax over box coordinates or anchors means nothing
        return f"– (not judged: {p.get('outputs', 'several')} outputs)"
    text = f"{100 * p['top1_agreement']:.0f} %"
    if p.get("top1_decided") is not None:
        text += f" ({100 * p['top1_decided']:.0f} % on {p['decided']} decidable)"
    return text


def check(ref: np.ndarray, got: np.ndarray, *, max_rel: float, what: str = "converted model") -> Parity:
    """compare() and raise ParityError when rel exceeds ``max_rel``."""
    p = compare(ref, got)
    if not p.ok(max_rel):
        raise ParityError(
            f"{what} differs from torch: rel error {p.rel:.3g} > {max_rel:g} (max abs {p.max_abs:.3g}, "
            f"cosine {p.cosine:.5f}); check the conversion or raise the tolerance"
        )
    return p


# --------------------------------------------------------------------------------------- thresholds
#: Which numeric regime each artifact format is judged in (Core ML cannot be run on Linux: None).
FORMAT_PRECISION = {f.name: f.parity for f in FORMATS}


@dataclass(frozen=True)
class ParityThresholds:
    """Pass/fail limits for an artifact's outputs against torch on held-out inputs.

    Float artifacts should compute what torch computes up to summation order, so fp32 is judged by
    the max abs difference relative to the largest |logit| (typically 1e-7..1e-5; 1e-3 leaves room for
    deep nets). fp16 and int8 change the numbers on purpose, so they are judged by what users see:
    top-1 agreement with torch and cosine similarity of the logit vectors. The int8 defaults follow
    what per-channel post-training quantisation reaches on CNNs (research/deps.md: cosine 0.9999 on
    MobileNetV2); a model below them has a calibration or conversion problem worth looking at.
    """

    fp32_rel: float = 1e-3
    fp16_cosine: float = 0.999
    fp16_top1: float = 0.95
    int8_cosine: float = 0.98
    int8_top1: float = 0.90

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise AutoPruneEdgeError(f"parity threshold {k}={v!r} must be a non-negative number")
            if k != "fp32_rel" and v > 1:
                raise AutoPruneEdgeError(f"parity threshold {k}={v!r} must be between 0 and 1")

    @classmethod
    def coerce(cls, value: "ParityThresholds | dict | None") -> "ParityThresholds":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        bad = set(value) - set(cls.__dataclass_fields__)
        if bad:
            raise AutoPruneEdgeError(f"unknown parity threshold(s) {sorted(bad)}; known: "
                                     f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**{k: float(v) for k, v in value.items() if v is not None})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def failures(self, fmt: str, p: Parity) -> list[str]:
        """Why ``p`` fails for format ``fmt`` (empty: it passes). One short phrase per broken limit."""
        prec = FORMAT_PRECISION.get(fmt, "fp32")
        out: list[str] = []
        if prec == "fp32":
            if not p.ok(self.fp32_rel):
                out.append(f"max abs diff {p.max_abs:.3g} is {p.rel:.3g} of the output scale > {self.fp32_rel:g}")
        elif prec in ("fp16", "int8"):
            top1, cos = (self.fp16_top1, self.fp16_cosine) if prec == "fp16" else (self.int8_top1, self.int8_cosine)
            agree, on = p.judged_top1()
            if p.top1_judged and not agree >= top1:
                out.append(f"top-1 agreement {agree:.1%} < {top1:.0%} on {on}")
            if not p.cosine >= cos:
                out.append(f"logit cosine {p.cosine:.4f} < {cos:g}")
        return out
