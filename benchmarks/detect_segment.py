"""Detectors and segmenters through the loop-agnostic Pruner: graph -> gates -> budget -> compact ->
equality check -> ONNX / TFLite fp32 / int8 with parity on every output tensor.

For each model (torchvision's, as the raw tensor program an app runs: autoprune_edge/zoo/dense_heads.py)
at 2x fewer MACs: `ape.Pruner` runs inside a plain loop whose loss is the user's business (here: matching
the dense model's raw outputs on synthetic 320x320 images, a stand-in for a task loss), then compacts.
Reported: MACs before/after and the compaction check, which head layers were kept intact, parity of every
exported file (worst output), MACs counted from the .tflite against torch's count, predicted (host
profile) and measured (LiteRT, 1 thread) latency of the fp32 file.

Task accuracy (mAP@0.5 / mIoU of dense vs pruned on a learnable synthetic task) is benchmarks/task_accuracy.py.

    python benchmarks/detect_segment.py                       # the four torchvision models (~15 min, 2 cores)
    python benchmarks/detect_segment.py --models lraspp_mobilenet_v3_large --steps 5
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import autoprune_edge as ape  # noqa: E402
from autoprune_edge.data import load_data  # noqa: E402
from autoprune_edge.heads import flatten_outputs  # noqa: E402
from autoprune_edge.models import build_model  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402
from autoprune_edge.profiles.profile import profile  # noqa: E402
from autoprune_edge.targets import load_target  # noqa: E402
from benchmarks.common import Timer, md_table, write_results  # noqa: E402

MODELS = ("ssdlite320_mobilenet_v3_large,fasterrcnn_mobilenet_v3_large_320_fpn,lraspp_mobilenet_v3_large,"
          "deeplabv3_mobilenet_v3_large,yolov8n,yolo11n")  # the YOLOs need the optional 'yolo' extra


def run(name: str, args, images: torch.Tensor, mean: list[float], std: list[float]) -> dict:
    torch.manual_seed(0)
    model, _ = build_model(name)
    model.eval()
    dense = copy.deepcopy(model).eval()
    example = torch.zeros(1, 3, args.size, args.size)
    macs = count_macs(model, example).macs
    with Timer() as t_prune:
        pruner = ape.Pruner(model, example, f"{macs / args.reduction / 1e6:.6f}MFLOPs", total_steps=args.steps)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        model.train()
        for step in range(args.steps):
            x = images[(step * args.batch) % 64:][: args.batch]
            with torch.no_grad():
                want = flatten_outputs(dense(x))
            got = flatten_outputs(model(x))
            loss = sum(torch.nn.functional.mse_loss(g, w) for g, w in zip(got, want))
            (loss + pruner.penalty()).backward()
            pruner.step(opt)
            opt.step()
            opt.zero_grad()
        small = pruner.compact()
    r = pruner.report
    torch_macs = count_macs(small, example).macs
    with tempfile.TemporaryDirectory() as d, Timer() as t_conv:
        arts = ape.convert(small, example, Path(d), formats="tflite-fp32,tflite-int8", calib=images[64:64 + args.calib],
                           heldout=images[:args.parity], mean=mean, std=std, measure_runs=args.runs, name=name)
    by = {a.format: a for a in arts}
    fp32, int8 = by["tflite-fp32"], by["tflite-int8"]
    pred = profile(small, tuple(example.shape), load_target("host")).latency_ms
    return {"model": name, "outputs": fp32.parity["outputs"] if fp32.parity else None,
            "macs_dense_M": macs / 1e6, "macs_pruned_M": r.macs_after / 1e6, "reduction": macs / r.macs_after,
            "compaction_rel": r.equivalence_rel, "heads_kept": len(r.head_layers),
            "onnx_rel": by["onnx"].parity["rel"] if by["onnx"].parity else None,
            "fp32_rel": fp32.parity["rel"] if fp32.parity else None, "fp32_ok": fp32.ok,
            "int8_min_cosine": int8.parity["cosine"] if int8.parity else None, "int8_ok": int8.ok,
            "int8_recipe": int8.int8.recipe if int8.int8 else None, "tflite_macs_M": (fp32.macs_counted or 0) / 1e6,
            "tflite_macs_match": fp32.macs_counted == torch_macs,
            "predicted_host_ms": pred, "measured_host_ms_1t": fp32.host_latency_ms.get("1"),
            "int8_measured_ms_1t": int8.host_latency_ms.get("1"),
            "failures": "; ".join(f"{a.format}: {', '.join(a.failures)}" for a in arts if a.failures) or "",
            "prune_s": t_prune.seconds, "convert_s": t_conv.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--reduction", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--parity", type=int, default=8)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    data = load_data("synthetic", input_size=args.size)
    images = torch.stack([data.train[i][0] for i in range(64 + args.calib)])
    rows = []
    for name in args.models.split(","):
        row = run(name, args, images, list(data.mean), list(data.std))
        print(row, flush=True)
        rows.append(row)
    cols = ["model", "outputs", "macs_dense_M", "macs_pruned_M", "reduction", "compaction_rel", "heads_kept",
            "onnx_rel", "fp32_rel", "int8_min_cosine", "int8_ok", "int8_recipe", "tflite_macs_M", "tflite_macs_match",
            "predicted_host_ms", "measured_host_ms_1t", "int8_measured_ms_1t", "failures", "prune_s", "convert_s"]
    md = ["# Detectors and segmenters: Pruner -> compact -> ONNX/TFLite with parity on every output", "",
          f"Each model at {args.reduction:g}x fewer MACs, {args.size}x{args.size} input, {args.steps} steps of the "
          f"loop in this script (batch {args.batch}, loss: match the dense model's raw outputs on synthetic images). "
          "`*_rel`: worst output's max|diff| / max|torch|; `int8_min_cosine`: worst output's mean cosine; "
          "`tflite_macs_match`: MACs counted from the .tflite graph equal torch's count. Latency: LiteRT, 1 thread, "
          f"median of {args.runs} runs, and the `host` profile's prediction.", "",
          md_table(rows, cols), "",
          "Task accuracy (mAP@0.5 / mIoU, dense vs pruned): `task_accuracy.md`."]
    write_results(f"detect_segment{args.tag}", {"rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
