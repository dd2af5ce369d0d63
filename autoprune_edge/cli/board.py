"""The commands that run on (or for) the device itself: measure, calibrate. numpy + LiteRT only, no torch."""
from __future__ import annotations

import argparse

from rich.table import Table

from ..profiles.calibrate import calibrate
from ..profiles.measure import measure
from .output import console, emit


def cmd_measure(args: argparse.Namespace) -> int:
    doc = measure(args.models, threads=args.threads, runs=args.runs, warmup=args.warmup, delegate=args.delegate,
                  out=args.out, append=args.append)
    summary = {"out": args.out, "device": doc["device"],
               "measurements": [{k: m[k] for k in ("model", "precision", "threads", "median_ms", "p10_ms", "p90_ms", "macs")}
                                for m in doc["measurements"]]}

    def human() -> None:
        c = console()
        d = doc["device"]
        c.print(f"{d.get('cpu', '?')} ({d.get('machine', '?')}, {d.get('cpu_count', '?')} CPUs), {d.get('runtime', '?')}")
        for m in summary["measurements"]:
            c.print(f"  {m['model']}: {m['precision']}, {m['threads']} thread(s): median {m['median_ms']:.3f} ms "
                    f"(p10 {m['p10_ms']:.3f}, p90 {m['p90_ms']:.3f}), {m['macs'] / 1e6:.1f} M MACs")
        if args.out:
            c.print(f"[bold green]wrote[/] {args.out} (feed it to 'autoprune-edge calibrate --target T --measurements {args.out}')")

    emit(args, summary, human)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    res = calibrate(args.target, args.measurements, out=args.out, statistic=args.statistic, quick=args.quick)

    def human() -> None:
        c = console()
        c.print(f"calibrated {res.target.name} from {res.n} measurements ({res.source})")
        t = Table(title="fitted numbers")
        for col in ("key", "before", "after"):
            t.add_column(col, justify="right")
        for k, (a, b) in res.fitted.items():
            t.add_row(k, f"{a:.4g}", f"{b:.4g}")
        c.print(t)
        c.print(f"error on the measurements: MAPE {res.mape('before'):.1f}% before, {res.mape('after'):.1f}% after")
        for s in res.skipped:
            c.print(f"[yellow]skipped:[/] {s}")
        c.print(f"[bold green]wrote[/] {res.out} (use it with --target {res.out})")

    emit(args, res.summary(), human)
    return 0
