"""`autoprune-edge` command line: a thin layer over the Python API.

User errors (AutoPruneEdgeError) print one line on stderr and exit 2; anything else is a bug and keeps
its traceback. `--json` prints one machine-readable summary on stdout and silences progress output.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from . import progress
from .errors import AutoPruneEdgeError

EXIT_USER_ERROR = 2


def _out(args: argparse.Namespace, summary: dict[str, Any], human) -> None:
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=1, default=str) + "\n")
    else:
        human()


def _console():
    from rich.console import Console

    return Console()


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise AutoPruneEdgeError(f"--input-shape {text!r} is not a list of integers; write e.g. 1,3,224,224") from None
    if len(shape) < 2 or any(v <= 0 for v in shape):
        raise AutoPruneEdgeError(f"--input-shape {text!r} must be positive integers like 1,3,224,224")
    return shape


def _load_model_ref(ref: str, *, weights: str | None = None, input_shape: tuple[int, ...] | None = None,
                    num_classes: int | None = None, allow_download: bool = False):
    """A pruned-model folder (plan.json) or a model name / pkg.module:factory -> (model, input shape, meta)."""
    import torch

    p = Path(ref)
    if (p.is_dir() and (p / "plan.json").exists()) or (p.name == "plan.json" and p.exists()):
        from .plan import load_pruned

        model, plan = load_pruned(p)
        return model, input_shape or tuple(plan["input_shape"]), plan.get("meta", {})
    if p.suffix == ".tflite":
        raise AutoPruneEdgeError(f"{ref} is a .tflite file; this command needs a torch model (a model name or a "
                                 "folder written by 'autoprune-edge prune')")
    if p.is_dir():
        raise AutoPruneEdgeError(f"{ref} is a folder without plan.json; pass a folder written by 'autoprune-edge "
                                 "prune' or a model name")
    from .models import build_model, default_input_size, load_weights

    model, _spec = build_model(ref, num_classes=num_classes)
    if weights:
        load_weights(model, weights, allow_download=allow_download, model_name=ref)
    if input_shape is None:
        ch = next((m.in_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)), 3)
        s = default_input_size(ref)
        input_shape = (1, ch, s, s)
    model.eval()
    return model, input_shape, {}


# ------------------------------------------------------------------------------------------ commands
def cmd_build(args: argparse.Namespace) -> int:
    from .pipeline import build

    rep = build(model=args.model, data=args.data, target=args.target, budget=args.budget, out_dir=args.out,
                weights=args.weights, name=args.name, method=args.method, formats=args.formats,
                epochs=1.0 if args.epochs is None else args.epochs, pretrain_epochs=args.pretrain_epochs,
                finetune_epochs=args.finetune_epochs, input_size=args.input_size,
                allow_download=args.allow_download, compare_targets=tuple(args.compare or ()), seed=args.seed,
                calib_samples=args.calib_samples, parity_samples=args.parity_samples, parity=_parity_args(args),
                allow_parity_failure=args.allow_parity_failure)

    def human() -> None:
        c = _console()
        card = rep.card
        c.print(f"[bold green]wrote[/] {rep.out_dir}")
        c.print(f"MACs {card['macs']['before'] / 1e6:.1f}M -> {card['macs']['after'] / 1e6:.1f}M, params "
                f"{card['params']['before'] / 1e6:.2f}M -> {card['params']['after'] / 1e6:.2f}M")
        for b in card["budget"]:
            c.print(f"budget {b['text']}: {'met' if b['met'] else 'NOT met'}")
        for a in card["artifacts"]:
            lat = ", ".join(f"{t} thread(s) {ms:.2f} ms" for t, ms in a["host_latency_ms"].items())
            status = "[red]FAIL[/]" if a.get("failures") else ("ok" if a["parity_ok"] else "spec ok")
            c.print(f"  {a['path']:<20} {a['bytes'] / 1e6:7.2f} MB  parity {status}" + (f"  host: {lat}" if lat else ""))
        for a in rep.failing:
            c.print(f"[yellow]warning:[/] {a['format']} fails parity ({'; '.join(a['failures'])}); written because of "
                    "--allow-parity-failure")
        c.print(f"report: {rep.out_dir / 'report.html'} (and report.md)")

    _out(args, rep.summary(), human)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from .budget import parse_budgets
    from .data import load_data
    from .models import build_model, default_input_size, load_weights
    from .outputs import check_writable, staged_dir
    from .pipeline import _first_conv_channels, _input_size_for, _num_outputs
    from .plan import save_pruned
    from .pruning import prune

    budgets = parse_budgets(args.budget)
    dest = check_writable(Path(args.out))
    if args.epochs and args.method != "autoprune":
        raise AutoPruneEdgeError(f"--epochs (gate-training epochs) applies to learned methods; method "
                                 f"{args.method!r} selects channels in one shot: pass --epochs 0")
    epochs = (1.0 if args.method == "autoprune" else 0.0) if args.epochs is None else args.epochs
    import torch

    torch.manual_seed(args.seed)  # random initialisation is part of a reproducible run
    model, spec = build_model(args.model)
    bundle = None
    if args.data:
        bundle = load_data(args.data, input_size=_input_size_for(args.model, args.data, args.input_size),
                           channels=_first_conv_channels(model) or 3, seed=args.seed)
        if bundle.num_classes != _num_outputs(model, bundle):
            model, spec = build_model(args.model, num_classes=bundle.num_classes)
        input_shape = (1, *bundle.input_shape)
    else:
        s = args.input_size or default_input_size(args.model)
        input_shape = (1, _first_conv_channels(model) or 3, s, s)
    if args.weights:
        load_weights(model, args.weights, allow_download=args.allow_download, model_name=spec.name)
    cfg = None
    if args.method == "autoprune":
        from .autoprune import AutoPruneConfig

        tuned = {k: v for k, v in (("lr_gates", args.lr_gates), ("cost_exponent", args.cost_exponent))
                 if v is not None}
        cfg = AutoPruneConfig(epochs=epochs, ste=args.ste, seed=args.seed, **tuned)
    from .distributed import world

    w = world()
    if not w.main:
        progress.set_quiet(True)
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else dest.parent / f".{dest.name}.checkpoint"
    res = prune(model, bundle, budgets, target=args.target, method=args.method, input_shape=input_shape,
                epochs=epochs, granularity=args.granularity, autoprune=cfg, distill=args.distill,
                distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature,
                finetune_epochs=args.finetune_epochs if bundle is not None else 0, seed=args.seed,
                evaluate_accuracy=bundle is not None, checkpoint_dir=ckpt_dir, resume=args.resume)
    if not w.main:
        return 0  # under torchrun, rank 0 writes the result
    meta: dict[str, Any] = {}
    if bundle is not None:
        meta = {"mean": list(bundle.mean), "std": list(bundle.std), "class_names": bundle.class_names,
                "layout": "NCHW", "data": bundle.description}
    with staged_dir(dest) as tmp:
        save_pruned(tmp, res.model, spec, res.history, input_shape, meta)
        (tmp / "summary.json").write_text(json.dumps(res.summary(), indent=1))
        if res.gate_log:
            (tmp / "gate_log.json").write_text(json.dumps(res.gate_log, indent=1))
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: the next run starts fresh

    def human() -> None:
        c = _console()
        s = res.summary()
        c.print(f"[bold green]wrote[/] {dest} (plan.json + model.safetensors)")
        c.print(f"MACs {s['macs_before'] / 1e6:.1f}M -> {s['macs_after'] / 1e6:.1f}M; params "
                f"{s['params_before'] / 1e6:.3f}M -> {s['params_after'] / 1e6:.3f}M; "
                f"{s['groups_pruned']}/{s['groups_total']} channel groups pruned")
        c.print(f"compacted = masked within {s['equivalence_max_abs']:.2e} (max abs)")
        if s["accuracy_after"] is not None:
            c.print(f"accuracy {100 * s['accuracy_before']:.1f}% -> {100 * s['accuracy_after']:.1f}%")
        for n in s["notes"]:
            c.print(f"[yellow]note:[/] {n}")

    _out(args, {"out_dir": str(dest), **res.summary()}, human)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from .data import calibration_batch, heldout_batch, load_data
    from .outputs import check_writable, staged_dir
    from .pipeline import convert, disjoint_heldout, parse_formats

    fmts = parse_formats(args.formats)
    dest = check_writable(Path(args.out))
    model, input_shape, _meta = _load_model_ref(args.model, weights=args.weights,
                                                input_shape=_parse_shape(args.input_shape))
    calib = held = None
    if args.calib_data:
        bundle = load_data(args.calib_data, input_size=input_shape[-1], channels=input_shape[1])
        if tuple(bundle.input_shape) != tuple(input_shape[1:]):
            raise AutoPruneEdgeError(f"--calib-data images are {bundle.input_shape} but the model takes "
                                     f"{tuple(input_shape[1:])}")
        calib = calibration_batch(bundle, args.calib_samples)
        held, _dropped = disjoint_heldout(heldout_batch(bundle, args.parity_samples), calib)
    elif "tflite-int8" in fmts:
        raise AutoPruneEdgeError("tflite-int8 needs representative data: pass --calib-data (e.g. "
                                 "cifar10:PATH or folder:PATH)")
    with staged_dir(dest) as tmp:
        labels = _meta.get("class_names")
        arts = convert(model, torch.zeros(input_shape), tmp, formats=fmts, calib=calib, heldout=held,
                       measure=not args.no_measure, thresholds=_parity_args(args), labels=labels,
                       mean=_meta.get("mean"), std=_meta.get("std"), name=Path(args.model).name)
        failing = [a for a in arts if a.failures]
        if failing and not args.allow_parity_failure:
            from .errors import ParityError

            raise ParityError("parity check failed: " + " | ".join(a.failure_line() for a in failing)
                              + " - nothing was written (pass --allow-parity-failure to keep the files)")
        if labels:
            (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
        (tmp / "artifacts.json").write_text(json.dumps([a.__dict__ for a in arts], indent=1))

    def human() -> None:
        c = _console()
        c.print(f"[bold green]wrote[/] {dest}")
        for a in arts:
            p = a.parity or {}
            c.print(f"  {a.path:<20} {a.bytes / 1e6:7.2f} MB  max|diff| {p.get('max_abs', float('nan')):.2e}"
                    f"  cos {p.get('cosine', float('nan')):.5f}"
                    + (f"  MACs {a.macs_counted / 1e6:.1f}M" if a.macs_counted else "")
                    + "".join(f"  {t}T {ms:.2f} ms" for t, ms in a.host_latency_ms.items()))

    _out(args, {"out_dir": str(dest), "artifacts": [a.__dict__ for a in arts]}, human)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    if args.model.endswith(".tflite"):
        return _profile_tflite(args)
    from .profiles.profile import profile

    model, input_shape, _ = _load_model_ref(args.model, weights=args.weights, input_shape=_parse_shape(args.input_shape))
    p = profile(model, input_shape, args.target, precision=args.precision, threads=args.threads)
    summary = {"model": args.model, "target": args.target, "input_shape": list(input_shape), "macs": p.macs,
               "params": p.params, "latency_ms": p.latency_ms, "peak_memory_bytes": p.peak_memory_bytes,
               "model_bytes": p.model_bytes, "precision": p.precision, "threads": p.threads,
               "layers": [getattr(r, "__dict__", r) for r in p.layers]}

    def human() -> None:
        from rich.table import Table

        t = Table(title=f"{args.model} on {args.target} ({p.precision}, {p.threads} thread(s)) — predicted")
        for col in ("MACs", "params", "latency", "peak RAM", "model file"):
            t.add_column(col, justify="right")
        t.add_row(f"{p.macs / 1e6:.1f} M", f"{p.params / 1e6:.3f} M", f"{p.latency_ms:.2f} ms",
                  f"{p.peak_memory_bytes / 1024:.0f} KiB", f"{p.model_bytes / 1e6:.2f} MB")
        _console().print(t)

    _out(args, summary, human)
    return 0


def _profile_tflite(args: argparse.Namespace) -> int:
    from .converters.tflite_graph import count_tflite_macs
    from .profiles.host import measure_all_threads

    path = Path(args.model)
    if not path.is_file():
        raise AutoPruneEdgeError(f"{path}: no such .tflite file")
    counts = count_tflite_macs(path)
    ms = measure_all_threads(path, runs=args.runs)
    summary = {"model": str(path), "macs": counts.macs, "bytes": path.stat().st_size,
               "host_latency_ms": {str(t): m.median_ms for t, m in ms.items()}}

    def human() -> None:
        c = _console()
        c.print(f"{path}: {counts.macs / 1e6:.2f} M MACs (counted from the TFLite graph), "
                f"{path.stat().st_size / 1e6:.2f} MB")
        for t, m in ms.items():
            c.print(f"  this host, LiteRT, {t} thread(s): median {m.median_ms:.3f} ms (p10 {m.p10_ms:.3f}, "
                    f"p90 {m.p90_ms:.3f})")

    _out(args, summary, human)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .profiles.compare import compare, plot_compare

    model, input_shape, _ = _load_model_ref(args.model, weights=args.weights, input_shape=_parse_shape(args.input_shape))
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not names:
        raise AutoPruneEdgeError("--targets is empty; pass e.g. --targets raspberrypi4,host")
    rows = compare(model, input_shape, names, precision=args.precision, budgets=args.budget)
    plot = str(plot_compare(rows, args.plot, title=f"{args.model}: predicted cost per target")) if args.plot else None

    def human() -> None:
        from rich.table import Table

        t = Table(title=f"{args.model} {tuple(input_shape)} — predicted per target")
        for col in ("target", "precision", "latency", "peak RAM", "model file", "fits device", "within budget"):
            t.add_column(col, justify="right")
        for r in rows:
            budget = "–" if r.within_budget is None else ("[green]yes[/]" if r.within_budget else "[red]no[/]")
            t.add_row(r.target, r.precision + (f" ({r.threads}T)" if r.threads > 1 else ""),
                      f"{r.latency_ms:.2f} ms", f"{r.peak_memory_bytes / 1024:.0f} KiB",
                      f"{r.model_bytes / 1e6:.2f} MB", "[green]yes[/]" if r.fits_device else "[red]no[/]", budget)
        c = _console()
        c.print(t)
        for r in rows:
            for msg in [r.note] + [ch.describe() for ch in r.budget_checks if not ch.ok] + r.warnings:
                if msg:
                    c.print(f"[yellow]{r.target}:[/] {msg}")
        if plot:
            c.print(f"[bold green]wrote[/] {plot}")

    _out(args, {"model": args.model, "input_shape": list(input_shape), "targets": [r.to_dict() for r in rows],
                "plot": plot}, human)
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from .profiles.measure import measure

    doc = measure(args.models, threads=args.threads, runs=args.runs, warmup=args.warmup, delegate=args.delegate,
                  out=args.out, append=args.append)
    summary = {"out": args.out, "device": doc["device"],
               "measurements": [{k: m[k] for k in ("model", "precision", "threads", "median_ms", "p10_ms", "p90_ms", "macs")}
                                for m in doc["measurements"]]}

    def human() -> None:
        c = _console()
        d = doc["device"]
        c.print(f"{d.get('cpu', '?')} ({d.get('machine', '?')}, {d.get('cpu_count', '?')} CPUs), {d.get('runtime', '?')}")
        for m in summary["measurements"]:
            c.print(f"  {m['model']}: {m['precision']}, {m['threads']} thread(s): median {m['median_ms']:.3f} ms "
                    f"(p10 {m['p10_ms']:.3f}, p90 {m['p90_ms']:.3f}), {m['macs'] / 1e6:.1f} M MACs")
        if args.out:
            c.print(f"[bold green]wrote[/] {args.out} (feed it to 'autoprune-edge calibrate --target T --measurements {args.out}')")

    _out(args, summary, human)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .profiles.calibrate import calibrate

    res = calibrate(args.target, args.measurements, out=args.out, statistic=args.statistic, quick=args.quick)

    def human() -> None:
        from rich.table import Table

        c = _console()
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

    _out(args, res.summary(), human)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from .targets import list_targets, load_target

    if args.action == "show":
        if not args.name:
            raise AutoPruneEdgeError("targets show needs a target name, e.g. 'autoprune-edge targets show raspberrypi4'")
        t = load_target(args.name)
        data = t.to_dict() if hasattr(t, "to_dict") else t.__dict__
        _out(args, data, lambda: _console().print_json(json.dumps(data, default=str)))
        return 0
    if args.action not in (None, "list"):
        raise AutoPruneEdgeError(f"unknown targets action {args.action!r}; use 'targets' or 'targets show NAME'")
    ts = list_targets()
    rows = [{"name": t.name, "description": getattr(t, "description", "")} for t in ts]

    def human() -> None:
        from rich.table import Table

        tab = Table(title="target profiles")
        tab.add_column("name")
        tab.add_column("description")
        for r in rows:
            tab.add_row(r["name"], r["description"])
        _console().print(tab)

    _out(args, {"targets": rows}, human)
    return 0


# ------------------------------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), like every other user error here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _glue_negative_values(argv: list[str]) -> list[str]:
    """`--budget -5ms` would read -5ms as an option; pass it on as a value so the budget parser rejects it."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--budget":
            nxt = next(it, None)
            if nxt is not None and nxt.startswith("-") and not nxt.startswith("--"):
                out.append(f"--budget={nxt}")
                continue
            out.append(a)
            if nxt is not None:
                out.append(nxt)
            continue
        out.append(a)
    return out


