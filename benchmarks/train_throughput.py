"""Training throughput (images/s): AutoPrune gate training and fine-tuning vs a plain PyTorch loop.

Issue 15 goals: (a) gate training / (c) plain loop >= 0.90, (b) fine-tuning / (c) >= 0.95, same model,
precision and memory format; and on a CPU with native bf16, (a) >= 1.7x (d), the loop as it ran before
device/precision support (fp32, NCHW), on ResNet-56.

(a) and (b) are the library's own loops (`train_gates`, `train`), timed from inside: the dataset stamps
the clock whenever a batch starts being read, so each interval is one full step of the real loop (data,
forward, backward, gate bookkeeping, optimiser) and set-up work before the first batch is not counted.
(c) is the textbook loop: a DataLoader over the same in-memory tensors, autocast, SGD. Variants run
interleaved (a, b, c, d, a, b, c, d, ...) so machine noise hits all alike; each run gives the median of
its step intervals after warm-up, and the table reports the median over runs.

Subnormal floats are flushed to zero for every variant (`--keep-denormals` to measure without): the
randomly initialised zoo ResNet-56 on random inputs produces subnormal activations, and x86 fp32 kernels
run ~10x slower on them (ResNet-56, batch 16: 5.4 s instead of 0.4 s per forward pass, measured), which
would measure the inputs rather than the loops.

    python benchmarks/train_throughput.py            # full run, ~10 min on 2 cores
    python benchmarks/train_throughput.py --quick    # smoke run (small batches and inputs)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune_edge.autoprune import AutoPruneConfig, structured_costs, train_gates  # noqa: E402
from autoprune_edge.budget import parse_budgets  # noqa: E402
from autoprune_edge.cost import GroupCostModel  # noqa: E402
from autoprune_edge.device import CPU_FP32, Runtime, placed, resolve_runtime  # noqa: E402
from autoprune_edge.gates import ChannelGates  # noqa: E402
from autoprune_edge.graph import PruningGraph  # noqa: E402
from autoprune_edge.input_pipeline import PipelineConfig  # noqa: E402
from autoprune_edge.models import build_model  # noqa: E402
from autoprune_edge.train import TrainConfig, train  # noqa: E402
from benchmarks.common import md_table, write_results  # noqa: E402

# model -> (batch, input size) for the full run and for --quick
CASES = {"cifar_resnet56": ((128, 32), (16, 32)), "mobilenet_v2": ((32, 224), (4, 96))}
WARMUP = 2  # step intervals dropped at the start of each run (allocator and oneDNN primitive warm-up)
PIPELINE = PipelineConfig(workers=0, cache_bytes=0)  # tensors already in memory: time the loops, not decoding


class StampedImages(Dataset):
    """In-memory images that note the time whenever a batch starts being read (every `batch`-th read)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        self.x, self.y, self.batch = x, y, batch
        self.reads = 0
        self.stamps: list[float] = []
        self.augment = False

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        if self.reads % self.batch == 0:
            self.stamps.append(time.perf_counter())
        self.reads += 1
        return self.x[i], int(self.y[i])

    def reset(self) -> None:
        self.reads, self.stamps = 0, []

    def step_seconds(self) -> float:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:])][WARMUP:]
        return statistics.median(gaps)


def gate_training(model, graph, cost, budget, data: StampedImages, rt: Runtime, batch: int) -> float:
    gates = ChannelGates(graph, AutoPruneConfig().gate_config())
    gates.attach()
    data.reset()
    try:
        train_gates(model, gates, data, budget, structured_costs(cost, {"macs"}),
                    AutoPruneConfig(epochs=1, batch_size=batch, log_every=10 ** 6), rt=rt, pipeline=PIPELINE)
    finally:
        gates.detach()
    return batch / data.step_seconds()


def fine_tuning(model, data: StampedImages, rt: Runtime, batch: int) -> float:
    data.reset()
    train(model, data, TrainConfig(epochs=1, batch_size=batch, bn_recalibration_batches=0), rt=rt,
          pipeline=PIPELINE)
    return batch / data.step_seconds()


