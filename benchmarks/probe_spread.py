"""How steady is the landing's probe? The same pruned MobileNetV2 read repeatedly against the dense one.

    OMP_NUM_THREADS=1 python benchmarks/probe_spread.py     # ≈3 min; writes benchmarks/results/probe_spread.{md,json}

profiles.host.LatencyProbe reads a candidate as the ratio of its p10 to the dense reference's p10 over
alternating blocks of 20 invokes, times the reference's typical latency. This opens a fresh probe per reading
(as each build does), reads Torch-Pruning's 100M-MAC MobileNetV2 (benchmarks/host_speed.tp_model) ``--repeats``
times at each block count, interleaved, and reports the spread of the ratio (what the landing compares
candidates by) and of the reading in ms (which also moves with the VM's speed between probes).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import md_table, write_results  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", default="24,48")
    ap.add_argument("--repeats", type=int, default=5)
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
    for rep in range(args.repeats):
        for b in counts:
            with LatencyProbe(dense, (1, 3, 224, 224), blocks=b) as probe:
                reading = probe(pruned)
                ratio[b].append(reading / probe.anchor_ms)
                ms[b].append(reading)
            print(f"repeat {rep + 1}: {b} blocks -> {reading:.3f} ms (ratio {ratio[b][-1]:.4f})", flush=True)

    def spread(v: list[float]) -> float:
        return 100 * statistics.stdev(v) / statistics.mean(v)

    rows = [{"blocks": b, "probes": len(ratio[b]), "ratio_mean": round(statistics.mean(ratio[b]), 4),
             "ratio_sd_%": round(spread(ratio[b]), 2), "ratio_range": f"{min(ratio[b]):.4f}-{max(ratio[b]):.4f}",
             "reading_ms_mean": round(statistics.mean(ms[b]), 3), "reading_sd_%": round(spread(ms[b]), 2)}
            for b in counts]
    md = ["# The landing probe's spread: one pruned MobileNetV2 read repeatedly", "",
          __doc__.split("\n\n", 2)[2].strip(), "", md_table(rows, list(rows[0])), ""]
    write_results("probe_spread", {"rows": rows, "ratios": ratio, "readings_ms": ms}, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