def _parity_flags(p: argparse.ArgumentParser) -> None:
    """Parity limits shared by build and convert (defaults: autoprune_edge.converters.parity.ParityThresholds)."""
    from .converters.parity import ParityThresholds

    d = ParityThresholds()
    g = p.add_argument_group("parity against torch on held-out images")
    g.add_argument("--parity-samples", type=int, default=64, help="validation images to compare on (default 64)")
    g.add_argument("--parity-fp32-rel", type=float, help=f"max |diff| / max |logit| for onnx, tflite-fp32 "
                   f"(default {d.fp32_rel:g})")
    g.add_argument("--parity-fp16-top1", type=float, help=f"min top-1 agreement, tflite-fp16 (default {d.fp16_top1:g})")
    g.add_argument("--parity-fp16-cosine", type=float, help=f"min logit cosine, tflite-fp16 (default {d.fp16_cosine:g})")
    g.add_argument("--parity-int8-top1", type=float, help=f"min top-1 agreement, tflite-int8 (default {d.int8_top1:g})")
    g.add_argument("--parity-int8-cosine", type=float, help=f"min logit cosine, tflite-int8 (default {d.int8_cosine:g})")
    g.add_argument("--allow-parity-failure", action="store_true",
                   help="write the artifacts even when some fail parity (marked as failing); default: write "
                        "nothing and exit 2")


