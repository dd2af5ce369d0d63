"""Device sanity: every shipped target profile reproduces its own reference latencies.

    python benchmarks/device_sanity.py            # writes benchmarks/results/device_sanity.{md,json}

For every ``[[references]]`` entry of every shipped profile, build the reference network
(``autoprune_edge.profiles.reference_models``), predict its latency with ``profile()`` at the
reference's precision, threads and input size, and compare with the published number (times
``scale`` when the number was measured on a related device). ``fit`` references were used to set the
profile's throughput; ``holdout`` references were not; both must be within ±20%. ``anchor`` references
(other runtimes, models that cannot be built here) are listed but not judged. Published models are
profiled as native TFLite graphs (``converter="native"``: no onnx2tf PADs); the host's own references
as onnx2tf graphs. No conversion, no device:
this checks the profiles' internal consistency and the cost model's shape, not the devices themselves.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOLERANCE = 0.20


def ref_converter(target, ref) -> str:
    """Published numbers are for graphs written natively for the runtime; this host's own measurements
    (research/host-speed.md) are of onnx2tf-converted graphs."""
    return "onnx2tf" if ref.source.startswith("measured on this host") else "native"


def run(targets: list[str] | None = None) -> dict:
    import torch

    from autoprune_edge.errors import AutoPruneEdgeError
    from autoprune_edge.profiles.profile import profile
    from autoprune_edge.profiles.reference_models import (
        build_reference_model,
        input_shape,
    )
    from autoprune_edge.targets import list_targets

    models: dict[str, object] = {}
    rows = []
    for t in list_targets():
        if targets and t.name not in targets:
            continue
        for ref in t.references:
            row = {"target": t.name, "model": ref.model, "precision": ref.precision, "threads": ref.threads,
                   "input_size": ref.input_size, "role": ref.role, "published_ms": ref.latency_ms,
                   "device": ref.device, "scale": ref.scale, "expected_ms": round(ref.expected_ms, 4),
                   "source": ref.source, "note": ref.note}
            try:
                if ref.model not in models:
                    models[ref.model] = build_reference_model(ref.model).eval()
                shape = input_shape(ref.model, ref.input_size)
                with torch.no_grad():
                    p = profile(models[ref.model], shape, t, precision=ref.precision, threads=ref.threads,
                                converter=ref_converter(t, ref))
            except AutoPruneEdgeError as e:
                row.update(predicted_ms=None, error_pct=None, ok=None, skipped=str(e))
                rows.append(row)
                continue
            err = (p.latency_ms - ref.expected_ms) / ref.expected_ms
            row.update(predicted_ms=round(p.latency_ms, 4), error_pct=round(100 * err, 1), macs=p.macs,
                       ok=(abs(err) <= TOLERANCE) if ref.role in ("fit", "holdout") else None,
                       warnings=p.warnings)
            rows.append(row)
    judged = [r for r in rows if r["ok"] is not None]
    summary = {
        "references": len(rows),
        "judged": len(judged),
        "within_20pct": sum(1 for r in judged if r["ok"]),
        "fit": {"n": sum(1 for r in judged if r["role"] == "fit"),
                "ok": sum(1 for r in judged if r["role"] == "fit" and r["ok"])},
        "holdout": {"n": sum(1 for r in judged if r["role"] == "holdout"),
                    "ok": sum(1 for r in judged if r["role"] == "holdout" and r["ok"])},
        "all_ok": all(r["ok"] for r in judged),
    }
    return {"summary": summary, "rows": rows}


def write(result: dict, command: str, seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "device_sanity.json").write_text(json.dumps({"command": command, "seconds": round(seconds, 1),
                                                            **result}, indent=1) + "\n")
    s = result["summary"]
    lines = [
        "# Device sanity: predicted vs published reference latencies",
        "",
        f"Command: `{command}` ({seconds:.0f} s, no conversion, no device).",
        "",
        f"{s['within_20pct']} of {s['judged']} judged references within ±20% "
        f"(fit {s['fit']['ok']}/{s['fit']['n']}, holdout {s['holdout']['ok']}/{s['holdout']['n']}); "
        f"{s['references'] - s['judged']} anchors listed for context only.",
        "",
        "`expected` = published × scale; scale ≠ 1 means the number was measured on the related device named "
        "in the `measured on` column and carried over by a stated factor (see each profile's sources). "
        "Sources marked [R] are from memory and unverified.",
        "",
        "| target | model | input | precision | threads | role | published (ms) | measured on | scale | expected (ms) | predicted (ms) | error | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        pred = f"{r['predicted_ms']:.3f}" if r.get("predicted_ms") is not None else "–"
        err = f"{r['error_pct']:+.1f}%" if r.get("error_pct") is not None else "–"
        ok = {True: "yes", False: "**NO**", None: "(anchor)" if r["role"] == "anchor" else "skipped"}[r["ok"]]
        lines.append(f"| {r['target']} | {r['model']} | {r['input_size']} | {r['precision']} | {r['threads']} | "
                     f"{r['role']} | {r['published_ms']:g} | {r['device'] or 'this device'} | {r['scale']:.3g} | "
                     f"{r['expected_ms']:.3f} | {pred} | {err} | {ok} |")
    lines += ["", "Sources:", ""]
    seen = set()
    for r in result["rows"]:
        key = (r["target"], r["source"])
        if key not in seen:
            seen.add(key)
            lines.append(f"- {r['target']}: {r['source']}")
    (RESULTS / "device_sanity.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", help="comma list (default: every shipped profile)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args.targets.split(",") if args.targets else None)
    dt = time.perf_counter() - t0
    for r in res["rows"]:
        e = f"{r['error_pct']:+6.1f}%" if r.get("error_pct") is not None else "   n/a"
        p = f"{r['predicted_ms']:9.3f}" if r.get("predicted_ms") is not None else "      n/a"
        print(f"{r['target']:18} {r['model']:22} {r['precision']:5} {r['threads']}T {r['role']:8} "
              f"expected {r['expected_ms']:9.3f}  predicted {p}  {e}  {r.get('skipped', '')}")
    print(json.dumps(res["summary"]))
    if not args.no_write:
        write(res, "python benchmarks/device_sanity.py" + (f" --targets {args.targets}" if args.targets else ""), dt)
    return 0 if res["summary"]["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
