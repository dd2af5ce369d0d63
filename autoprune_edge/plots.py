"""The report's figures, drawn from the model card alone and returned as PNG bytes.

Uses matplotlib's object API (``Figure`` + Agg canvas), never pyplot: no global state, no GUI backend,
safe to call from any thread or a process that already picked another backend.
"""
from __future__ import annotations

import io
import math
from typing import Any

from .modelcard import ModelCard
from .profiles.compare import TargetPrediction

_BEFORE, _AFTER, _BUDGET, _ACCENT = "#c7cdd6", "#2f6db5", "#d1495b", "#edae49"
_PREC_COLORS = {"fp32": _AFTER, "fp16": "#6aa84f", "int8": _ACCENT}
_NICE = {"train_acc": "train accuracy", "val_acc": "val accuracy", "open_fraction": "open gates (fraction)"}


def _figure(w: float, h: float, rows: int = 1, cols: int = 1, **kw):
    from matplotlib.figure import Figure  # matplotlib is slow to import: loaded when a figure is drawn

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ training
def _phases(card: ModelCard) -> list[tuple[str, list[dict[str, Any]]]]:
    tr = card.training
    out = []
    for label, log_all in (("dense training", tr.dense_pretrain_log), ("AutoPrune gates", tr.gate_log),
                           ("fine-tuning", tr.finetune_log)):
        log = [r for r in (log_all or []) if isinstance(r, dict)]
        if log:
            out.append((label, log))
    return out


def training_plot(card: ModelCard) -> bytes:
    """Accuracy, loss and MACs over the run, one x axis across phases (whatever keys the logs carry).

    Phases: dense training, AutoPrune gate training (``gate_log``), fine-tuning, each a list of records.
    Per-record keys understood: ``epoch`` (x within the phase; else ``step``/index), anything with
    ``acc`` or ``fraction`` (0..1), anything with ``loss``, and ``macs``. MACs run from the dense count,
    through whatever the records log, to the compacted count; without per-record MACs they are drawn
    as a step at the end of the pruning phase, which is all the card knows.
    """
    fig, ax = _figure(8.5, 5.2, 2, 1, sharex=True)
    a_acc, a_loss = ax[0][0], ax[1][0]
    a_mac = a_acc.twinx()
    x0 = 0.0
    boundaries = []
    mac_x: list[float] = []
    mac_y: list[float] = []
    series: dict[str, tuple[list[float], list[float]]] = {}
    for label, log in _phases(card):
        xs = []
        for i, r in enumerate(log):
            xv = r.get("epoch")
            xs.append(x0 + (float(xv) if isinstance(xv, (int, float)) else i + 1))
        start = x0
        for xv, r in zip(xs, log):
            for k, v in r.items():
                if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                        or k in ("epoch", "step")):
                    continue
                if k == "macs":
                    mac_x.append(xv)
                    mac_y.append(v / 1e6)
                elif "acc" in k or "loss" in k or "fraction" in k:
                    nm = f"{_NICE.get(k, k)} ({label})"
                    series.setdefault(nm, ([], []))
                    series[nm][0].append(xv)
                    series[nm][1].append(v)
        x0 = max(xs) if xs else x0
        boundaries.append((start, x0, label))
    for name, (xs, ys) in series.items():
        target = a_loss if "loss" in name else a_acc
        target.plot(xs, ys, marker="o", ms=3, label=name)
    for value, style, lab in ((card.accuracy.before, ":", "accuracy before pruning"),
                              (card.accuracy.after, "--", "accuracy after")):
        if isinstance(value, (int, float)):
            a_acc.axhline(value, ls=style, color="#555", lw=1, label=f"{lab} (val) {100 * value:.1f}%")
    macs = card.macs
    # the pruning phase ends where fine-tuning starts (or after the gates, or after dense training)
    prune_end = next((b[0] for b in boundaries if b[2] == "fine-tuning"), boundaries[-1][1] if boundaries else 0.0)
    end = max(x0, prune_end + 1)
    if macs.before and macs.after:
        before, after = macs.before / 1e6, macs.after / 1e6
        if mac_x:
            start = next((b[0] for b in boundaries if b[2] == "AutoPrune gates"), mac_x[0])
            xs_m = [0.0, start, *mac_x, prune_end, end]
            ys_m = [before, before, *mac_y, after, after]
            a_mac.plot(xs_m, ys_m, color=_ACCENT, lw=2, label="MACs (M): dense, during AutoPrune, compacted")
        else:
            a_mac.step([0, prune_end, end], [before, after, after], where="post", color=_ACCENT, lw=2,
                       label="MACs (M): before -> after pruning")
    elif mac_x:
        a_mac.plot(mac_x, mac_y, color=_ACCENT, lw=2, label="MACs (M)")
    for start, end, label in boundaries[1:]:
        for a in (a_acc, a_loss):
            a.axvline(start, color="#999", lw=0.8)
        a_acc.text(start, 0.04, f" {label}", transform=a_acc.get_xaxis_transform(), fontsize=8, color="#555")
    if boundaries:
        a_acc.text(boundaries[0][0], 0.04, f" {boundaries[0][2]}", transform=a_acc.get_xaxis_transform(), fontsize=8,
                   color="#555")
    a_acc.set_ylabel("accuracy / fraction")
    a_acc.set_ylim(0, 1.05)
    a_mac.set_ylabel("MACs (millions)", color=_ACCENT)
    a_mac.set_ylim(bottom=0)
    a_loss.set_ylabel("loss")
    a_loss.set_xlabel("epoch (cumulative over the phases)")
    h1, l1 = a_acc.get_legend_handles_labels()
    h2, l2 = a_mac.get_legend_handles_labels()
    if h1 or h2:
        a_acc.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    if a_loss.get_legend_handles_labels()[0]:
        a_loss.legend(fontsize=7)
    else:
        a_loss.text(0.5, 0.5, "no training log recorded", ha="center", va="center", transform=a_loss.transAxes)
    a_acc.set_title("Accuracy and MACs over the run", fontsize=11)
    return _png(fig)


