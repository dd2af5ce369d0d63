"""The commands that run on (or for) the device itself: measure, calibrate. numpy + LiteRT only, no torch."""
from __future__ import annotations

import argparse

from rich.table import Table

import time

from ..errors import ConfigError as UsageError
from ..profiles.calibrate import calibrate
from ..profiles.suite import measure_suite
from ..profiles.measure import measure, write_document
from .output import console, emit


def _threads(text: str, allow_list: bool) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        out = ()
    if not out or any(n < 1 for n in out) or (len(out) > 1 and not allow_list):
        what = "a comma list of thread counts such as 1,4" if allow_list else "one thread count such as 4"
        raise UsageError(f"--threads {text!r}: expected {what}")
    return out


def _precisions(text: str) -> tuple[str, ...]:
    out = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [p for p in out if p not in ("fp32", "int8")]
    if not out or bad:
        raise UsageError(f"--precision {text!r}: the suite has fp32 and int8 networks; use fp32, int8 or fp32,int8")
    return out


def _suite(args: argparse.Namespace) -> dict:
    if args.models:
        raise UsageError("measure --suite times its own networks; drop the .tflite arguments or drop --suite")
    if args.rounds < 1 or args.runs < 1:
        raise UsageError("--rounds and --runs must be >= 1")
    threads, precisions = _threads(args.threads, True), _precisions(args.precision)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if not args.json and time.perf_counter() - last[0] > 2:
            last[0] = time.perf_counter()
            console().print(f"  suite: {done}/{total} timed ({time.perf_counter() - t0:.0f} s)")

    doc = measure_suite(threads=threads, precisions=precisions, runs=args.runs, rounds=args.rounds, progress=progress)
    doc["suite"]["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        write_document(doc, args.out)
    return doc


def cmd_measure(args: argparse.Namespace) -> int:
    if args.suite:
        doc = _suite(args)
    elif not args.models:
        raise UsageError("measure needs .tflite files, or --suite to time the calibration suite")
    else:
        doc = measure(args.models, threads=_threads(args.threads, False)[0], runs=args.runs, warmup=args.warmup,
                      delegate=args.delegate, out=args.out, append=args.append)
    summary = {"out": args.out, "device": doc["device"],
               "measurements": [{k: m[k] for k in ("model", "precision", "threads", "median_ms", "p10_ms", "p90_ms", "macs")}
                                for m in doc["measurements"]]}

    def human() -> None:
        c = console()
        d = doc["device"]
        c.print(f"{d.get('cpu', '?')} ({d.get('machine', '?')}, {d.get('cpu_count', '?')} CPUs), {d.get('runtime', '?')}")
        if doc.get("suite"):
            s = doc["suite"]
            c.print(f"calibration suite: {len(doc['measurements'])} timings of {s['networks']} networks at "
                    f"{', '.join(map(str, s['threads']))} thread(s) in {s.get('seconds', '?')} s")
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
        if res.held_out_error_pct is not None:
            c.print(f"error on measurements held out of the fit (the profile's latency_error_pct): "
                    f"{res.held_out_error_pct:.1f}%")
        elif res.cross_validated:
            c.print("[yellow]too few measurements to check the fit on held-out ones: its predictions show ±?[/]")
        for s in res.skipped:
            c.print(f"[yellow]skipped:[/] {s}")
        c.print(f"[bold green]wrote[/] {res.out} (use it with --target {res.out})")

    emit(args, res.summary(), human)
    return 0
