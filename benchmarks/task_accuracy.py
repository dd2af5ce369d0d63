"""Task accuracy of pruned detectors and segmenters on the in-process synthetic shapes tasks: dense vs pruned
at 2x fewer MACs after the same number of training steps, through the product's own path (`tasks.py`
losses and metrics, `task_prune.prune_for_task`, which is what `build --task` runs).

Schedule: the dense model trains --dense-steps from random initialisation; then from that state (a) a copy
trains --prune-steps + --finetune-steps more (the dense reference), (b) AutoPrune's Pruner runs
--prune-steps with the task loss + penalty, compacts (checked equal), and fine-tunes --finetune-steps.
Both use SGD (momentum 0.9, cosine) at --lr. Metrics: mAP@0.5 (torchmetrics + pycocotools) for detect,
mIoU (torchmetrics) for segment, on --val held-out images. Goal (issue 18): pruned within 2 pt of dense.
Each finished row is merged into the results file (one row per task and model).

    python benchmarks/task_accuracy.py --task detect                    # SSDlite at 128x128
    python benchmarks/task_accuracy.py --task detect --model yolov8n    # needs the 'yolo' extra
    python benchmarks/task_accuracy.py --task segment                   # LR-ASPP at 128x128
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune_edge.data import load_data  # noqa: E402
from autoprune_edge.device import resolve_runtime  # noqa: E402
from autoprune_edge.models import build_model  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402
from autoprune_edge.task_prune import prune_for_task, shuffled_batches, train_steps  # noqa: E402
from autoprune_edge.tasks import get_task  # noqa: E402
from benchmarks.common import RESULTS, Timer, code_commit, md_table, write_results  # noqa: E402

DEFAULTS = {"detect": ("ssdlite320_mobilenet_v3_large", 128), "segment": ("lraspp_mobilenet_v3_large", 128)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(DEFAULTS), required=True)
    ap.add_argument("--model")
    ap.add_argument("--size", type=int)
    ap.add_argument("--classes", type=int, default=4, help="including the background")
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--val", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dense-steps", type=int, default=500)
    ap.add_argument("--prune-steps", type=int, default=150)
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--reduction", type=float, default=2.0)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    name, size = DEFAULTS[args.task]
    name, size = args.model or name, args.size or size
    task = get_task(args.task)
    rt = resolve_runtime("auto", "fp32")
    torch.manual_seed(0)
    kind = "seg" if args.task == "segment" else "det"
    data = load_data(f"synthetic-{kind}?train={args.train}&val={args.val}&classes={args.classes}", input_size=size)
    model, _ = build_model(name, num_classes=args.classes)
    example = torch.zeros(1, 3, size, size)
    macs = count_macs(model, example).macs
    with Timer() as t_dense:
        train_steps(model, task, shuffled_batches(data, task, args.batch, 0), args.dense_steps, args.lr, rt, "dense")
    m0 = task.score(model, data.val, args.classes)
    dense = copy.deepcopy(model)
    more = args.prune_steps + args.finetune_steps
    with Timer() as t_ref:
        train_steps(dense, task, shuffled_batches(data, task, args.batch, 1), more, args.lr, rt, "dense, more")
    m_dense = task.score(dense, data.val, args.classes)
    per_epoch = math.ceil(args.train / args.batch)
    with Timer() as t_pruned:
        r = prune_for_task(model, data, [f"{macs / args.reduction / 1e6:.6f}MFLOPs"], task, target=None,
                           input_shape=tuple(example.shape), epochs=args.prune_steps / per_epoch,
                           finetune_epochs=args.finetune_steps / per_epoch, lr=args.lr, batch_size=args.batch,
                           seed=1, rt=rt)
    row = {"task": args.task, "metric": task.metric, "model": name, "input": f"{size}x{size}",
           "classes": args.classes, "macs_dense_M": macs / 1e6, "macs_pruned_M": r.macs_after / 1e6,
           "compaction_rel": r.equivalence_rel, "dense_start": m0, "dense": m_dense,
           "pruned_no_ft": r.accuracy_pruned, "pruned": r.accuracy_after,
           "delta_pt": 100 * (r.accuracy_after - m_dense), "steps dense/+more": f"{args.dense_steps}/+{more}",
           "steps prune+ft": f"{args.prune_steps}+{args.finetune_steps}", "dense_s": round(t_dense.seconds),
           "dense_more_s": round(t_ref.seconds), "prune_ft_s": round(t_pruned.seconds), "commit": code_commit()}
    print(row, flush=True)
    name_out = f"task_accuracy{args.tag}"
    path = RESULTS / f"{name_out}.json"
    rows = [x for x in (json.loads(path.read_text())["rows"] if path.exists() else [])
            if (x["task"], x["model"]) != (row["task"], row["model"])] + [row]
    md = ["# Pruned detectors and segmenters on learnable synthetic tasks (dense vs pruned, same steps)", "",
          "Synthetic shapes (`autoprune_edge/data/synthetic_seg.py`: 1-3 coloured rectangles/ellipses per image on "
          "textured noise, classes include the background), random initialisation, SGD momentum 0.9 + cosine, "
          f"batch {args.batch}, lr {args.lr}, {args.train} train / {args.val} val images. Dense: `dense_start` after "
          "the dense steps, `dense` after the further steps; pruned: AutoPrune's Pruner inside the product's task "
          "loop (`task_prune.prune_for_task`, what `build --task` runs) at 2x fewer MACs for the prune steps, "
          "compact, fine-tune. mAP@0.5: torchmetrics MeanAveragePrecision (pycocotools backend); mIoU: torchmetrics "
          "MulticlassJaccardIndex (macro, background included).", "",
          md_table(rows, list(row)), "",
          "Goal (issue 18): pruned within 2 pt of dense. " + "; ".join(
              f"{x['task']} ({x['model']}): {'met' if x['delta_pt'] >= -2 else 'NOT met'} ({x['delta_pt']:+.2f} pt)"
              for x in rows)]
    write_results(name_out, {"rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
