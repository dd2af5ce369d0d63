"""Compare one model across target profiles: predicted latency, peak RAM, file size, budget checks.

    >>> from autoprune_edge.profiles.compare import compare, plot_compare
    >>> rows = compare(model, (1, 3, 224, 224), ["raspberrypi4", "coral-edgetpu", "esp32-s3"],
    ...                budgets=["25ms", "512KB"])
    >>> plot_compare(rows, "compare.png")

``precision=None`` (the default) profiles each target at its own default precision (fp32 on CPU
targets, int8 on the Edge TPU and MCUs, fp16 on Core ML); a precision a target lacks falls back to that
default, and the row says so in ``note``.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..budget import METRIC, Budget, as_budgets, format_budget_value, measured, within
from ..errors import AutoPruneEdgeError
from ..targets import Target, list_targets, resolve_target
from .profile import profile

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BudgetCheck:
    budget: str  # as written, e.g. "25ms"
    kind: str
    limit: float
    value: float
    ok: bool

    def describe(self) -> str:
        rel = "<=" if self.ok else ">"
        return f"{format_budget_value(self.kind, self.value)} {rel} {self.budget}"


def format_latency(ms: float, error_pct: float | None) -> str:
    """``12.34 ms ±21 %``: a prediction with the target's held-out error; ``±?`` when it was never checked."""
    if error_pct is None:
        return f"{ms:.2f} ms ±?"
    return f"{ms:.2f} ms ±{error_pct:.0f} %"


