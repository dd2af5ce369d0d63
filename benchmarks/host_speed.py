"""Speed you can feel: the default `host` build of MobileNetV2 against the dense model, measured here.

    python benchmarks/host_speed.py            # ≈10 min; writes benchmarks/results/host_speed.{md,json}

Issue 16's deliverable 6, measured the way research/host-speed.md measures: LiteRT, 1 thread, the files
visited in interleaved, shuffled rounds (per visit the p10 of 40 invokes; the fastest visit and the median
visit are reported), so that a slow phase of this shared VM hits every file alike.

* dense: torchvision MobileNetV2 1.0 / 224 (random init, BatchNorm re-estimated on synthetic images so
  that no activation collapses to denormals), converted by ``ape.convert`` to fp32 and int8 (uint8 I/O,
  the default);
* ``build --target host --budget 100MFLOPs`` with every other option at its default (synthetic data);
* ``build --target host --budget Xms`` (X = ``--latency-ms``): where its fp32 file's measured latency lands;
  (``--target FILE`` builds both against a profile this CPU was calibrated into instead of the shipped host)
* the peer, measured beside them: Torch-Pruning's MagnitudePruner (L1, uniform per layer, round_to=8, the
  classifier left alone) with its ratio bisected to the same 100M MACs, as research/host-speed.md built it
  on the AMD host where the goal numbers were measured.

Goals (issue 16): fp32 ≥ 2.84x and int8 ≥ 2.06x over dense (Torch-Pruning magnitude at round_to=8, research/
host-speed.md), and the latency build within 5 % below X. Builds run with ``allow_parity_failure`` so
that a file failing int8 parity is still timed (the card says which).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import md_table, write_results  # noqa: E402


def dense_files(out: Path, int8_io: str = "uint8") -> dict[str, Path]:
    import torch
    import torchvision

    from autoprune_edge.data import load_data

    torch.manual_seed(0)
    data = load_data("synthetic", input_size=224)
    return _convert(_calibrated(torchvision.models.mobilenet_v2().eval(), data), data, out, int8_io)


def _calibrated(model, data):
    """BatchNorm statistics re-estimated on synthetic images (random init collapses activations to denormals)."""
    import torch

    from autoprune_edge.data import calibration_batch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(calibration_batch(data, 16, seed=1))
    return model.eval()


def _convert(model, data, out: Path, int8_io: str = "uint8") -> dict[str, Path]:
    import torch

    from autoprune_edge.converters.convert import convert
    from autoprune_edge.data import calibration_batch, heldout_batch

    out.mkdir(parents=True, exist_ok=True)
    arts = convert(model, torch.zeros(1, 3, 224, 224), out, formats="tflite-fp32,tflite-int8",
                   calib=calibration_batch(data, 100, seed=0), heldout=heldout_batch(data, 16), measure=False,
                   mean=list(data.mean), std=list(data.std), labels=list(data.class_names), int8_io=int8_io,
                   time_pixel_step=True)  # as a build for this host does (converters/pixel_path.py)
    return {a.format.replace("tflite-", ""): Path(out) / Path(a.path).name for a in arts if a.format.startswith("tflite-")}


def tp_files(out: Path, macs: float = 100e6, int8_io: str = "uint8") -> tuple[dict[str, Path], dict]:
    """Torch-Pruning's model (tp_model) converted to fp32 and int8, and its ratio and MACs."""
    from autoprune_edge.data import load_data

    model, info = tp_model(macs)
    data = load_data("synthetic", input_size=224)
    return _convert(_calibrated(model, data), data, out, int8_io), info


def tp_model(macs: float = 100e6):
    """Torch-Pruning MagnitudePruner (p=1, uniform, round_to=8), ratio bisected to ``macs``; (model, info)."""
    import torch
    import torch_pruning as tp
    import torchvision

    from autoprune_edge.profiles.counting import count_macs

    x = torch.zeros(1, 3, 224, 224)

    def pruned(ratio: float):
        torch.manual_seed(0)
        m = torchvision.models.mobilenet_v2().eval()
        tp.pruner.MagnitudePruner(m, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                                  ignored_layers=[m.classifier[1]], round_to=8).step()
        return m, count_macs(m, x).macs

    lo, hi = 0.0, 0.9
    for _ in range(14):  # the smallest ratio whose model has at most `macs` (hi), to 1e-4
        mid = (lo + hi) / 2
        _, n = pruned(mid)
        lo, hi = (mid, hi) if n > macs else (lo, mid)
    model, n = pruned(hi)
    return model, {"ratio": round(hi, 4), "macs": n}


def landing_steps(card: dict) -> list[str]:
    """The build's own landing notes (each candidate's predicted and probed latency)."""
    return [n for n in card["notes"] if n.startswith("latency budget landed")]


