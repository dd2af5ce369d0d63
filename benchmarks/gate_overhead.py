"""Training-step time with AutoPrune gates attached vs plain training, same model and batch.

Goal (issue 3): <= 1.10x. A/B steps are interleaved (ABAB...) so machine noise hits both alike; medians of
the per-pair ratio are reported.

    python benchmarks/gate_overhead.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune_edge.autoprune import AutoPruneConfig, structured_costs  # noqa: E402
from autoprune_edge.budget import parse_budgets  # noqa: E402
from autoprune_edge.cost import GroupCostModel  # noqa: E402
from autoprune_edge.gates import ChannelGates  # noqa: E402
from autoprune_edge.graph import PruningGraph  # noqa: E402
from autoprune_edge.models import build_model  # noqa: E402
from benchmarks.common import md_table, write_results  # noqa: E402

CASES = {"cifar_resnet20": (64, 3, 32), "cifar_resnet56": (64, 3, 32), "mobilenet_v2": (16, 3, 224),
         "lenet5": (128, 1, 28)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cifar_resnet20,mobilenet_v2,lenet5")
    ap.add_argument("--pairs", type=int, default=15)
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        bs, c, s = CASES[name]
        torch.manual_seed(0)
        model, _ = build_model(name)
        x, y = torch.randn(bs, c, s, s), torch.randint(0, 10, (bs,))
        graph = PruningGraph(model, x[:1])
        cost = GroupCostModel(graph)
        gates = ChannelGates(graph, AutoPruneConfig().gate_config())
        budgets = parse_budgets(f"{float(cost.macs(graph.full_keep())) / 2e6:.4f}MFLOPs")
        cost_fn = structured_costs(cost, {"macs"})
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        opt_m = torch.optim.Adam(gates.m.parameters(), lr=1e-3)
        model.train()

        def plain() -> float:
            t = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return time.perf_counter() - t

        def gated() -> float:
            t = time.perf_counter()
            loss = F.cross_entropy(model(x), y) + cost_fn(gates.soft_keep())["macs"] / budgets[0].value
            opt.zero_grad()
            opt_m.zero_grad()
            loss.backward()
            opt.step()
            opt_m.step()
            return time.perf_counter() - t

        plain(), plain()
        ratios, tp, tg = [], [], []
        for i in range(args.pairs):
            a = plain()
            gates.attach()
            if i == 0:
                gated()
            b = gated()
            gates.detach()
            tp.append(a)
            tg.append(b)
            ratios.append(b / a)
        rows.append({"model": name, "batch": bs, "input": f"{c}x{s}x{s}", "plain_ms": 1e3 * statistics.median(tp),
                     "gated_ms": 1e3 * statistics.median(tg), "ratio_median": statistics.median(ratios),
                     "ratio_p25": statistics.quantiles(ratios, n=4)[0],
                     "ratio_p75": statistics.quantiles(ratios, n=4)[2],
                     "pairs": args.pairs})
        print(rows[-1], flush=True)
    md = ["# AutoPrune gate overhead per training step", "",
          "Structured gates (one per channel of every dependency group) masking the consumer weights, plus the "
          "MACs budget penalty, vs the same step without gates. Goal <= 1.10x.", "",
          md_table(rows, ["model", "batch", "input", "plain_ms", "gated_ms", "ratio_median", "ratio_p25",
                          "ratio_p75", "pairs"])]
    write_results("gate_overhead", {"args": vars(args), "rows": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
