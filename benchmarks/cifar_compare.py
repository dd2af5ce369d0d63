"""CIFAR-10 ResNet-20/56 from the pretrained weights: AutoPrune vs every baseline vs Torch-Pruning's pruners.

Every method prunes the same pretrained model to the same MACs budget (2x and 3x reduction), is compacted,
and gets the same fine-tuning schedule (`--finetune-images` images, SGD, cosine). AutoPrune additionally
trains its gates (jointly with the weights) for `--gate-images` images before selection; to show whether
its edge is only that extra training, `l1+extra` is L1 fine-tuned for the gate phase's images on top.
Accuracy: the 1,000 CIFAR-10 test images available offline, and a 5,000-image slice of the training set
(images 45,000-49,999) that no method fine-tunes on (the pretrained dense nets did see it).

    python benchmarks/cifar_compare.py                   # ResNet-20 and -56, 2x and 3x (about an hour, 2 cores)
    python benchmarks/cifar_compare.py --models cifar_resnet20 --reductions 2
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune_edge.autoprune import AutoPruneConfig  # noqa: E402
from autoprune_edge.data import load_data  # noqa: E402
from autoprune_edge.layers import custom_pruners_for  # noqa: E402
from autoprune_edge.models import build_model, load_weights  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402
from autoprune_edge.pruning import prune  # noqa: E402
from autoprune_edge.train import TrainConfig, evaluate, train  # noqa: E402
from benchmarks.common import Timer, md_table, shared, tflite_fp32_parity, write_results  # noqa: E402

WEIGHTS = {"cifar_resnet20": "resnet20-12fca82f.th", "cifar_resnet32": "resnet32-d509ac18.th",
           "cifar_resnet44": "resnet44-014dd654.th", "cifar_resnet56": "resnet56-4bfd9763.th"}
OURS = ["autoprune", "l1", "bn", "taylor", "uniform", "random"]
TP_METHODS = {"tp-magnitude": "Torch-Pruning MetaPruner, GroupMagnitudeImportance(p=2), local, iterative",
              "tp-taylor": "Torch-Pruning MetaPruner, GroupTaylorImportance, global, iterative"}


class _Bundle:
    """A DataBundle view with other train/val datasets."""

    def __init__(self, base, train_ds, val_ds):
        self.__dict__.update(base.__dict__)
        self.train, self.val = train_ds, val_ds


def tp_prune(model: torch.nn.Module, method: str, budget_macs: float, data, example: torch.Tensor) -> torch.nn.Module:
    """Torch-Pruning's own pruners, stepped until the MACs budget holds (their reproduce-script practice)."""
    import torch_pruning as tp

    from autoprune_edge.train import make_loader

    steps = 200
    if method == "tp-magnitude":
        imp = tp.importance.GroupMagnitudeImportance(p=2)
        global_pruning = False
    else:
        imp = tp.importance.GroupTaylorImportance()
        global_pruning = True
    pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=0.9, iterative_steps=steps,
                                  global_pruning=global_pruning, ignored_layers=[model.linear],
                                  customized_pruners=custom_pruners_for(model))
    def batches():
        while True:
            yield from make_loader(data.train, 64, shuffle=True, seed=1)

    loader = batches()
    model.eval()
    for _ in range(steps):
        if count_macs(model, example).macs <= budget_macs:
            break
        if method == "tp-taylor":
            x, y = next(loader)
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def _overrides(text: str) -> dict:
    """`k=v,...` -> AutoPruneConfig keyword arguments: numbers as floats, anything else as text."""
    out: dict = {}
    for kv in filter(None, text.split(",")):
        k, v = kv.split("=")
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cifar_resnet20,cifar_resnet56")
    ap.add_argument("--reductions", default="2,3")
    ap.add_argument("--methods", default=",".join(OURS + ["l1+extra"] + list(TP_METHODS)))
    ap.add_argument("--gate-images", type=int, default=5000)
    ap.add_argument("--finetune-images", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--autoprune-opts", default="",
                    help="AutoPruneConfig overrides, e.g. coupling_exponent=1,lr_gates=0.01 (probes; default: none)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from an existing (partial) .json")
    args = ap.parse_args()
    if args.render_only:
        import json

        from benchmarks.common import RESULTS

        saved = json.loads((RESULTS / f"cifar_compare{args.tag}.json").read_text())
        render(argparse.Namespace(**saved["args"]), saved["rows"], partial=saved.get("partial", False),
               command=saved.get("original_command", saved["command"]))
        return
    torch.manual_seed(args.seed)
    base = load_data(f"cifar10:{shared('cifar10_convnetjs')}", normalization="imagenet", augment=True)
    n_train = len(base.train)
    train_pool = Subset(base.train, list(range(0, n_train - 5000)))
    holdout = Subset(base.train, list(range(n_train - 5000, n_train)))
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(train_pool), generator=g)
    gate_set = Subset(train_pool, pick[: args.gate_images].tolist())
    ft_set = Subset(train_pool, pick[args.gate_images: args.gate_images + args.finetune_images].tolist())
    extra_set = Subset(train_pool, pick[: args.gate_images + args.finetune_images].tolist())
    rows = []
    for name in args.models.split(","):
        dense, _ = build_model(name)
        load_weights(dense, str(shared(f"resnet_cifar10_akamaster/{WEIGHTS[name]}")), model_name=name)
        dense.eval()
        example = torch.zeros(1, 3, 32, 32)
        dense_macs = count_macs(dense, example).macs
        base.train.augment = False
        acc_test_dense = evaluate(dense, base.val, desc=f"{name} dense test")
        acc_hold_dense = evaluate(dense, holdout, desc=f"{name} dense holdout")
        base.train.augment = True
        for red in [float(r) for r in args.reductions.split(",")]:
            budget = dense_macs / red
            for method in args.methods.split(","):
                model = copy.deepcopy(dense)
                with Timer() as t:
                    if method in TP_METHODS:
                        model = tp_prune(model, method, budget, _Bundle(base, ft_set, base.val), example)
                        macs = count_macs(model, example).macs
                        train(model, ft_set, TrainConfig(epochs=1, lr=args.lr, batch_size=args.batch_size,
                                                         seed=args.seed), desc=f"{method} fine-tune")
                        gate_imgs = 0
                    else:
                        ours = "l1" if method == "l1+extra" else method
                        data = _Bundle(base, gate_set if ours == "autoprune" else ft_set, base.val)
                        cfg = AutoPruneConfig(epochs=1, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                              **_overrides(args.autoprune_opts))
                        r = prune(model, data, f"{budget / 1e6:.6f}MFLOPs", method=ours, autoprune=cfg,
                                  epochs=1 if ours == "autoprune" else 0, finetune_epochs=0,
                                  round_to=args.round_to, seed=args.seed, evaluate_accuracy=False)
                        model, macs = r.model, r.macs_after
                        ft = extra_set if method == "l1+extra" else ft_set
                        train(model, ft, TrainConfig(epochs=1, lr=args.lr, batch_size=args.batch_size,
                                                     seed=args.seed), desc=f"{method} fine-tune")
                        gate_imgs = args.gate_images if ours == "autoprune" else 0
                base.train.augment = False
                acc_test = evaluate(model, base.val, desc="test")
                acc_hold = evaluate(model, holdout, desc="holdout")
                ship = tflite_fp32_parity(model, torch.stack([base.val[i][0] for i in range(16)]))
                base.train.augment = True
                rows.append({**ship, "model": name, "reduction": red, "method": method, "macs": macs,
                             "speedup": dense_macs / macs, "budget_ok": macs <= budget,
                             "acc_test": acc_test, "acc_holdout": acc_hold, "dense_test": acc_test_dense,
                             "dense_holdout": acc_hold_dense, "delta_test_pt": 100 * (acc_test - acc_test_dense),
                             "prune_phase_images": gate_imgs,
                             "finetune_images": len(extra_set) if method == "l1+extra" else len(ft_set),
                             "seconds": t.seconds})
                print(rows[-1], flush=True)
                write_results(f"cifar_compare{args.tag}", {"args": vars(args), "rows": rows, "partial": True}, "")
    render(args, rows, partial=False)