def build_files(out: Path, budget: str, target: str = "host", speed_weight: float | None = None,
                int8_io: str = "uint8", speed_exchange: bool = True) -> tuple[dict[str, Path], dict]:
    import autoprune_edge as ape
    from autoprune_edge.autoprune import AutoPruneConfig
    from autoprune_edge.errors import PartialBuildError

    # the CLI's defaults (1 gate epoch, lr 0.01, seed 0), with only the speed weight changed
    cfg = None if speed_weight is None else AutoPruneConfig(epochs=1.0, lr=0.01, seed=0, speed_weight=speed_weight)
    try:
        rep = ape.build(model="mobilenet_v2", data="synthetic", target=target, budget=budget, out_dir=out,
                        name="build", allow_parity_failure=True, html_report=False, autoprune=cfg, int8_io=int8_io,
                        speed_exchange=speed_exchange)
    except PartialBuildError as e:  # not raised with allow_parity_failure, kept for safety
        rep = e.report
    card = rep.card
    files = {p: rep.out_dir / f"model_{p}.tflite" for p in ("fp32", "int8") if (rep.out_dir / f"model_{p}.tflite").is_file()}
    d = card.to_dict()
    return files, {"macs": d["macs"], "parity_ok": {a.format: a.parity_ok for a in card.artifacts},
                   "landing_steps": landing_steps(d),
                   "exchange": [n for n in d["notes"] if "exchange" in n]}


def _extra_label(key: str) -> str:
    if key.endswith("_noexch"):
        return "`--no-speed-exchange` (the same build, channels selected by gate values alone)"
    return f"`--speed-weight {key.split('_sw')[1]}` (the same build, gates pushed partly by predicted latency)"


