"""MobileNetV2-1.0 (224x224, 1000 classes) pruned by AutoPrune to 200M and 100M MACs: does it land?

Goal (issue 3): achieved MACs within 2% below the budget, never above (paper: 200M -> 73.32%, 100M -> 66.83%
top-1 on ImageNet; accuracy cannot be measured offline here, landing can). Data: the synthetic task
(ImageNet is not available), so the gate training is short and only the landing is meaningful. MACs are
counted on the compacted model with torch's FLOP counter (independently of the pruning cost model).

    python benchmarks/mbv2_landing.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune_edge.autoprune import AutoPruneConfig  # noqa: E402
from autoprune_edge.data import load_data  # noqa: E402
from autoprune_edge.models import build_model  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402
from autoprune_edge.pruning import prune  # noqa: E402
from benchmarks.common import Timer, md_table, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="200,100", help="MACs budgets in millions")
    ap.add_argument("--round-to", default="1,8")
    ap.add_argument("--train-images", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=8, help="gate epochs (8 x 128 images / 16 = 64 steps)")
    ap.add_argument("--lr-gates", type=float, default=0.005, help="the product default")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    data = load_data(f"synthetic?train={args.train_images}&val=32", input_size=224)
    rows = []
    for rt in [int(r) for r in args.round_to.split(",")]:
        for b in [float(x) for x in args.budgets.split(",")]:
            torch.manual_seed(0)
            model, _ = build_model("mobilenet_v2", num_classes=1000)
            dense = count_macs(model, torch.zeros(1, 3, 224, 224)).macs
            cfg = AutoPruneConfig(epochs=args.epochs, batch_size=args.batch_size, lr_gates=args.lr_gates, log_every=1)
            with Timer() as t:
                r = prune(model, data, f"{b}MFLOPs", method="autoprune", autoprune=cfg, finetune_epochs=0,
                          round_to=rt, evaluate_accuracy=False)
            counted = count_macs(r.model, torch.zeros(1, 3, 224, 224)).macs
            budget = b * 1e6
            # the hard-masked cost the controller saw at each logged step (before that step's update)
            trained = r.gate_log[-1]["macs"] if r.gate_log else None
            tail = [s["macs"] for s in r.gate_log[-max(1, len(r.gate_log) // 4):]]
            rows.append({"budget_M": b, "round_to": rt, "dense_M": dense / 1e6, "achieved_M": counted / 1e6,
                         "below_budget_pct": 100 * (budget - counted) / budget, "within_2pct_below":
                         0 <= budget - counted <= 0.02 * budget, "gated_macs_end_of_training_M":
                         None if trained is None else trained / 1e6,
                         "gated_macs_last_quarter_M": f"{min(tail) / 1e6:.1f}-{max(tail) / 1e6:.1f}" if tail else None,
                         "params_M": r.params_after / 1e6,
                         "gate_steps": len(r.gate_log), "seconds": t.seconds})
            print(rows[-1], flush=True)
    md = ["# MobileNetV2-1.0 at 224x224: landing on 200M / 100M MACs", "",
          f"AutoPrune gates trained {args.epochs:g} epochs on {args.train_images} synthetic images (batch "
          f"{args.batch_size}), then the final budgeted selection. `gated_macs_end_of_training_M` is the cost of the "
          "hard-masked model at the last gate step (the controller's own landing), `gated_macs_last_quarter_M` its "
          "range over the last quarter of the steps (the target reaches the budget at half-way); `achieved_M` is "
          f"counted on the compacted model. Gate learning rate {args.lr_gates:g}.", "",
          md_table(rows, ["budget_M", "round_to", "dense_M", "achieved_M", "below_budget_pct", "within_2pct_below",
                          "gated_macs_end_of_training_M", "gated_macs_last_quarter_M", "params_M", "gate_steps",
                          "seconds"])]
    write_results("mbv2_landing", {"args": vars(args), "rows": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
