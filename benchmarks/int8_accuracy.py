"""int8 after pruning, on real data: does the int8 file keep the fp32 model's accuracy, does its parity pass,
which quantisation recipe it needed, and how much faster it runs on this host.

Rows (issue 17):
* CIFAR-10 ResNet-20 and ResNet-56 from the pretrained weights, pruned by AutoPrune to 2x fewer MACs (short
  schedule: --gate-epochs of gate training and --finetune-epochs of distilled fine-tuning on
  --train-images CIFAR training images), accuracy on the 1,000 offline test images;
* LeNet-5 on MNIST (dense trained here), pruned to 7 % of its MACs, accuracy on the 10,000 test images;
* MobileNetV2 at 100M and 200M MACs through `build` on synthetic data without fine-tuning (the issue's
  failing recipe), accuracy on the synthetic validation split.

Every int8 file is produced by the product's own `convert()` (uint8 pixel I/O by default, recipes tried
cheapest first) and run with LiteRT on the documented input: raw 0..255 pixels for the uint8 file,
normalised floats for fp32. Goal: int8 top-1 within 0.5 pt of fp32 on the real-data rows, int8 parity
passing on every MobileNetV2 row.

    python benchmarks/int8_accuracy.py                 # all rows (about 30 min on 2 cores)
    python benchmarks/int8_accuracy.py --rows lenet5,cifar_resnet20
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune_edge.autoprune import AutoPruneConfig  # noqa: E402
from autoprune_edge.converters.convert import convert  # noqa: E402
from autoprune_edge.converters.int8_prep import to_pixels  # noqa: E402
from autoprune_edge.converters.litert import run_tflite  # noqa: E402
from autoprune_edge.data import calibration_batch, heldout_batch, load_data  # noqa: E402
from autoprune_edge.models import build_model  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402
from autoprune_edge.pruning import prune  # noqa: E402
from autoprune_edge.train import TrainConfig, train  # noqa: E402
from benchmarks.common import CIFAR_WEIGHTS, Timer, md_table, pretrained_cifar_resnet, shared, write_results  # noqa: E402

ALL_ROWS = "cifar_resnet20,cifar_resnet56,lenet5,mobilenet_v2@100M,mobilenet_v2@200M"


def stack(ds, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in idx))
    return torch.stack(xs), torch.tensor(ys)


def top1(logits: np.ndarray, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y.numpy()).mean())


def file_columns(folder: Path, fp32: Any, int8: Any, x: torch.Tensor, y: torch.Tensor, mean, std) -> dict[str, Any]:
    """Accuracy of the fp32 and int8 files on (x, y), each fed as documented, plus the int8 file's facts."""
    acc_fp32 = top1(run_tflite(folder / fp32.path, x.numpy()), y)
    xin = to_pixels(x, list(mean), list(std)).numpy() if int8.int8.pixel_input else x.numpy()
    acc_int8 = top1(run_tflite(folder / int8.path, xin), y)
    ms32, ms8 = fp32.host_latency_ms.get("1"), int8.host_latency_ms.get("1")
    return {"acc_fp32": acc_fp32, "acc_int8": acc_int8,
            "delta_int8_pt": 100 * (acc_int8 - acc_fp32), "int8_parity": "pass" if int8.ok else "FAIL",
            "int8_top1_agreement": int8.parity["top1_agreement"], "int8_cosine": int8.parity["cosine"],
            "int8_top1_decided": int8.parity.get("top1_decided"),
            "decided": f"{int8.parity.get('decided')}/{int8.parity['n']}" if int8.parity.get("decided") is not None
            else None,
            "recipe": int8.int8.recipe, "tried": [t.recipe + (" ok" if t.passed else " fail") for t in int8.int8.tried],
            "io": f"{int8.io['input']['dtype']} in / {int8.io['output']['dtype']} out",
            "fp32_ms_1t": ms32, "int8_ms_1t": ms8, "int8_speedup": (ms32 / ms8) if ms32 and ms8 else None,
            "n_eval": len(y)}


