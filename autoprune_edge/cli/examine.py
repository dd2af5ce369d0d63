"""The commands that look at a model without changing it: profile, compare, targets."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from ..budget import parse_budgets
from ..converters.tflite_graph import count_tflite_macs
from ..errors import AutoPruneEdgeError
from ..profiles.compare import compare, format_latency, plot_compare
from ..profiles.host import measure_all_threads
from ..profiles.profile import profile
from ..targets import list_targets, load_target
from .modelref import load_model_ref
from .output import console, emit, parse_shape


def cmd_profile(args: argparse.Namespace) -> int:
    if args.model.endswith(".tflite"):
        return _profile_tflite(args)
    model, input_shape, _ = load_model_ref(args.model, weights=args.weights, input_shape=parse_shape(args.input_shape))
    p = profile(model, input_shape, args.target, precision=args.precision, threads=args.threads)
    summary = {"model": args.model, "target": args.target, "input_shape": list(input_shape), "macs": p.macs,
               "params": p.params, "latency_ms": p.latency_ms, "latency_error_pct": p.latency_error_pct,
               "peak_memory_bytes": p.peak_memory_bytes,
               "model_bytes": p.model_bytes, "precision": p.precision, "threads": p.threads,
               "fits": p.fits, "warnings": list(p.warnings),
               "layers": [getattr(r, "__dict__", r) for r in p.layers]}

    def human() -> None:
        t = Table(title=f"{args.model} on {args.target} ({p.precision}, {p.threads} thread(s)) — predicted")
        for col in ("MACs", "params", "latency", "peak RAM", "model file"):
            t.add_column(col, justify="right")
        t.add_row(f"{p.macs / 1e6:.1f} M", f"{p.params / 1e6:.3f} M", format_latency(p.latency_ms, p.latency_error_pct),
                  f"{p.peak_memory_bytes / 1024:.0f} KiB", f"{p.model_bytes / 1e6:.2f} MB")
        c = console()
        c.print(t)
        for msg in p.warnings:
            c.print(f"[yellow]{args.target}:[/] {msg}")

    emit(args, summary, human)
    return 0


def _profile_tflite(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if not path.is_file():
        raise AutoPruneEdgeError(f"{path}: no such .tflite file")
    counts = count_tflite_macs(path)
    ms = measure_all_threads(path, runs=args.runs)
    summary = {"model": str(path), "macs": counts.macs, "bytes": path.stat().st_size,
               "host_latency_ms": {str(t): m.median_ms for t, m in ms.items()}}

    def human() -> None:
        c = console()
        c.print(f"{path}: {counts.macs / 1e6:.2f} M MACs (counted from the TFLite graph), "
                f"{path.stat().st_size / 1e6:.2f} MB")
        for t, m in ms.items():
            c.print(f"  this host, LiteRT, {t} thread(s): median {m.median_ms:.3f} ms (p10 {m.p10_ms:.3f}, "
                    f"p90 {m.p90_ms:.3f})")

    emit(args, summary, human)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    model, input_shape, _ = load_model_ref(args.model, weights=args.weights, input_shape=parse_shape(args.input_shape))
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not names:
        raise AutoPruneEdgeError("--targets is empty; pass e.g. --targets raspberrypi4,host")
    rows = compare(model, input_shape, names, precision=args.precision, budgets=parse_budgets(args.budget))
    plot = str(plot_compare(rows, args.plot, title=f"{args.model}: predicted cost per target")) if args.plot else None

    def human() -> None:
        t = Table(title=f"{args.model} {tuple(input_shape)} — predicted per target")
        for col in ("target", "precision", "latency", "peak RAM", "model file", "fits device", "within budget"):
            t.add_column(col, justify="right")
        for r in rows:
            budget = "–" if r.within_budget is None else ("[green]yes[/]" if r.within_budget else "[red]no[/]")
            t.add_row(r.target, r.precision + (f" ({r.threads}T)" if r.threads > 1 else ""),
                      r.latency_text, f"{r.peak_memory_bytes / 1024:.0f} KiB",
                      f"{r.model_bytes / 1e6:.2f} MB", "[green]yes[/]" if r.fits_device else "[red]no[/]", budget)
        c = console()
        c.print(t)
        for r in rows:
            for msg in [r.note] + [ch.describe() for ch in r.budget_checks if not ch.ok] + r.warnings:
                if msg:
                    c.print(f"[yellow]{r.target}:[/] {msg}")
        if plot:
            c.print(f"[bold green]wrote[/] {plot}")

    emit(args, {"model": args.model, "input_shape": list(input_shape), "targets": [r.to_dict() for r in rows],
                "plot": plot}, human)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise AutoPruneEdgeError("targets show needs a target name, e.g. 'autoprune-edge targets show raspberrypi4'")
        t = load_target(args.name)
        data = t.to_dict() if hasattr(t, "to_dict") else t.__dict__
        emit(args, data, lambda: console().print_json(json.dumps(data, default=str)))
        return 0
    if args.action not in (None, "list"):
        raise AutoPruneEdgeError(f"unknown targets action {args.action!r}; use 'targets' or 'targets show NAME'")
    ts = list_targets()
    rows = [{"name": t.name, "description": getattr(t, "description", "")} for t in ts]

    def human() -> None:
        tab = Table(title="target profiles")
        tab.add_column("name")
        tab.add_column("description")
        for r in rows:
            tab.add_row(r["name"], r["description"])
        console().print(tab)

    emit(args, {"targets": rows}, human)
    return 0