def visit(path: Path, runs: int = 40, warmup: int = 5) -> float:
    from autoprune_edge.profiles.host import measure_tflite

    return measure_tflite(path, threads=1, runs=runs, warmup=warmup).p10_ms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--latency-ms", type=float, default=2.5)
    ap.add_argument("--target", default="host",
                    help="the builds' target: host, or a profile this CPU was calibrated into (calibrate --out)")
    ap.add_argument("--results", default="host_speed", help="results file name (another CPU: another name)")
    ap.add_argument("--reuse", help="a work dir of an earlier run: time its files again, build nothing")
    ap.add_argument("--int8-io", default="uint8", choices=("uint8", "int8", "float32"),
                    help="every int8 file's I/O type (research/host-speed.md timed int8-I/O files)")
    ap.add_argument("--speed-weights", default="",
                    help="comma list: also build the 100M model at these --speed-weight values (files 100M_swW_*)")
    ap.add_argument("--no-exchange-row", action="store_true",
                    help="also build the 100M model with --no-speed-exchange (files 100M_noexch_*), side by side")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t0 = time.time()
    extra_info: dict[str, dict] = {}
    if args.reuse:
        work = Path(args.reuse)
        files = {f"dense_{p}": work / "dense" / f"model_{p}.tflite" for p in ("fp32", "int8")}
        files.update({f"100M_{p}": work / "macs" / "build" / f"model_{p}.tflite" for p in ("fp32", "int8")})
        files[f"{args.latency_ms}ms_fp32"] = work / "lat" / "build" / "model_fp32.tflite"
        files.update({f"tp100M_{p}": work / "tp" / f"model_{p}.tflite" for p in ("fp32", "int8")})
        cards = [json.loads((work / d / "build" / "model_card.json").read_text()) for d in ("macs", "lat")]
        macs_info, lat_info = ({"macs": c["macs"], "landing_steps": landing_steps(c)} for c in cards)
        tp_info = json.loads((work / "tp" / "tp_info.json").read_text())
    else:
        work = Path(tempfile.mkdtemp(prefix="ape_host_speed_"))
        print(f"[build] work dir {work}", flush=True)
        io = args.int8_io
        files = {f"dense_{p}": f for p, f in dense_files(work / "dense", io).items()}
        macs_files, macs_info = build_files(work / "macs", "100MFLOPs", args.target, int8_io=io)
        files.update({f"100M_{p}": f for p, f in macs_files.items()})
        lat_files, lat_info = build_files(work / "lat", f"{args.latency_ms}ms", args.target, int8_io=io)
        files.update({f"{args.latency_ms}ms_{p}": f for p, f in lat_files.items() if p == "fp32"})
        for w in [float(x) for x in args.speed_weights.split(",") if x.strip()]:
            sw_files, sw_info = build_files(work / f"sw{w:g}", "100MFLOPs", args.target, speed_weight=w, int8_io=io)
            files.update({f"100M_sw{w:g}_{p}": f for p, f in sw_files.items()})
            extra_info[f"100M_sw{w:g}"] = sw_info
        if args.no_exchange_row:
            ne_files, ne_info = build_files(work / "noexch", "100MFLOPs", args.target, int8_io=io, speed_exchange=False)
            files.update({f"100M_noexch_{p}": f for p, f in ne_files.items()})
            extra_info["100M_noexch"] = ne_info
        tp_f, tp_info = tp_files(work / "tp", int8_io=io)
        (work / "tp" / "tp_info.json").write_text(json.dumps(tp_info))
        files.update({f"tp100M_{p}": f for p, f in tp_f.items()})
    build_s = time.time() - t0
    print(f"[time] starting ({len(files)} files, builds took {build_s:.0f} s)", flush=True)
    visits: dict[str, list[float]] = {k: [] for k in files}
    rng = random.Random(0)
    for r in range(args.rounds):
        order = list(files)
        rng.shuffle(order)
        for k in order:
            visits[k].append(visit(files[k]))
        print(f"[time] round {r + 1}/{args.rounds}", flush=True)
    best = {k: min(v) for k, v in visits.items()}
    med = {k: statistics.median(v) for k, v in visits.items()}
    rows = []
    for k in files:
        p = k.rsplit("_", 1)[1]
        base = f"dense_{p}"
        rows.append({"file": k, "fastest_ms": round(best[k], 3), "median_visit_ms": round(med[k], 3),
                     "speedup_fastest": round(best[base] / best[k], 2), "speedup_median": round(med[base] / med[k], 2)})
    fp32 = best["dense_fp32"] / best["100M_fp32"]
    int8 = best["dense_int8"] / best["100M_int8"] if "100M_int8" in best and "dense_int8" in best else float("nan")
    tp_fp32, tp_int8 = (best[f"dense_{p}"] / best[f"tp100M_{p}"] for p in ("fp32", "int8"))
    lat_key = f"{args.latency_ms}ms_fp32"
    landed, landed_med = best.get(lat_key), med.get(lat_key)
    landing = (landed / args.latency_ms - 1) * 100 if landed else float("nan")
    landing_med = (landed_med / args.latency_ms - 1) * 100 if landed_med else float("nan")
    summary = {"fp32_speedup": round(fp32, 2), "int8_speedup": round(int8, 2), "fp32_goal": 2.84, "int8_goal": 2.06,
               "latency_budget_ms": args.latency_ms, "latency_build_measured_ms": landed and round(landed, 3),
               "landing_pct": round(landing, 1), "latency_build_median_visit_ms": landed_med and round(landed_med, 3),
               "landing_median_visit_pct": round(landing_med, 1), "landing_goal": "within 5 % below the budget",
               "tp_fp32_speedup": round(tp_fp32, 2), "tp_int8_speedup": round(tp_int8, 2), "tp": tp_info,
               "macs_build": macs_info, "latency_build": lat_info, "build_seconds": round(build_s),
               **({"speed_weight_builds": {k: {"fp32_speedup": round(best["dense_fp32"] / best[f"{k}_fp32"], 2),
                                               "int8_speedup": round(best["dense_int8"] / best[f"{k}_int8"], 2),
                                               **v} for k, v in extra_info.items()}} if extra_info else {}),
               "date": _dt.datetime.now().isoformat(timespec="seconds")}
    ok_speed = fp32 >= 2.84 and int8 >= 2.06
    ok_land, ok_land_med = (-5.0 <= x <= 0.0 for x in (landing, landing_med))
    md = ["# MobileNetV2 on this host: the default build against the dense model, measured interleaved", "",
          f"LiteRT 1 thread, {args.rounds} shuffled rounds, per visit the p10 of 40 invokes; fastest visit (and the "
          "median visit). Dense = torchvision MobileNetV2 1.0/224. Builds: "
          f"`build --model mobilenet_v2 --target {args.target} "
          f"--data synthetic` at `--budget 100MFLOPs` and at `--budget {args.latency_ms}ms`, other options default; "
          f"every int8 file has {args.int8_io} I/O" + (" (the default: raw camera pixels in)" if args.int8_io == "uint8"
                                                      else f" (`--int8-io {args.int8_io}`)") + ".", "",
          f"- 100M MACs build over dense: **fp32 {fp32:.2f}x, int8 {int8:.2f}x** (goal ≥ 2.84x / ≥ 2.06x: "
          f"**{'met' if ok_speed else 'missed'}**).",
          f"- Torch-Pruning MagnitudePruner (L1, uniform, round_to=8) at {tp_info['macs'] / 1e6:.1f}M MACs, measured "
          f"in the same rounds: **fp32 {tp_fp32:.2f}x, int8 {tp_int8:.2f}x** (the goal's numbers came from the AMD "
          "host of research/host-speed.md; this is the peer on this machine).",
          f"- `--budget {args.latency_ms}ms`: the fp32 file measures **{landed:.3f} ms ({landing:+.1f} %)** in its fastest "
          f"visit and **{landed_med:.3f} ms ({landing_med:+.1f} %)** in its median visit (goal: within 5 % below: "
          f"fastest **{'met' if ok_land else 'missed'}**, median **{'met' if ok_land_med else 'missed'}**). The build's "
          "own probe, before fine-tuning: " + ("; ".join(lat_info.get("landing_steps", []))
                                               or "none (the target was not recognised as this machine)") + ".",
          *(f"- 100M build with {_extra_label(k)}: **fp32 {v['fp32_speedup']:.2f}x, int8 {v['int8_speedup']:.2f}x** "
            f"({v['macs']['after'] / 1e6:.1f}M MACs)" for k, v in summary.get("speed_weight_builds", {}).items()),
          *(f"- The 100M build's selection: {n}" for n in macs_info.get("exchange", [])), "",
          md_table(rows, ["file", "fastest_ms", "median_visit_ms", "speedup_fastest", "speedup_median"]), ""]
    write_results(args.results, {"summary": summary, "rows": rows, "visits": visits}, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
