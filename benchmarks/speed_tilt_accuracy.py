"""Does the speed tilt cost accuracy? MobileNetV2 on real CIFAR-10 images, pruned at equal MACs with and without it.

    python benchmarks/speed_tilt_accuracy.py       # ≈25 min on one core; writes benchmarks/results/speed_tilt_accuracy.*
    python benchmarks/speed_tilt_accuracy.py --model cifar_resnet56 --results speed_tilt_accuracy_resnet56

`--speed-weight W` pushes AutoPrune's gates partly by the target's predicted latency instead of MACs
(autoprune_edge/speed.py); benchmarks/host_speed.py shows what it does to speed. This measures what it does to
accuracy where a depthwise network learns something real: torchvision MobileNetV2 (width 0.5, 10 classes)
trained here from scratch on the CIFAR-10 training images except a 5,000-image holdout (32×32, crop+flip),
then pruned to 1/R of its MACs (`--budget` as MACs) against the `host` target at each speed weight with the
same schedule (gate epochs, fine-tuning epochs with distillation from the dense model, seed), and evaluated on
the 1,000 test images and the holdout, each ± one standard error; the `host` profile's fp32 and int8
predictions for each pruned model show what the tilt bought (at 32×32 on this profile).

``--model cifar_resnet20/32/44/56`` starts instead from the pretrained CIFAR-10 ResNet in shared data (a
strong model, ~93 % for ResNet-56; no dense training here). Those weights were trained on all 50,000 training
images, so for them only the test images are held out.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import CIFAR_WEIGHTS, BundleView, md_table, pretrained_cifar_resnet, shared, std_err, write_results  # noqa: E402


def _se(p: float, n: int) -> float:
    return 100 * std_err(p, n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense-epochs", type=float, default=6)
    ap.add_argument("--gate-epochs", type=float, default=1)
    ap.add_argument("--finetune-epochs", type=float, default=2)
    ap.add_argument("--reduction", type=float, default=2.0)
    ap.add_argument("--speed-weights", default="0,1")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--model", default="mobilenet_v2", choices=("mobilenet_v2", *CIFAR_WEIGHTS),
                    help="mobilenet_v2 (trained here) or a pretrained CIFAR ResNet")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--exchange", default="on",
                    help="comma list of on/off: prune with and/or without the selection's speed exchange "
                         "(speed.faster_selection), each at every speed weight")
    ap.add_argument("--results", default="speed_tilt_accuracy")
    args = ap.parse_args()
    import torch
    import torchvision
    from torch.utils.data import Subset

    from autoprune_edge.autoprune import AutoPruneConfig
    from autoprune_edge.data import load_data
    from autoprune_edge.device import resolve_runtime
    from autoprune_edge.profiles.counting import count_macs
    from autoprune_edge.profiles.profile import profile
    from autoprune_edge.pruning import prune
    from autoprune_edge.targets import load_target
    from autoprune_edge.train import TrainConfig, evaluate, train

    t0 = time.time()
    rt = resolve_runtime("cpu", args.precision)
    torch.manual_seed(0)
    base = load_data(f"cifar10:{shared('cifar10_convnetjs')}", normalization="imagenet", augment=True)
    n = len(base.train)
    train_set, holdout = Subset(base.train, list(range(n - 5000))), Subset(base.train, list(range(n - 5000, n)))
    data = BundleView(base, train_set, base.val)
    host = load_target("host")
    shape = (1, 3, 32, 32)

    if args.model == "mobilenet_v2":
        dense = torchvision.models.mobilenet_v2(width_mult=args.width, num_classes=10)
        train(dense, train_set, TrainConfig(epochs=args.dense_epochs, lr=0.05, batch_size=128, weight_decay=4e-5,
                                            seed=0), desc="train dense", rt=rt)
    else:
        dense = pretrained_cifar_resnet(args.model)
    dense.eval()
    base.train.augment = False
    acc = {"test": evaluate(dense, base.val, rt=rt), "holdout": evaluate(dense, holdout, rt=rt)}
    base.train.augment = True
    macs = count_macs(dense, torch.zeros(shape)).macs
    pred = {p: profile(dense, shape, host, precision=p).latency_ms for p in ("fp32", "int8")}
    rows = [{"model": "dense", "speed_weight": "–", "exchange": "–", "macs_M": round(macs / 1e6, 2),
             "test_%": f"{acc['test'] * 100:.2f} ± {_se(acc['test'], len(base.val)):.2f}",
             "holdout_%": f"{acc['holdout'] * 100:.2f} ± {_se(acc['holdout'], len(holdout)):.2f}",
             "pred_fp32_ms": round(pred["fp32"], 4), "pred_int8_ms": round(pred["int8"], 4),
             "minutes": round((time.time() - t0) / 60, 1)}]
    print(rows[-1], flush=True)
    budget = macs / args.reduction
    notes = {}
    for w, ex in [(float(x), e) for x in args.speed_weights.split(",") for e in args.exchange.split(",")]:
        t1 = time.time()
        model = copy.deepcopy(dense)
        cfg = AutoPruneConfig(epochs=args.gate_epochs, lr=0.02, batch_size=128, seed=0, speed_weight=w)
        r = prune(model, data, f"{budget / 1e6:.6f}MFLOPs", target=host, method="autoprune", autoprune=cfg,
                  finetune_epochs=args.finetune_epochs, lr=0.02, batch_size=128, distill=True, input_shape=shape,
                  precision=args.precision, device="cpu", speed_exchange=ex == "on")
        notes[f"{w:g}/{ex}"] = [n for n in r.notes if "exchange" in n]
        m = r.model.eval()
        base.train.augment = False
        a_test, a_hold = evaluate(m, base.val, rt=rt), evaluate(m, holdout, rt=rt)
        base.train.augment = True
        p = {q: profile(m, shape, host, precision=q).latency_ms for q in ("fp32", "int8")}
        rows.append({"model": f"{args.reduction:g}x fewer MACs", "speed_weight": w, "exchange": ex, "macs_M": round(r.macs_after / 1e6, 2),
                     "test_%": f"{a_test * 100:.2f} ± {_se(a_test, len(base.val)):.2f}",
                     "holdout_%": f"{a_hold * 100:.2f} ± {_se(a_hold, len(holdout)):.2f}",
                     "pred_fp32_ms": round(p["fp32"], 4), "pred_int8_ms": round(p["int8"], 4),
                     "minutes": round((time.time() - t1) / 60, 1)})
        print(rows[-1], flush=True)
    cols = list(rows[0])
    what = (f"torchvision MobileNetV2 width {args.width:g}, 10 classes, trained here {args.dense_epochs:g} epochs from "
            f"scratch on 45,000 CIFAR-10 training images (32×32, crop+flip, SGD lr 0.05, batch 128, cosine)"
            if args.model == "mobilenet_v2" else
            f"{args.model}, pretrained on all 50,000 CIFAR-10 training images (resnet_cifar10_akamaster weights; the "
            f"'holdout' below is therefore not held out from the dense model)")
    md = [f"# The speed tilt's cost in accuracy: {args.model} on CIFAR-10", "",
          f"{what}; pruned to "
          f"1/{args.reduction:g} of its MACs against `host` with AutoPrune ({args.gate_epochs:g} gate epoch(s), "
          f"{args.finetune_epochs:g} fine-tuning epochs, distillation from the dense model, seed 0) at each speed "
          f"weight. Accuracy ± one standard error on the 1,000 test images and on training images 45,000-49,999 "
          f"(held out of all training here). `pred_*_ms`: the `host` profile's prediction for the model at 32×32 "
          f"({rt.precision} training on {rt.device}). `exchange`: the selection's speed exchange on (the default) or "
          "off (`--no-speed-exchange`).", "", md_table(rows, cols), "",
          *(f"- speed weight {k.split('/')[0]}, exchange {k.split('/')[1]}: {'; '.join(v) or 'no exchange made'}"
            for k, v in notes.items()), ""]
    write_results(args.results, {"rows": rows, "notes": notes, "args": vars(args), "minutes": round((time.time() - t0) / 60, 1)},
                  "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
