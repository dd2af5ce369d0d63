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

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..budget import Budget, format_budget_value, parse_budgets
from ..errors import AutoPruneEdgeError
from ..targets import Target, resolve_target

# budget kind -> Profile attribute
_METRIC = {"macs": "macs", "params": "params", "latency_ms": "latency_ms", "memory_bytes": "peak_memory_bytes",
           "size_bytes": "model_bytes"}


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
        attr = _METRIC.get(b.kind)
        if attr is None:
            raise AutoPruneEdgeError(f"budget {b.text!r} ({b.kind}) cannot be checked by compare")
        value = float(getattr(prof, attr))
        out.append(BudgetCheck(b.text, b.kind, float(b.value), value, value <= b.value))
    return out


def _budgets(budgets) -> list[Budget]:
    if not budgets:
        return []
    if isinstance(budgets, str):
        budgets = [budgets]
    if all(isinstance(b, Budget) for b in budgets):
        return list(budgets)
    return parse_budgets(list(budgets))


def compare(model, input_shape, targets: list[Target | str], precision: str | None = None,
            budgets=None, threads: int | None = None) -> list[CompareRow]:
    """Profile ``model`` on every target; one :class:`CompareRow` each (in the order given)."""
    from .profile import profile

    if not targets:
        raise AutoPruneEdgeError("no target to compare; pass e.g. ['raspberrypi4', 'host']")
    checks = _budgets(budgets)
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
            note=note,
        ))
    return rows


def plot_compare(rows: list[CompareRow], path: str | Path, title: str | None = None) -> Path:
    """A bar chart PNG of latency, peak RAM and model size per target (log scale; red = does not fit or
    misses a budget). Uses matplotlib's Agg backend (no display needed)."""
    import matplotlib

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