def measure_files(model: torch.nn.Module, data, x: torch.Tensor, y: torch.Tensor, mean, std, labels, name: str,
                  calib_n: int) -> dict[str, Any]:
    """Convert to fp32 + int8 with the product's convert(), then accuracy of torch, fp32 and int8 on (x, y)."""
    calib = calibration_batch(data, calib_n, seed=0)
    held = heldout_batch(data, 64)
    with tempfile.TemporaryDirectory() as d:
        arts = convert(model, torch.zeros(1, *x.shape[1:]), Path(d), formats="tflite-fp32,tflite-int8",
                       calib=calib, heldout=held, labels=labels, mean=list(mean), std=list(std), name=name,
                       measure_runs=50)
        by = {a.format: a for a in arts}
        fp32, int8 = by["tflite-fp32"], by["tflite-int8"]
        with torch.no_grad():
            acc_torch = top1(torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy(), y)
        return {"acc_torch": acc_torch, **file_columns(Path(d), fp32, int8, x, y, mean, std)}


def cifar_row(name: str, args) -> dict[str, Any]:
    base = load_data(f"cifar10:{shared('cifar10_convnetjs')}", normalization="imagenet", augment=True)
    pick = torch.randperm(len(base.train) - 5000, generator=torch.Generator().manual_seed(0))[: args.train_images]
    data = copy.copy(base)
    data.train = Subset(base.train, sorted(pick.tolist()))
    dense = pretrained_cifar_resnet(name)
    example = torch.zeros(1, 3, 32, 32)
    budget = count_macs(dense, example).macs / 2
    cfg = AutoPruneConfig(epochs=args.gate_epochs, lr=0.02, batch_size=128, seed=0)
    r = prune(dense, data, f"{budget / 1e6:.6f}MFLOPs", method="autoprune", autoprune=cfg, epochs=args.gate_epochs,
              finetune_epochs=args.finetune_epochs, lr=0.02, batch_size=128, distill=True, seed=0,
              evaluate_accuracy=False)
    base.train.augment = False
    x, y = stack(base.val, list(range(len(base.val))))
    m = measure_files(r.model.eval(), data, x, y, base.mean, base.std, list(base.class_names), name, 200)
    return {"model": name, "data": "CIFAR-10 test (1,000)", "macs": f"{r.macs_before / 1e6:.1f}M -> "
            f"{r.macs_after / 1e6:.1f}M", **m}


def lenet_row(args) -> dict[str, Any]:
    data = load_data(f"mnist:{shared('mnist')}")
    torch.manual_seed(0)
    dense, _ = build_model("lenet5")
    train(dense, data.train, TrainConfig(epochs=args.lenet_dense_epochs, lr=0.05, batch_size=128, seed=0),
          desc="train dense lenet5")
    example = torch.zeros(1, *data.input_shape)
    budget = count_macs(dense, example).macs * 0.07
    cfg = AutoPruneConfig(epochs=1, batch_size=128, seed=0)
    r = prune(dense, data, f"{budget / 1e6:.6f}MFLOPs", method="autoprune", autoprune=cfg, epochs=1,
              finetune_epochs=args.lenet_finetune_epochs, lr=0.02, batch_size=128, round_to=1, distill=True, seed=0,
              evaluate_accuracy=False)
    x, y = stack(data.val, list(range(len(data.val))))
    m = measure_files(r.model.eval(), data, x, y, data.mean, data.std, list(data.class_names), "lenet5", 200)
    return {"model": "lenet5", "data": f"MNIST test ({len(y):,})", "macs": f"{r.macs_before / 1e6:.3f}M -> "
            f"{r.macs_after / 1e6:.3f}M", **m}


