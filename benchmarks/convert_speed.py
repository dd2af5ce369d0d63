"""Conversion speed: a compacted MobileNetV2 (~150 M MACs) to ONNX + TFLite fp32 + full-integer int8.

    python benchmarks/convert_speed.py                 # 3 repeats, writes benchmarks/results/convert_speed.*
    python benchmarks/convert_speed.py --repeats 1 --no-pipeline

The model is torchvision's MobileNetV2 (random weights, 224x224) pruned with
``autoprune_edge.prune(method="l1", finetune_epochs=0)`` to 150 MFLOPs (= MACs) with the raspberrypi4
profile's channel rounding, BatchNorm statistics re-estimated on 64 synthetic images (see below). One repeat = ``export_onnx`` + ``onnx_to_tflite(precisions=("fp32","int8"))``
with 200 calibration images of the synthetic data set (prepared once, outside the timer): exactly the
conversion work `build` does for the default formats. The median of the repeats is the headline number;
the goal is <= 90 s on the 2-core build host.

With the pipeline step (default on), one more run times ``autoprune_edge.convert`` as `build` calls it:
the same conversion plus parity of every artifact on 64 held-out images, TFLite metadata, MAC counting
and the Edge TPU check (host latency measurement off), to show what verification adds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import md_table, write_results  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", default="150MFLOPs")
    ap.add_argument("--calib-samples", type=int, default=200)
    ap.add_argument("--no-pipeline", action="store_true", help="skip the timed autoprune_edge.convert run")
    args = ap.parse_args()

    import torch
    import torchvision

    import autoprune_edge as ape
    from autoprune_edge.converters.onnx_export import export_onnx
    from autoprune_edge.converters.tflite import onnx_to_tflite
    from autoprune_edge.converters.tflite_graph import count_tflite_macs
    from autoprune_edge.data import calibration_batch, heldout_batch, load_data
    from autoprune_edge.train import recalibrate_bn

    payload_load = os.getloadavg()
    torch.manual_seed(0)
    t = time.perf_counter()
    res = ape.prune(torchvision.models.mobilenet_v2(), None, args.budget, target="raspberrypi4", method="l1",
                    input_shape=(1, 3, 224, 224), finetune_epochs=0, evaluate_accuracy=False)
    prune_s = time.perf_counter() - t
    bundle = load_data("synthetic", input_size=224, channels=3)
    # Random-init torchvision MobileNetV2 has unit BN statistics and logits around 1e-10, which no int8
    # output scale can represent (parity correctly fails). Re-estimating the BN statistics on a few images
    # gives realistic activation ranges; it changes no weight and takes seconds.
    recalibrate_bn(res.model, bundle.train, batches=2, batch_size=32)
    model = res.model.eval()
    calib = calibration_batch(bundle, args.calib_samples).numpy()
    example = torch.zeros(1, 3, 224, 224)
    print(f"pruned to {res.macs_after / 1e6:.1f} M MACs in {prune_s:.1f} s; converting {args.repeats}x", flush=True)

    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="ape-convert-speed-") as d:
            t0 = time.perf_counter()
            onnx_path = export_onnx(model, example, Path(d) / "model.onnx")
            t1 = time.perf_counter()
            files = onnx_to_tflite(onnx_path, Path(d), precisions=("fp32", "int8"), calib=calib)
            t2 = time.perf_counter()
            macs = count_tflite_macs(files["int8"]).macs
            runs.append({"repeat": i + 1, "export_s": round(t1 - t0, 2), "onnx2tf_fp32_int8_s": round(t2 - t1, 2),
                         "total_s": round(t2 - t0, 2), "int8_macs": macs,
                         "fp32_mb": round(files["fp32"].stat().st_size / 1e6, 2),
                         "int8_mb": round(files["int8"].stat().st_size / 1e6, 2)})
            print(runs[-1], flush=True)
    median = statistics.median(r["total_s"] for r in runs)

    pipeline = None
    if not args.no_pipeline:
        held = heldout_batch(bundle, 64)
        with tempfile.TemporaryDirectory(prefix="ape-convert-speed-") as d:
            t0 = time.perf_counter()
            arts = ape.convert(model, example, Path(d), formats="tflite-fp32,tflite-int8",
                               calib=torch.from_numpy(calib), heldout=held, measure=False,
                               labels=bundle.class_names, mean=list(bundle.mean), std=list(bundle.std))
            pipeline = {"total_s": round(time.perf_counter() - t0, 2),
                        "artifacts": {a.format: {"ok": a.ok, "failures": a.failures, **(a.parity or {}),
                                                 "divergence": (a.divergence or {}).get("summary")} for a in arts}}
        print("pipeline convert:", pipeline, flush=True)

    payload = {"model": "torchvision mobilenet_v2 (random weights, BN statistics from 64 synthetic images) "
                        "1x3x224x224, l1-pruned", "budget": args.budget,
               "macs_before": res.macs_before, "macs_after": res.macs_after, "calibration_samples": args.calib_samples,
               "repeats": runs, "median_total_s": median, "goal_s": 90, "meets_goal": median <= 90,
               "pipeline_convert": pipeline}
    md = [f"Compacted MobileNetV2: {res.macs_before / 1e6:.1f} M -> {res.macs_after / 1e6:.1f} M MACs "
          f"({args.budget}, l1, raspberrypi4 rounding). One repeat = ONNX export + onnx2tf (fp32) + full-integer "
          f"int8 calibrated on {args.calib_samples} synthetic images.", "",
          md_table(runs, ["repeat", "export_s", "onnx2tf_fp32_int8_s", "total_s", "fp32_mb", "int8_mb"]), "",
          f"**Median: {median:.1f} s** (goal <= 90 s on 2 cores: {'met' if median <= 90 else 'NOT met'}).", ""]
    if pipeline:
        md += [f"`autoprune_edge.convert` as `build` calls it (the same conversion + parity on 64 held-out images, "
               f"metadata, MAC count, Edge TPU check; no host timing): {pipeline['total_s']:.1f} s, 1 run.", ""]
        rows = [{"artifact": k, "ok": v["ok"], "rel": v.get("rel"), "cosine": v.get("cosine"),
                 "top1": v.get("top1_agreement"), "why": "; ".join(v["failures"]) or "–"}
                for k, v in pipeline["artifacts"].items()]
        md += [md_table(rows, ["artifact", "ok", "rel", "cosine", "top1", "why"]), ""]
        for k, v in pipeline["artifacts"].items():
            if v.get("divergence"):
                md += [f"{k} divergence: {v['divergence']}", ""]
        if not all(v["ok"] for v in pipeline["artifacts"].values()):
            md += ["Random weights give near-tied logits, so int8 top-1 agreement is a coin toss here and `build` "
                   "would refuse to ship this int8 file; the timing is what this benchmark measures. On the trained "
                   "network of `build --target raspberrypi4 --budget 100MFLOPs` int8 passes (cosine 0.9992, "
                   "top-1 100 % on 64 held-out images).", ""]
    md += [f"Load average (1 min) at start / end: {payload_load[0]:.1f} / {os.getloadavg()[0]:.1f} on "
           f"{os.cpu_count()} cores shared with other jobs.", ""]
    jp, mp = write_results("convert_speed", payload, "\n".join(md))
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