def render(args: argparse.Namespace, rows: list, *, partial: bool, command: str | None = None) -> None:
    note = (" **Partial run: the rows below are the ones that finished before the run was stopped.**"
            if partial else "")
    md = ["# CIFAR-10 ResNets: AutoPrune vs baselines at equal MACs", "" + note, "",
          f"Schedule (identical for every method): fine-tune {args.finetune_images} training images once "
          f"(SGD lr {args.lr}, batch {args.batch_size}, cosine, augmentation); AutoPrune's prune phase trains "
          f"gates and weights on {args.gate_images} further images; `l1+extra` fine-tunes L1 on both sets. "
          "Accuracy on the 1,000 offline CIFAR-10 test images (standard error sqrt(p(1-p)/1000): 0.9 pt at "
          "90 %, 1.5 pt at 70 %) and on training "
          "images 45,000-49,999, which no method fine-tunes on.", "",
          md_table(rows, ["model", "reduction", "method", "speedup", "acc_test", "acc_holdout", "delta_test_pt",
                          "prune_phase_images", "finetune_images", "tflite_fp32_rel", "seconds"]), "",
          "`tflite_fp32_rel`: the final model converted to fp32 TFLite (onnx2tf), max |LiteRT - torch| / max |logit| "
          "on 16 test images (ships if <= 0.001).", "",
          "Torch-Pruning methods: " + "; ".join(f"`{k}` = {v}" for k, v in TP_METHODS.items())]
    if command:
        md.insert(2, f"Rows produced by `{command}`; this file was re-rendered from its JSON.")
    extra = {"original_command": command} if command else {}
    write_results(f"cifar_compare{args.tag}", {"args": vars(args), "rows": rows, "partial": partial, **extra},
                  "\n".join(md))


if __name__ == "__main__":
    main()