def mobilenet_row(budget: str, args) -> dict[str, Any]:
    from autoprune_edge.modelcard import load_card
    from autoprune_edge.pipeline import build

    with tempfile.TemporaryDirectory() as d, Timer():
        rep = build(model="mobilenet_v2", target="raspberrypi4", budget=f"{budget}FLOPs", out_dir=d, name="m",
                    epochs=1, finetune_epochs=0, allow_parity_failure=True, measure_runs=50)
        card = load_card(rep.out_dir)
        bundle = load_data("synthetic", input_size=224)
        x, y = stack(bundle.val, list(range(len(bundle.val))))
        by = {a.format: a for a in card.artifacts}
        cols = file_columns(rep.out_dir, by["tflite-fp32"], by["tflite-int8"], x, y, bundle.mean, bundle.std)
    return {"model": f"mobilenet_v2 @{budget} (build, no fine-tune)", "data": f"synthetic val ({len(y)})",
            "macs": f"{card.macs.before / 1e6:.1f}M -> {card.macs.after / 1e6:.1f}M",
            "acc_torch": card.accuracy.after, **cols}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=ALL_ROWS)
    ap.add_argument("--train-images", type=int, default=10000, help="CIFAR training images for the short schedule")
    ap.add_argument("--gate-epochs", type=float, default=0.5)
    ap.add_argument("--finetune-epochs", type=float, default=1.0)
    ap.add_argument("--lenet-dense-epochs", type=float, default=4)
    ap.add_argument("--lenet-finetune-epochs", type=float, default=2)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for row in args.rows.split(","):
        with Timer() as t:
            if row in CIFAR_WEIGHTS:
                r = cifar_row(row, args)
            elif row == "lenet5":
                r = lenet_row(args)
            elif row.startswith("mobilenet_v2@"):
                r = mobilenet_row(row.split("@")[1], args)
            else:
                raise SystemExit(f"unknown row {row!r}; choose from {ALL_ROWS}")
        r["wall_min"] = t.seconds / 60
        rows.append(r)
        print(r, flush=True)
        save(rows, args)  # after every row, so a cut-off run keeps what it measured


def save(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    cols = ["model", "macs", "data", "acc_torch", "acc_fp32", "acc_int8", "delta_int8_pt", "int8_parity",
            "int8_top1_agreement", "int8_top1_decided", "decided", "int8_cosine", "recipe", "tried", "io", "fp32_ms_1t", "int8_ms_1t", "int8_speedup",
            "wall_min"]
    real = [r for r in rows if not r["model"].startswith("mobilenet")]
    mbv2 = [r for r in rows if r["model"].startswith("mobilenet")]
    goal = [f"- real-data rows with int8 within 0.5 pt of fp32: {sum(abs(r['delta_int8_pt']) <= 0.5 for r in real)}"
            f"/{len(real)}", f"- MobileNetV2 rows passing int8 parity: {sum(r['int8_parity'] == 'pass' for r in mbv2)}"
            f"/{len(mbv2)}"]
    md = ["# int8 after pruning: accuracy, parity, recipe, host speed", "",
          "Each int8 file comes from the product's `convert()` with its defaults (uint8 pixel I/O, recipes tried "
          "cheapest first, chosen by int8 parity on 64 held-out images; `tried` lists each recipe and whether it "
          "passed). Accuracies are top-1 of the torch model, the fp32 .tflite and the int8 .tflite (LiteRT, "
          "raw 0..255 pixels into the uint8 file) on the evaluation images; host latency is LiteRT, 1 thread, "
          "median of 50 runs, fp32 and int8 files measured in the same build. CIFAR rows: AutoPrune "
          f"{args.gate_epochs:g} gate + {args.finetune_epochs:g} distilled fine-tune epochs on "
          f"{args.train_images} training images. `int8_top1_agreement` counts every parity image; "
          "`int8_top1_decided` only the `decided` ones, whose torch top-1 leads the runner-up by at least one step "
          "of the int8 output (the parity rule judges that subset when it is at least half the images: the file "
          "cannot order logits closer than its step).", "",
          md_table(rows, cols), "", "Goals:", *goal]
    write_results(f"int8_accuracy{args.tag}", {"rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
