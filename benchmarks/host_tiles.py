"""Which output-channel tile does XNNPACK fp32 pad to on this host? A channel sweep of synthetic conv stacks.

    python benchmarks/host_tiles.py          # ≈20 s; writes benchmarks/results/host_tiles.{md,json}

Each network is one convolution from a fixed number of input channels to C output channels (written
directly as .tflite, see autoprune_edge/profiles/microbench.py), timed with LiteRT at 1 thread: per
visit the p10 of 40 invokes, the minimum over 3 visits (the undisturbed machine, as the host
microbenchmark measures it). For each tile hypothesis the latency is modelled as ``padded MACs / k``
(output channels rounded up to the tile, ≤ tile channels counted as one tile) with ``k`` fitted by least
squares on log latency; the table gives the MAPE of each hypothesis over the sweep. The `host` profile's ``compute.fp32.out_tile`` takes the winner.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoprune_edge.profiles.host import measure_tflite  # noqa: E402
from autoprune_edge.profiles.microbench import Layer, Net, _Builder  # noqa: E402
from benchmarks.common import md_table, write_results  # noqa: E402

CHANNELS = [8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128]
SHAPES = [("conv3x3", 3, 28, 64), ("conv1x1", 1, 28, 128)]  # name, kernel, output side, input channels
TILES = [8, 16, 32]


def padded(c: int, tile: int) -> int:
    return max(tile, -(-c // tile) * tile)


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ape_tiles_") as d:
        for name, k, hw, cin in SHAPES:
            for c in CHANNELS:
                net = Net(f"{name}_c{c}", hw, hw, cin, (Layer("conv", c, k),))
                path = Path(d) / f"{net.name}.tflite"
                path.write_bytes(_Builder("fp32").build(net))
                ms = min(measure_tflite(path, threads=1, runs=40, warmup=5).p10_ms for _ in range(3))
                macs = hw * hw * cin * c * k * k
                rows.append({"shape": name, "hw": hw, "in_channels": cin, "channels": c, "layer_us": round(ms * 1e3, 2),
                             "gmacs": round(macs / ms / 1e6, 1)})
                print(f"{name} hw{hw} C={c}: {ms * 1e3:.1f} us/layer ({macs / ms / 1e6:.1f} GMAC/s)", flush=True)
    fits = []
    for name, k, hw, cin in SHAPES:
        sub = [r for r in rows if r["shape"] == name]
        for tile in TILES:
            work = [hw * hw * padded(r["channels"], tile) * cin * k * k for r in sub]
            lat = [r["layer_us"] for r in sub]
            log_k = sum(math.log(w / y) for w, y in zip(work, lat)) / len(sub)
            pred = [w / math.exp(log_k) for w in work]
            mape = 100 * sum(abs(p - y) / y for p, y in zip(pred, lat)) / len(sub)
            fits.append({"shape": name, "tile": tile, "mape_pct": round(mape, 1),
                         "gmacs_padded": round(math.exp(log_k) / 1e3, 1)})
    md = ["# XNNPACK fp32 output-channel tile on this host", "",
          "One conv to C output channels per network, LiteRT 1 thread, min over 3 visits of the p10 of 40 invokes. "
          "Model: latency = MACs with output channels padded to the tile / k (k fitted per shape).", "",
          md_table(fits, ["shape", "tile", "mape_pct", "gmacs_padded"]), "",
          md_table(rows, ["shape", "hw", "in_channels", "channels", "layer_us", "gmacs"])]
    write_results("host_tiles", {"rows": rows, "fits": fits}, "\n".join(md))
    best = {name: min((f for f in fits if f["shape"] == name), key=lambda f: f["mape_pct"]) for name, *_ in SHAPES}
    print("best tile:", {n: (b["tile"], b["mape_pct"]) for n, b in best.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