# ------------------------------------------------------------------------------------------ channels
def channels_plot(card: ModelCard) -> bytes:
    """Output channels kept per layer: before (grey) and after (blue), in network order."""
    before, after = card.widths.before or {}, card.widths.after or {}
    names = [n for n in before if isinstance(before[n], (list, tuple)) and len(before[n]) >= 2]
    n = max(len(names), 1)
    fig, ax = _figure(min(max(6.0, 0.18 * n + 2.5), 18.0), 4.2)
    a = ax[0][0]
    xs = list(range(len(names)))
    b = [before[k][1] for k in names]
    af = [(after.get(k) or before[k])[1] for k in names]
    a.bar(xs, b, color=_BEFORE, width=0.85, label="before")
    a.bar(xs, af, color=_AFTER, width=0.55, label="after")
    a.set_xticks(xs)
    a.set_xticklabels(names, rotation=90, fontsize=6 if n > 30 else 8)
    a.set_ylabel("output channels")
    kept = sum(af) / sum(b) if sum(b) else 1.0
    a.set_title(f"Channels kept per layer ({100 * kept:.0f}% of all output channels)", fontsize=11)
    a.legend(fontsize=8)
    return _png(fig)


# ------------------------------------------------------------------------------------------- devices
def _grouped(ax, pred: dict[str, TargetPrediction], precs: list[str], key: str, scale: float) -> None:
    width = 0.8 / max(len(precs), 1)
    for j, prec in enumerate(precs):
        xs, ys = [], []
        for i, t in enumerate(pred):
            row = pred[t].rows.get(prec)
            if row:
                xs.append(i + (j - (len(precs) - 1) / 2) * width)
                ys.append(getattr(row, key) / scale)
        bars = ax.bar(xs, ys, width=width * 0.95, color=_PREC_COLORS.get(prec, "#888"), label=f"predicted {prec}")
        for b, t in zip(bars, [t for t in pred if pred[t].rows.get(prec)]):
            if pred[t].chosen:
                b.set_edgecolor("black")
                b.set_linewidth(1.5)