@dataclass
class CompareRow:
    target: str
    description: str
    precision: str
    threads: int
    latency_ms: float
    peak_memory_bytes: int
    model_bytes: int
    macs: int
    params: int
    fits_device: bool  # RAM and storage (Profile.fits)
    within_budget: bool | None  # None when no budget was given
    budget_checks: list[BudgetCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    accelerator: str = ""
    note: str = ""
    latency_error_pct: float | None = None  # the target's held-out latency error (%); None = never checked

    @property
    def latency_text(self) -> str:
        return format_latency(self.latency_ms, self.latency_error_pct)

    @property
    def ok(self) -> bool:
        return self.fits_device and self.within_budget is not False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def check_budgets(prof, budgets: list[Budget]) -> list[BudgetCheck]:
    """Each budget against a Profile (``macs``, ``params``, ``latency``, ``memory`` = peak RAM, ``size``)."""
    out = []
    for b in budgets:
        if b.kind not in METRIC:
            raise AutoPruneEdgeError(f"budget {b.text!r} ({b.kind}) cannot be checked by compare")
        value = float(measured(b, prof))
        out.append(BudgetCheck(b.text, b.kind, float(b.value), value, within(b, value)))
    return out


def compare(model, input_shape, targets: list[Target | str], precision: str | None = None,
            budgets=None, threads: int | None = None) -> list[CompareRow]:
    """Profile ``model`` on every target; one :class:`CompareRow` each (in the order given)."""
    if not targets:
        raise AutoPruneEdgeError("no target to compare; pass e.g. ['raspberrypi4', 'host']")
    checks = as_budgets(budgets)
    rows = []
    for spec in targets:
        t = resolve_target(spec)
        p = precision
        note = ""
        if p is not None and p not in t.precisions:
            note = f"{t.name} has no {p}; profiled at {t.default_precision}"
            p = None
        prof = profile(model, input_shape, t, precision=p, threads=threads)
        bc = check_budgets(prof, checks)
        rows.append(CompareRow(
            target=t.name, description=t.description, precision=prof.precision, threads=prof.threads,
            latency_ms=prof.latency_ms, peak_memory_bytes=prof.peak_memory_bytes, model_bytes=prof.model_bytes,
            macs=prof.macs, params=prof.params, fits_device=prof.fits,
            within_budget=all(c.ok for c in bc) if bc else None, budget_checks=bc, warnings=list(prof.warnings),
            accelerator=(t.accelerator.name if t.accelerator and t.accelerator.runs(prof.precision) else ""),
            note=note, latency_error_pct=prof.latency_error_pct,
        ))
    return rows


def plot_compare(rows: list[CompareRow], path: str | Path, title: str | None = None) -> Path:
    """A bar chart PNG of latency, peak RAM and model size per target (log scale; red = does not fit or
    misses a budget). Uses matplotlib's Agg backend (no display needed)."""
    import matplotlib  # slow to import; only plotting needs it

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not rows:
        raise AutoPruneEdgeError("nothing to plot: no comparison rows")
    path = Path(path)
    names = [f"{r.target}\n{r.precision}" for r in rows]
    colors = ["tab:green" if r.ok else "tab:red" for r in rows]
    panels = [
        ("latency (ms)", [r.latency_ms for r in rows], "latency_ms"),
        ("peak RAM (MiB)", [r.peak_memory_bytes / 2**20 for r in rows], "memory_bytes"),
        ("model file (MiB)", [r.model_bytes / 2**20 for r in rows], "size_bytes"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(min(20.0, max(10.0, 1.9 * len(rows))), 4.8))
    for ax, (label, values, kind) in zip(axes, panels):
        bars = ax.bar(range(len(rows)), values, color=colors)
        ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        for b, v in zip(bars, values):
            ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
        limits = {c.limit for r in rows for c in r.budget_checks if c.kind == kind}
        for lim in limits:
            y = lim / 2**20 if kind != "latency_ms" else lim
            ax.axhline(y, color="black", linestyle="--", linewidth=1)
    fig.suptitle(title or "predicted cost per target (red: does not fit the device or misses a budget)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise AutoPruneEdgeError(f"cannot write plot {path}: {e.strerror}") from None
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------------------- predictions for a build
@dataclass
class CostRow:
    """Predicted cost of a model on one target at one precision."""

    latency_ms: float
    peak_memory_bytes: int
    model_bytes: int
    precision: str | None = None
    threads: int | None = None
    warnings: list[str] = field(default_factory=list)
    latency_error_pct: float | None = None

    @property
    def latency_text(self) -> str:
        return format_latency(self.latency_ms, self.latency_error_pct)

    @classmethod
    def of(cls, p: Any) -> CostRow:
        return cls(round(p.latency_ms, 3), int(p.peak_memory_bytes), int(p.model_bytes), p.precision, p.threads,
                   list(getattr(p, "warnings", None) or []), getattr(p, "latency_error_pct", None))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.warnings:
            del d["warnings"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostRow:
        return cls(d["latency_ms"], d["peak_memory_bytes"], d["model_bytes"], d.get("precision"), d.get("threads"),
                   list(d.get("warnings") or []), d.get("latency_error_pct"))


@dataclass
class TargetPrediction:
    """One target's row of a build: its default precision (what budgets are checked at) and every shipped
    precision it supports; or why the cost model could not handle it."""

    default: CostRow | None = None
    by_precision: dict[str, CostRow] = field(default_factory=dict)
    ram_bytes: int = 0
    description: str = ""
    chosen: bool = False
    error: str | None = None

    @property
    def rows(self) -> dict[str, CostRow]:
        """Rows by precision (the default row alone when no others were predicted)."""
        if self.by_precision or self.default is None:
            return self.by_precision
        return {self.default.precision or "fp32": self.default}

    @property
    def warnings(self) -> list[str]:
        """Every row's warnings, each once (the precisions of one target mostly share them)."""
        rows = [self.default, *self.by_precision.values()] if self.default is not None else []
        return list(dict.fromkeys(w for r in rows for w in r.warnings))

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None or self.default is None:
            return {"error": self.error}
        return {**self.default.to_dict(), "by_precision": {k: r.to_dict() for k, r in self.by_precision.items()},
                "ram_bytes": self.ram_bytes, "description": self.description, "chosen": self.chosen}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetPrediction:
        if "error" in d:
            return cls(error=d["error"])
        return cls(CostRow.from_dict(d), {k: CostRow.from_dict(r) for k, r in (d.get("by_precision") or {}).items()},
                   d.get("ram_bytes", 0), d.get("description", ""), bool(d.get("chosen", False)))


def predict_targets(model: nn.Module, input_shape: tuple[int, ...], targets: list[Target],
                    shipped: Collection[str]) -> dict[str, TargetPrediction]:
    """Predicted cost on the chosen target (first), the compared ones and every shipped target profile.

    Each row is at the target's default precision, with every ``shipped`` precision the target supports
    under ``by_precision``. A target the cost model cannot handle gets an ``error`` instead of numbers
    rather than failing the build.
    """
    every: dict[str, Target] = {}
    for t in [*targets, *list_targets()]:
        every.setdefault(t.name, t)
    out: dict[str, TargetPrediction] = {}
    for tname, t in every.items():
        try:
            first = CostRow.of(profile(model, input_shape, t))
            rows = {first.precision: first}
            for prec in (p for p in PRECISIONS if p in shipped and p in t.precisions):
                if prec not in rows:
                    rows[prec] = CostRow.of(profile(model, input_shape, t, precision=prec))
        except AutoPruneEdgeError as e:
            out[tname] = TargetPrediction(error=str(e).splitlines()[0])
            continue
        out[tname] = TargetPrediction(first, rows, int(getattr(t.memory, "ram_bytes", 0) or 0), t.description,
                                      tname == targets[0].name)
    return out
