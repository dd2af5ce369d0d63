"""How steady is the landing's probe? The same pruned MobileNetV2 read repeatedly against the dense one.

    OMP_NUM_THREADS=1 python benchmarks/probe_spread.py     # ≈3 min; writes benchmarks/results/probe_spread.{md,json}

profiles.host.LatencyProbe reads a candidate as the ratio of its p10 to the dense reference's p10 over
alternating blocks of 20 invokes, times the reference's typical latency. This opens a fresh probe per reading
(as each build does), reads Torch-Pruning's 100M-MAC MobileNetV2 (benchmarks/host_speed.tp_model) ``--repeats``
times at each block count, interleaved, and reports the spread of the ratio (what the landing compares
candidates by) and of the reading in ms (which also moves with the VM's speed between probes).

``--visits R`` (R > 0) also times, right after each probe, both files the way benchmarks/host_speed.py does:
R shuffled rounds of fresh-interpreter visits (per visit the p10 of 40 invokes after 5), the probe's files
kept. Where the probe and those visits disagree, the table splits the miss into the ratio's part and the
anchor's (the probe's typical reference latency against the reference's median visit).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import md_table, write_results  # noqa: E402


def _against_visits(probe, pruned, reading: float, blocks: int, rounds: int, rng: random.Random) -> dict:
    """The probe's files (re-made in a fresh dir) timed as host_speed times them, right after the probe."""
    from autoprune_edge.profiles.host import timing_tflite
    from benchmarks.host_speed import visit

    with tempfile.TemporaryDirectory(prefix="ape_probe_visits_") as d:
        files = {k: timing_tflite(m, (1, 3, 224, 224), Path(d) / k) for k, m in
                 (("ref", probe.reference), ("cand", pruned))}
        visits: dict[str, list[float]] = {k: [] for k in files}
        for _ in range(rounds):
            order = list(files)
            rng.shuffle(order)
            for k in order:
                visits[k].append(visit(files[k]))
    ref, cand = (statistics.median(visits[k]) for k in ("ref", "cand"))

    def pct(a: float, b: float) -> float:
        return round(100 * (a / b - 1), 2)

    return {"blocks": blocks, "reading_ms": round(reading, 3), "visits_ms": round(cand, 3),
            "reading_%": pct(reading, cand), "ratio_%": pct(reading / probe.anchor_ms, cand / ref),
            "anchor_ms": round(probe.anchor_ms, 3), "ref_visit_ms": round(ref, 3),
            "anchor_%": pct(probe.anchor_ms, ref)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", default="24,48")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--visits", type=int, default=0, help="rounds of host_speed-style visits after each probe")
    ap.add_argument("--results", default="probe_spread")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import torch
    import torchvision

    from autoprune_edge.data import load_data
    from autoprune_edge.profiles.host import LatencyProbe
    from benchmarks.host_speed import _calibrated, tp_model

    torch.manual_seed(0)
    data = load_data("synthetic", input_size=224)
    dense = _calibrated(torchvision.models.mobilenet_v2().eval(), data)
    pruned = _calibrated(tp_model(100e6)[0], data)
    counts = [int(b) for b in args.blocks.split(",")]
    ratio: dict[int, list[float]] = {b: [] for b in counts}
    ms: dict[int, list[float]] = {b: [] for b in counts}
    against: list[dict] = []  # one row per probe when --visits
    rng = random.Random(0)
    for rep in range(args.repeats):
        for b in counts:
            with LatencyProbe(dense, (1, 3, 224, 224), blocks=b) as probe:
                reading = probe(pruned)
                ratio[b].append(reading / probe.anchor_ms)
                ms[b].append(reading)
                if args.visits:
                    against.append(_against_visits(probe, pruned, reading, b, args.visits, rng))
            print(f"repeat {rep + 1}: {b} blocks -> {reading:.3f} ms (ratio {ratio[b][-1]:.4f})", flush=True)

    def spread(v: list[float]) -> float:
        return 100 * statistics.stdev(v) / statistics.mean(v)

    rows = [{"blocks": b, "probes": len(ratio[b]), "ratio_mean": round(statistics.mean(ratio[b]), 4),
             "ratio_sd_%": round(spread(ratio[b]), 2), "ratio_range": f"{min(ratio[b]):.4f}-{max(ratio[b]):.4f}",
             "reading_ms_mean": round(statistics.mean(ms[b]), 3), "reading_sd_%": round(spread(ms[b]), 2)}
            for b in counts]
    md = ["# The landing probe's spread: one pruned MobileNetV2 read repeatedly", "",
          __doc__.split("\n\n", 2)[2].strip(), "", md_table(rows, list(rows[0])), ""]
    if against:
        md += ["Each probe against host_speed-style visits of the same two files right after it "
               "(% = probe over visits):",
               "", md_table(against, list(against[0])), "",
               f"Median over probes: reading {statistics.median(a['reading_%'] for a in against):+.2f} %, ratio "
               f"{statistics.median(a['ratio_%'] for a in against):+.2f} %, anchor "
               f"{statistics.median(a['anchor_%'] for a in against):+.2f} %.", ""]
    write_results(args.results, {"rows": rows, "ratios": ratio, "readings_ms": ms, "against_visits": against},
                  "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