def devices_plot(card: ModelCard) -> bytes:
    """Predicted latency and peak memory per target and precision (+ measured host latency), vs budgets.

    The chosen target's bars have a black edge; budget lines apply to that target.
    """
    from matplotlib.patches import Patch

    pred = {k: v for k, v in card.predicted.items() if v.error is None}
    fig, ax = _figure(10.0, 4.2, 1, 2)
    a_lat, a_mem = ax[0]
    names = list(pred)
    precs = [p for p in ("fp32", "fp16", "int8") if any(p in v.rows for v in pred.values())]
    _grouped(a_lat, pred, precs, "latency_ms", 1.0)
    measured = [(a.format.replace("tflite-", ""), a.host_latency_ms["1"]) for a in card.artifacts
                if (a.host_latency_ms or {}).get("1")]
    base = len(names) + 0.2
    for k, (_fmt, ms) in enumerate(measured):
        a_lat.bar(base + k * 0.5, ms, width=0.4, color="#7f7f7f", hatch="//")
    ticks = list(range(len(names))) + [base + k * 0.5 for k in range(len(measured))]
    a_lat.set_xticks(ticks)
    a_lat.set_xticklabels(names + [f"here {f}" for f, _ in measured], rotation=30, ha="right", fontsize=8)
    lat_budget = card.budget_limit("latency_ms")
    if lat_budget:
        a_lat.axhline(lat_budget, color=_BUDGET, ls="--", label=f"budget {lat_budget:g} ms ({card.target})")
    vals = [r.latency_ms for v in pred.values() for r in v.rows.values()] + [m for _, m in measured]
    if vals and min(vals) > 0 and max(vals) / min(vals) > 30:
        a_lat.set_yscale("log")
    a_lat.set_ylabel("latency (ms, batch 1)")
    a_lat.set_title("Latency per device", fontsize=11)
    h, _l = a_lat.get_legend_handles_labels()
    if measured:
        h.append(Patch(facecolor="#7f7f7f", hatch="//", label="measured on the build host (LiteRT, 1 thread)"))
    a_lat.legend(handles=h, fontsize=7)

    _grouped(a_mem, pred, precs, "peak_memory_bytes", 2**20)
    mem_budget = card.budget_limit("memory_bytes")
    if mem_budget:
        a_mem.axhline(mem_budget / 2**20, color=_BUDGET, ls="--",
                      label=f"budget {mem_budget / 2**20:g} MiB ({card.target})")
    a_mem.set_xticks(range(len(names)))
    a_mem.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    a_mem.set_ylabel("peak runtime memory (MiB)")
    a_mem.set_title("Peak memory per device", fontsize=11)
    a_mem.legend(fontsize=7)
    if not names:
        for a in (a_lat, a_mem):
            a.text(0.5, 0.5, "no prediction available", ha="center", va="center", transform=a.transAxes)
    return _png(fig)


# --------------------------------------------------------------------------------------------- sizes
def sizes_plot(card: ModelCard) -> bytes:
    """File size per shipped format, with the size budget when there is one."""
    arts = card.artifacts
    fig, ax = _figure(6.5, 3.4)
    a = ax[0][0]
    names = [x.format for x in arts]
    sizes = [x.bytes / 1e6 for x in arts]
    colors = [_BUDGET if x.failures else _AFTER for x in arts]
    bars = a.bar(range(len(arts)), sizes, color=colors)
    for rect, s in zip(bars, sizes):
        a.text(rect.get_x() + rect.get_width() / 2, rect.get_height(), f"{s:.2f}", ha="center", va="bottom", fontsize=8)
    size_budget = card.budget_limit("size_bytes")
    if size_budget:
        a.axhline(size_budget / 1e6, color=_BUDGET, ls="--", label=f"budget {size_budget / 1e6:g} MB")
        a.legend(fontsize=7)
    a.set_xticks(range(len(arts)))
    a.set_xticklabels(names, fontsize=8)
    a.set_ylabel("size (MB)")
    a.set_title("Size per format (red: fails parity/verification)", fontsize=11)
    return _png(fig)


ALL_PLOTS = (
    ("training", "Accuracy and MACs over the run", training_plot),
    ("channels", "Channels kept per layer", channels_plot),
    ("devices", "Latency and memory per device against the budget", devices_plot),
    ("sizes", "Size per format", sizes_plot),
)