def plain_loop(model, data: StampedImages, rt: Runtime, batch: int) -> float:
    """What a user writes: DataLoader, autocast, SGD; timed per step the same way."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = DataLoader(torch.utils.data.TensorDataset(data.x, data.y), batch_size=batch, shuffle=True,
                        drop_last=True)
    stamps = []
    model.train()
    with placed(rt, model) as fmt:
        for x, y in loader:
            stamps.append(time.perf_counter())
            x = x.to(rt.device, memory_format=fmt)
            y = y.to(rt.device)
            with rt.autocast():
                out = model(x)
            loss = F.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    stamps.append(time.perf_counter())
    return batch / statistics.median([b - a for a, b in zip(stamps, stamps[1:])][WARMUP:])


def run_model(name: str, batch: int, size: int, steps: int, reps: int, rt: Runtime, today: bool) -> dict:
    torch.manual_seed(0)
    model, _ = build_model(name)
    graph = PruningGraph(model, torch.randn(1, 3, size, size))
    model = graph.model  # the graph's model is the one its gates mask
    cost = GroupCostModel(graph)
    budget = parse_budgets(f"{float(cost.macs(graph.full_keep())) / 2e6:.4f}MFLOPs")
    n = batch * steps
    data = StampedImages(torch.randn(n, 3, size, size), torch.randint(0, 10, (n,)), batch)
    variants = {"a_autoprune": lambda: gate_training(model, graph, cost, budget, data, rt, batch),
                "b_finetune": lambda: fine_tuning(model, data, rt, batch),
                "c_plain": lambda: plain_loop(model, data, rt, batch)}
    if today:
        variants["d_today"] = lambda: gate_training(model, graph, cost, budget, data, CPU_FP32, batch)
    runs: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(reps):
        for key, fn in variants.items():
            runs[key].append(fn())
        print(f"{name} rep {rep + 1}/{reps}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()), flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    row = {"model": name, "input": f"3x{size}x{size}", "batch": batch, "steps_per_run": steps, "runs": reps,
           "device": str(rt.device), "precision": rt.precision,
           "memory_format": "channels_last" if rt.memory_format(model) is torch.channels_last else "NCHW",
           **{f"{k}_img_s": v for k, v in med.items()},
           "a_over_c": med["a_autoprune"] / med["c_plain"], "b_over_c": med["b_finetune"] / med["c_plain"],
           "a_over_d": med["a_autoprune"] / med["d_today"] if today else None,
           "all_runs_img_s": runs}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="cifar_resnet56,mobilenet_v2")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed run (default 6, quick 4)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved runs per variant (default 5, quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small batches and inputs, one repeat")
    ap.add_argument("--keep-denormals", action="store_true", help="do not flush subnormal floats to zero")
    ap.add_argument("--results", default=None,
                    help="results file name (default train_throughput, or train_throughput_quick with --quick)")
    args = ap.parse_args()
    flushed = not args.keep_denormals and torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (4 if args.quick else 6)
    reps = args.reps or (1 if args.quick else 5)
    rt = resolve_runtime(args.device, args.precision)
    rows = []
    for name in args.models.split(","):
        batch, size = CASES[name][1 if args.quick else 0]
        rows.append(run_model(name, batch, size, steps + WARMUP + 1, reps, rt, today=name == "cifar_resnet56"))
    cols = ["model", "input", "batch", "device", "precision", "memory_format", "a_autoprune_img_s", "b_finetune_img_s",
            "c_plain_img_s", "d_today_img_s", "a_over_c", "b_over_c", "a_over_d"]
    md = ["# Training throughput: AutoPrune gate training and fine-tuning vs a plain PyTorch loop", "",
          f"Device {rt.device}, precision {rt.precision}, {torch.get_num_threads()} torch threads, subnormals "
          + ("flushed to zero" if flushed else "kept")
          + (" (--quick smoke run: small batches and inputs, not the goal's settings)" if args.quick else "") + ".",
          "Images/s, median over interleaved runs of the median step interval (after warm-up). (a) `train_gates`, "
          "(b) `train` (fine-tuning), (c) a plain DataLoader + autocast + SGD loop, all in the same precision and "
          "memory format; (d) `train_gates` in fp32 NCHW, the loop as it ran before device/precision support "
          "and before CPUs trained in channels_last.", "",
          "Goals (issue 15): a/c >= 0.90, b/c >= 0.95; a/d >= 1.7 on ResNet-56 on a CPU with native bf16.", "",
          md_table(rows, cols)]
    write_results(args.results or ("train_throughput_quick" if args.quick else "train_throughput"),
                  {"args": vars(args), "threads": torch.get_num_threads(), "device": str(rt.device),
                   "precision": rt.precision, "flush_denormal": flushed, "rows": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
