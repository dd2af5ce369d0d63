"""Task accuracy of a pruned segmenter: LR-ASPP on the in-process synthetic shapes task, dense vs pruned at
2x fewer MACs after the same number of training steps, mIoU by torchmetrics (pip install torchmetrics).

Schedule: the dense model trains --dense-steps; then from that state (a) the Pruner runs --prune-steps of
the user's loop (per-pixel cross-entropy + penalty), compacts, and the compact model fine-tunes
--finetune-steps; (b) the dense model trains the same --prune-steps + --finetune-steps more. Both use
SGD (momentum 0.9, cosine) at the same learning rate. Goal (issue 18): pruned mIoU within 2 pt of dense.

    python benchmarks/segment_synthetic.py
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import autoprune_edge as ape  # noqa: E402
from autoprune_edge.data.synthetic_seg import SyntheticShapes  # noqa: E402
from autoprune_edge.models import build_model  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402
from benchmarks.common import Timer, md_table, write_results  # noqa: E402


def batches(ds, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    while True:
        for idx in torch.randperm(len(ds), generator=g).split(batch):
            xs, ys = zip(*(ds[i] for i in idx.tolist()))
            yield torch.stack(xs), torch.stack(ys)


def fit(model: nn.Module, data, steps: int, lr: float, pruner=None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(steps):
        x, y = next(data)
        loss = nn.functional.cross_entropy(model(x)["out"], y)
        if pruner is not None:
            loss = loss + pruner.penalty()
        loss.backward()
        if pruner is not None:
            pruner.step(opt)
        opt.step()
        opt.zero_grad()
        sched.step()


@torch.no_grad()
def miou(model: nn.Module, ds, classes: int) -> float:
    from torchmetrics.classification import MulticlassJaccardIndex

    metric = MulticlassJaccardIndex(num_classes=classes, average="macro")
    model.eval()
    for i in range(0, len(ds), 16):
        xs, ys = zip(*(ds[j] for j in range(i, min(i + 16, len(ds)))))
        metric.update(model(torch.stack(xs))["out"].argmax(1), torch.stack(ys))
    return float(metric.compute())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dense-steps", type=int, default=400)
    ap.add_argument("--prune-steps", type=int, default=150)
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--reduction", type=float, default=2.0)
    ap.add_argument("--val", type=int, default=256)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    train = SyntheticShapes(4000, args.size, args.classes, seed=0, split=0)
    val = SyntheticShapes(args.val, args.size, args.classes, seed=0, split=1)
    model, _ = build_model("lraspp_mobilenet_v3_large", num_classes=args.classes)
    example = torch.zeros(1, 3, args.size, args.size)
    with Timer() as t_dense:
        fit(model, batches(train, args.batch, 0), args.dense_steps, args.lr)
    m0 = miou(model, val, args.classes)
    dense = copy.deepcopy(model)
    with Timer() as t_ref:
        fit(dense, batches(train, args.batch, 1), args.prune_steps + args.finetune_steps, args.lr)
    m_dense = miou(dense, val, args.classes)
    macs = count_macs(model, example).macs
    with Timer() as t_pruned:
        pruner = ape.Pruner(model, example, f"{macs / args.reduction / 1e6:.6f}MFLOPs", total_steps=args.prune_steps)
        fit(model, batches(train, args.batch, 1), args.prune_steps, args.lr, pruner)
        small = pruner.compact()
        m_gated = miou(small, val, args.classes)
        fit(small, batches(train, args.batch, 2), args.finetune_steps, args.lr)
    m_pruned = miou(small, val, args.classes)
    r = pruner.report
    row = {"model": "lraspp_mobilenet_v3_large", "input": f"{args.size}x{args.size}", "classes": args.classes,
           "macs_dense_M": macs / 1e6, "macs_pruned_M": r.macs_after / 1e6, "compaction_rel": r.equivalence_rel,
           "miou_dense_start": m0, "miou_dense": m_dense, "miou_pruned_no_ft": m_gated, "miou_pruned": m_pruned,
           "delta_pt": 100 * (m_pruned - m_dense), "dense_train_s": t_dense.seconds, "dense_more_s": t_ref.seconds,
           "prune_and_ft_s": t_pruned.seconds}
    print(row)
    md = ["# Pruned segmenter on a learnable synthetic task (mIoU, torchmetrics)", "",
          f"LR-ASPP MobileNetV3 at {args.size}x{args.size}, {args.classes} classes (background + coloured shapes, "
          f"`autoprune_edge/data/synthetic_seg.py`), {args.val} validation images. Dense trained "
          f"{args.dense_steps} steps (batch {args.batch}, SGD lr {args.lr}); then dense "
          f"+{args.prune_steps + args.finetune_steps} steps vs Pruner ({args.prune_steps} steps at {args.reduction:g}x fewer MACs, "
          f"cross-entropy + penalty in this script's own loop) + compact + {args.finetune_steps} fine-tune steps.",
          "", md_table([row], list(row)), "",
          f"Goal: pruned within 2 pt of dense: {'met' if row['delta_pt'] >= -2 else 'NOT met'} "
          f"({row['delta_pt']:+.2f} pt)."]
    write_results(f"segment_synthetic{args.tag}", {"args": vars(args), "row": row}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
