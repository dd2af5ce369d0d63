"""int8 and fp32 latency predicted by `host` against LiteRT here, for the shipped and the self-calibrated profile.

    python benchmarks/host_int8.py            # ≈5 min; writes benchmarks/results/host_int8.{md,json}

`host` calibrates itself on a CPU its shipped profile was not measured on (profiles/host_calibration.py),
now in int8 as well as fp32. This checks the int8 side on converted models that no fit used: torchvision
MobileNetV2 (1.0 and 0.5 wide), ResNet-18, MnasNet 0.5 and MobileNetV2 pruned by Torch-Pruning to 100M
MACs, each converted by ``ape.convert`` to fp32 and int8 (uint8 I/O, the default) and timed with LiteRT,
1 thread, in shuffled rounds (per visit the p10 of 30 invokes; the fastest visit is the reading). The
calibrated profile is fitted in the same run by the suite alone (``calibrate``, fp32 + int8).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["AUTOPRUNE_EDGE_HOST_PROFILE"] = "shipped"  # the shipped row is host.toml as committed

from benchmarks.common import md_table, write_results  # noqa: E402
from benchmarks.host_speed import _calibrated, _convert, tp_model, visit  # noqa: E402


def models():
    import torchvision

    return {"mbv2_w1.0": lambda: torchvision.models.mobilenet_v2(),
            "mbv2_w0.5": lambda: torchvision.models.mobilenet_v2(width_mult=0.5),
            "resnet18": lambda: torchvision.models.resnet18(),
            "mnasnet0_5": lambda: torchvision.models.mnasnet0_5(),
            "mbv2_tp100M": lambda: tp_model()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--results", default="host_int8")
    args = ap.parse_args()
    import torch

    from autoprune_edge.data import load_data
    from autoprune_edge.profiles.calibrate import calibrate
    from autoprune_edge.profiles.profile import profile
    from autoprune_edge.targets import load_target

    t0 = time.time()
    data = load_data("synthetic", input_size=224)
    work = Path(tempfile.mkdtemp(prefix="host_int8_"))
    files, nets = {}, {}
    for name, make in models().items():
        torch.manual_seed(0)
        nets[name] = _calibrated(make().eval(), data)
        files[name] = _convert(nets[name], data, work / name)
        print(f"[convert] {name} ({time.time() - t0:.0f} s)", flush=True)
    shipped = load_target("host")
    cal = calibrate(shipped, None, out=work / "host.toml").target
    print(f"[calibrate] done ({time.time() - t0:.0f} s)", flush=True)

    keys = [(n, p) for n in files for p in ("fp32", "int8")]
    best = {k: float("inf") for k in keys}
    rng = random.Random(0)
    for r in range(args.rounds):
        rng.shuffle(keys)
        for n, p in keys:
            best[(n, p)] = min(best[(n, p)], visit(files[n][p], runs=30, warmup=3))
        print(f"[measure] round {r + 1}/{args.rounds} ({time.time() - t0:.0f} s)", flush=True)

    rows = []
    for n in files:
        for p in ("fp32", "int8"):
            pred = {k: profile(nets[n], (1, 3, 224, 224), target=t, precision=p).latency_ms
                    for k, t in (("shipped", shipped), ("calibrated", cal))}
            meas = best[(n, p)]
            rows.append({"model": n, "precision": p, "measured_ms": round(meas, 3),
                         "shipped_ms": round(pred["shipped"], 3), "shipped_err_pct": round(100 * (pred["shipped"] / meas - 1), 1),
                         "calibrated_ms": round(pred["calibrated"], 3),
                         "calibrated_err_pct": round(100 * (pred["calibrated"] / meas - 1), 1)})

    def mape(p, col):
        sel = [abs(r[col]) for r in rows if r["precision"] == p]
        return round(sum(sel) / len(sel), 1)

    summary = {p: {"shipped_mape": mape(p, "shipped_err_pct"), "calibrated_mape": mape(p, "calibrated_err_pct")}
               for p in ("fp32", "int8")}
    lines = ["# `host` predictions against LiteRT here, fp32 and int8", "",
             f"LiteRT 1 thread, {args.rounds} shuffled rounds, fastest visit's p10 of 30 invokes. `calibrated` = the "
             "suite alone (fp32 + int8) fitted in this run, as `host` does by itself on a CPU its shipped profile "
             "was not measured on. No model here was in any fit.", "",
             *(f"- {p}: MAPE shipped **{s['shipped_mape']} %**, calibrated here **{s['calibrated_mape']} %**"
               for p, s in summary.items()), "", md_table(rows, list(rows[0]))]
    write_results(args.results, {"summary": summary, "rows": rows, "rounds": args.rounds,
                                 "seconds": round(time.time() - t0), "date": _dt.datetime.now().isoformat(timespec="seconds")},
                  "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