def _parity_args(args: argparse.Namespace) -> dict[str, float]:
    keys = ("fp32_rel", "fp16_top1", "fp16_cosine", "int8_top1", "int8_cosine")
    return {k: getattr(args, f"parity_{k}") for k in keys if getattr(args, f"parity_{k}", None) is not None}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout; no progress")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = _Parser(prog="autoprune-edge", description="Prune a PyTorch vision model to a device "
                                 "budget and ship it as ONNX/TFLite. FLOPs here means multiply-accumulates (MACs).")
    ap.add_argument("--version", action="version", version=f"autoprune-edge {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("build", help="prune, convert, verify and profile in one go (the main job)")
    b.add_argument("--target", required=True, help="target profile name or path to a .toml file")
    b.add_argument("--budget", required=True, action="append",
                   help="e.g. 100MFLOPs, 1.5Mparams, 25ms, 512KB; repeat or comma-separate for several")
    b.add_argument("--model", default="mobilenet_v2", help="torchvision name, zoo name or pkg.module:factory")
    b.add_argument("--weights", help="local state-dict file (.pth/.safetensors) or a torchvision weights name")
    b.add_argument("--data", default="synthetic", help="synthetic | mnist:ROOT | cifar10:ROOT | folder:ROOT")
    b.add_argument("--out", default="out", help="parent folder; results go to OUT/NAME (default: out)")
    b.add_argument("--name", help="result folder name (default: MODEL-TARGET)")
    b.add_argument("--method", default="autoprune", help="autoprune (learned gates, default), l1, random")
    b.add_argument("--formats", help="comma list of onnx,tflite-fp32,tflite-fp16,tflite-int8,coreml (default: the "
                   "target profile's default_formats; TFLite implies onnx)")
    b.add_argument("--calib-samples", type=int, default=200,
                   help="training images used to calibrate int8 (default 200)")
    _parity_flags(b)
    b.add_argument("--epochs", type=float, help="AutoPrune gate-training epochs (default 1)")
    b.add_argument("--pretrain-epochs", type=float, default=None,
                   help="dense training epochs before pruning (default: 1 without --weights, else 0)")
    b.add_argument("--finetune-epochs", type=float, default=1.0)
    b.add_argument("--input-size", type=int, help="square input side (default: the model's or the data's)")
    b.add_argument("--compare", action="append", help="extra target(s) to predict in the report")
    b.add_argument("--allow-download", action="store_true", help="allow downloading torchvision weights")
    b.add_argument("--seed", type=int, default=0)
    _common(b)
    b.set_defaults(func=cmd_build)

    p = sub.add_parser("prune", help="prune a model to a budget and save the compact model (plan + safetensors)")
    p.add_argument("--model", required=True)
    p.add_argument("--budget", required=True, action="append")
    p.add_argument("--method", default="autoprune", help="autoprune (learned gates, default), l1, random")
    p.add_argument("--data", help="data to fine-tune and evaluate on (omit for a structure-only run)")
    p.add_argument("--epochs", type=float, help="AutoPrune gate-training epochs (default 1; l1 takes none)")
    p.add_argument("--granularity", default="structured", choices=["structured", "unstructured"])
    p.add_argument("--ste", default=None, choices=["identity", "leaky", "sigmoid", "softplus"],
                   help="straight-through derivative for the gates (AutoPrune; default softplus for channel "
                        "gates, sigmoid for per-weight gates)")
    p.add_argument("--lr-gates", type=float, help="learning rate of the gates (default 0.005)")
    p.add_argument("--cost-exponent", type=float,
                   help="the budget penalty pushes each gate by (its cost)^this: 1 = importance per MAC, "
                        "0 = all gates alike (default 1)")
    p.add_argument("--distill", action="store_true", help="fine-tune with distillation from the dense model")
    p.add_argument("--distill-alpha", type=float, default=0.9, help="weight of the distillation term (0, 1]")
    p.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature of distillation")
    p.add_argument("--checkpoint-dir", help="where per-epoch checkpoints go (default: .OUT.checkpoint beside OUT)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--finetune-epochs", type=float, default=1.0)
    p.add_argument("--target", help="target profile (channel rounding, latency/memory budgets)")
    p.add_argument("--weights")
    p.add_argument("--input-size", type=int)
    p.add_argument("--allow-download", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _common(p)
    p.set_defaults(func=cmd_prune)

    c = sub.add_parser("convert", help="export a (pruned) model to ONNX/TFLite and check parity")
    c.add_argument("model", help="folder written by 'prune', or a model name")
    c.add_argument("--formats", default="onnx,tflite-fp32",
                   help="comma list of onnx,tflite-fp32,tflite-fp16,tflite-int8,coreml")
    c.add_argument("--calib-data", help="data for int8 calibration (train split) and parity (val split)")
    c.add_argument("--calib-samples", type=int, default=200)
    _parity_flags(c)
    c.add_argument("--weights")
    c.add_argument("--input-shape", help="e.g. 1,3,224,224 (default: from the plan or the model)")
    c.add_argument("--no-measure", action="store_true", help="skip host latency measurement")
    c.add_argument("--out", required=True)
    _common(c)
    c.set_defaults(func=cmd_convert)

    pr = sub.add_parser("profile", help="predicted cost on a target (torch model) or counted/measured (.tflite)")
    pr.add_argument("model", help="model name, folder written by 'prune', or a .tflite file")
    pr.add_argument("--target", default="host")
    pr.add_argument("--input-shape")
    pr.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    pr.add_argument("--threads", type=int)
    pr.add_argument("--weights")
    pr.add_argument("--runs", type=int, default=50, help="timed runs for .tflite measurement")
    _common(pr)
    pr.set_defaults(func=cmd_profile)

    cp = sub.add_parser("compare", help="predicted latency/memory/size of one model on several targets")
    cp.add_argument("model")
    cp.add_argument("--targets", required=True, help="comma list, e.g. raspberrypi4,host")
    cp.add_argument("--input-shape")
    cp.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                    help="default: each target's own default precision (int8 on the Edge TPU and MCUs)")
    cp.add_argument("--budget", action="append", help="e.g. 25ms, 512KB, 4MB; repeat or comma-separate")
    cp.add_argument("--plot", help="write a bar chart PNG here")
    cp.add_argument("--weights")
    _common(cp)
    cp.set_defaults(func=cmd_compare)

    me = sub.add_parser("measure", help="time .tflite files with LiteRT here and record what 'calibrate' needs "
                                        "(needs only numpy + ai-edge-litert: run it on the device)")
    me.add_argument("models", nargs="+", help=".tflite file(s)")
    me.add_argument("--threads", type=int, default=1)
    me.add_argument("--runs", type=int, default=50)
    me.add_argument("--warmup", type=int, default=10)
    me.add_argument("--delegate", help="external delegate library to load, e.g. libedgetpu.so.1")
    me.add_argument("--out", help="write the measurements JSON here")
    me.add_argument("--append", action="store_true", help="add to an existing --out file instead of replacing it")
    _common(me)
    me.set_defaults(func=cmd_measure)

    ca = sub.add_parser("calibrate", help="refit a target profile to measured latencies and write a new TOML")
    ca.add_argument("--target", required=True, help="profile to refit (name or .toml path)")
    ca.add_argument("--measurements", help="JSON written by 'measure' on the device (default for host: "
                                           "time a microbenchmark here)")
    ca.add_argument("--out", help="new profile TOML (default: TARGET-calibrated.toml)")
    ca.add_argument("--statistic", choices=["median_ms", "p10_ms", "min_ms", "mean_ms"],
                    help="which latency statistic to fit (default: median_ms; p10_ms for the host microbenchmark)")
    ca.add_argument("--quick", action="store_true", help="host microbenchmark: fewer networks")
    _common(ca)
    ca.set_defaults(func=cmd_calibrate)

    t = sub.add_parser("targets", help="list target profiles, or 'targets show NAME'")
    t.add_argument("action", nargs="?", choices=["list", "show"])
    t.add_argument("name", nargs="?")
    _common(t)
    t.set_defaults(func=cmd_targets)
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_glue_negative_values(argv))
    progress.set_quiet(bool(getattr(args, "json", False)))
    try:
        return int(args.func(args) or 0)
    except AutoPruneEdgeError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"autoprune-edge: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("autoprune-edge: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
