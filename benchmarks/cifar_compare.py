"""CIFAR-10 ResNets from the pretrained weights: AutoPrune vs baselines vs Torch-Pruning, at equal MACs and equal
epochs, on a schedule people ship.

Every method prunes the same pretrained model to the same MACs budget (`--reductions`, default 2x and 2.57x,
DepGraph's ResNet-56 point) and gets the same number of training epochs in total on all CIFAR-10 training images
except a 5,000-image holdout (images 45,000-49,999): AutoPrune's gate epochs count toward that total (it trains
gates and weights together for `--gate-epochs`, then fine-tunes for the rest), every other method fine-tunes for
all of them. Every method distils from the dense model with the same setting (`--no-distill` turns it off for
all). Accuracy on the 1,000 CIFAR-10 test images available offline and on the holdout, each with its standard
error sqrt(p(1-p)/n); the holdout was seen by the pretrained dense nets, not by any fine-tuning here. Each final
model is also converted to fp32 TFLite and its LiteRT parity recorded.

The results file gets each row as soon as it finishes; a rerun with the same settings skips the rows already
there, so an interrupted run continues where it stopped (a run with other settings needs another `--tag`).

    python benchmarks/cifar_compare.py                          # ResNet-56, 2x and 2.57x, 15 epochs, 5 methods
    python benchmarks/cifar_compare.py --device cuda --precision auto --total-epochs 100   # the long GPU schedule
    python benchmarks/cifar_compare.py --models cifar_resnet20 --train-images 2048 --total-epochs 1 --tag _smoke
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune_edge.autoprune import AutoPruneConfig  # noqa: E402
from autoprune_edge.data import load_data  # noqa: E402
from autoprune_edge.device import resolve_runtime  # noqa: E402
from autoprune_edge.layers import custom_pruners_for  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402
from autoprune_edge.pruning import prune  # noqa: E402
from autoprune_edge.train import TrainConfig, evaluate, train  # noqa: E402
from benchmarks.common import (RESULTS, BundleView, Timer, code_commit, md_table, pretrained_cifar_resnet, shared,  # noqa: E402
                               std_err, tflite_fp32_parity, write_results)

TP_METHODS = {"tp-magnitude": "Torch-Pruning MetaPruner, GroupMagnitudeImportance(p=2), local, iterative",
              "tp-taylor": "Torch-Pruning MetaPruner, GroupTaylorImportance, global, iterative"}


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


def _key(row: dict) -> tuple:
    return row["model"], row["reduction"], row["method"]


def schedule_of(args: argparse.Namespace) -> dict:
    """The settings a row depends on: rows are only mixed with rows of the same schedule."""
    keys = ("total_epochs", "gate_epochs", "train_images", "batch_size", "lr", "round_to", "seed", "distill",
            "distill_alpha", "distill_temperature", "autoprune_opts", "precision")
    return {k: getattr(args, k) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cifar_resnet56")
    ap.add_argument("--reductions", default="2,2.57")
    ap.add_argument("--methods", default="autoprune,l1,tp-taylor,taylor,tp-magnitude")
    ap.add_argument("--total-epochs", type=float, default=15, help="training epochs every method gets in total")
    ap.add_argument("--gate-epochs", type=float, default=3, help="AutoPrune's share of them spent training gates")
    ap.add_argument("--train-images", type=int, default=0,
                    help="training images used (default 0: all 45,000 outside the holdout)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--round-to", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-distill", dest="distill", action="store_false")
    ap.add_argument("--distill-alpha", type=float, default=0.9)
    ap.add_argument("--distill-temperature", type=float, default=2.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tag", default="_full")
    ap.add_argument("--autoprune-opts", default="",
                    help="AutoPruneConfig overrides, e.g. coupling_exponent=1,lr_gates=0.01 (probes; default: none)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the existing .json")
    ap.add_argument("--rerun", default="", metavar="METHODS",
                    help="run these methods again at --reductions, replacing their saved rows (e.g. after a fix)")
    ap.add_argument("--merge", type=Path, metavar="JSON",
                    help="add the rows of another results file of the same schedule (a run in another checkout), "
                         "replacing rows of the same model, reduction and method; then rewrite the .md")
    args = ap.parse_args()
    rt = resolve_runtime(args.device, args.precision)
    args.precision = rt.precision  # "auto" resolved: the schedule records what ran
    name = f"cifar_compare{args.tag}"
    saved = json.loads((RESULTS / f"{name}.json").read_text()) if (RESULTS / f"{name}.json").exists() else None
    if saved and saved.get("schedule") != schedule_of(args):
        sys.exit(f"{name}.json holds rows of another schedule ({saved.get('schedule')}); pass another --tag")
    rows: list[dict] = list(saved["rows"]) if saved else []
    if args.merge:
        other = json.loads(args.merge.read_text())
        if other.get("schedule") != schedule_of(args):
            sys.exit(f"{args.merge} holds rows of another schedule ({other.get('schedule')})")
        new = {_key(r) for r in other["rows"]}
        rows = [r for r in rows if _key(r) not in new] + list(other["rows"])
    if args.render_only or args.merge:
        render(args, rows, rt)
        return
    again = {(m, float(red), meth) for m in args.models.split(",") for red in args.reductions.split(",")
             for meth in filter(None, args.rerun.split(","))}
    rows = [r for r in rows if _key(r) not in again]
    done = {_key(r) for r in rows}
    torch.manual_seed(args.seed)
    base = load_data(f"cifar10:{shared('cifar10_convnetjs')}", normalization="imagenet", augment=True)
    n_train = len(base.train)
    pool = list(range(0, n_train - 5000))
    if args.train_images:
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed))[: args.train_images]
        pool = sorted(pool[i] for i in pick.tolist())
    train_set = Subset(base.train, pool)
    holdout = Subset(base.train, list(range(n_train - 5000, n_train)))
    data = BundleView(base, train_set, base.val)
    probe = None
    for model_name in args.models.split(","):
        dense = pretrained_cifar_resnet(model_name)
        dense.eval()
        example = torch.zeros(1, 3, 32, 32)
        dense_macs = count_macs(dense, example).macs
        base.train.augment = False
        acc_test_dense = evaluate(dense, base.val, desc=f"{model_name} dense test", rt=rt)
        acc_hold_dense = evaluate(dense, holdout, desc=f"{model_name} dense holdout", rt=rt)
        probe = torch.stack([base.val[i][0] for i in range(16)])
        base.train.augment = True
        for red in [float(r) for r in args.reductions.split(",")]:
            budget = dense_macs / red
            for method in args.methods.split(","):
                if (model_name, red, method) in done:
                    print(f"skip {model_name} {red:g}x {method}: already in {name}.json", flush=True)
                    continue
                model = copy.deepcopy(dense)
                teacher = dense if args.distill else None
                with Timer() as t:
                    if method in TP_METHODS:
                        model = tp_prune(model, method, budget, data, example)
                        macs = count_macs(model, example).macs
                        train(model, train_set, TrainConfig(epochs=args.total_epochs, lr=args.lr,
                                                            batch_size=args.batch_size, seed=args.seed,
                                                            kd_alpha=args.distill_alpha if args.distill else 0.0,
                                                            kd_temperature=args.distill_temperature),
                              teacher=teacher, desc=f"{method} fine-tune", rt=rt)
                        gate = 0.0
                    else:
                        gate = args.gate_epochs if method == "autoprune" else 0.0
                        cfg = AutoPruneConfig(epochs=gate, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                              **_overrides(args.autoprune_opts)) if method == "autoprune" else None
                        r = prune(model, data, f"{budget / 1e6:.6f}MFLOPs", method=method, autoprune=cfg,
                                  epochs=gate, finetune_epochs=args.total_epochs - gate, lr=args.lr,
                                  batch_size=args.batch_size, distill=args.distill, distill_alpha=args.distill_alpha,
                                  distill_temperature=args.distill_temperature, round_to=args.round_to,
                                  seed=args.seed, evaluate_accuracy=False, device=args.device,
                                  precision=args.precision)
                        model, macs = r.model, r.macs_after
                base.train.augment = False
                acc_test = evaluate(model, base.val, desc="test", rt=rt)
                acc_hold = evaluate(model, holdout, desc="holdout", rt=rt)
                base.train.augment = True
                rows.append({
                    "model": model_name, "reduction": red, "method": method, "macs": macs,
                    "speedup": dense_macs / macs, "budget_ok": macs <= budget, "acc_test": acc_test,
                    "se_test": std_err(acc_test, len(base.val)), "acc_holdout": acc_hold,
                    "se_holdout": std_err(acc_hold, len(holdout)), "dense_test": acc_test_dense,
                    "dense_holdout": acc_hold_dense, "delta_test_pt": 100 * (acc_test - acc_test_dense),
                    "delta_holdout_pt": 100 * (acc_hold - acc_hold_dense), "gate_epochs": gate,
                    "finetune_epochs": args.total_epochs - gate, "train_images": len(train_set),
                    "wall_min": t.seconds / 60, "commit": code_commit(), **tflite_fp32_parity(model, probe)})
                print({k: v for k, v in rows[-1].items()}, flush=True)
                render(args, rows, rt)
    render(args, rows, rt)


def _tied(rows: list[dict], key: str) -> dict[tuple, str]:
    """Per (model, reduction): 'best' for the top row, 'tied' within one standard error of the difference."""
    out: dict[tuple, str] = {}
    se = key.replace("acc", "se")
    for grp in {(r["model"], r["reduction"]) for r in rows}:
        rs = [r for r in rows if (r["model"], r["reduction"]) == grp]
        best = max(rs, key=lambda r: r[key])
        for r in rs:
            gap = best[key] - r[key]
            out[_key(r)] = (
                "best" if r is best else "tied" if gap <= math.hypot(best[se], r[se]) else "")
    return out


def render(args: argparse.Namespace, rows: list, rt) -> None:
    test, hold = _tied(rows, "acc_test"), _tied(rows, "acc_holdout")
    table = []
    for r in sorted(rows, key=lambda r: (r["model"], r["reduction"], -r["acc_test"])):
        k = _key(r)
        table.append({**r, "test_%": f"{100 * r['acc_test']:.2f} ± {100 * r['se_test']:.2f}",
                      "holdout_%": f"{100 * r['acc_holdout']:.2f} ± {100 * r['se_holdout']:.2f}",
                      "dense test/holdout %": f"{100 * r['dense_test']:.2f} / {100 * r['dense_holdout']:.2f}",
                      "rank test/holdout": f"{test[k] or '–'} / {hold[k] or '–'}",
                      "epochs gate+ft": f"{r['gate_epochs']:g}+{r['finetune_epochs']:g}",
                      "commit": r.get("commit", "not recorded")})
    todo = [f"{m} {red}x {meth}" for m in args.models.split(",") for red in args.reductions.split(",")
            for meth in args.methods.split(",")
            if (m, float(red), meth) not in {_key(r) for r in rows}]
    md = ["# CIFAR-10 ResNets: AutoPrune vs baselines at equal MACs and equal epochs", "",
          f"Schedule (identical for every method): {args.total_epochs:g} epochs in total on "
          f"{rows[0]['train_images'] if rows else '?'} training images (SGD lr {args.lr}, batch {args.batch_size}, "
          f"cosine, crop+flip), AutoPrune spending {args.gate_epochs:g} of them training gates and weights together; "
          + (f"every method distils from the dense model (alpha {args.distill_alpha}, T {args.distill_temperature}). "
             if args.distill else "no distillation. ")
          + f"Trained on {rt.device} in {rt.precision}. Accuracy ± one standard error on the 1,000 offline test "
          "images and on training images 45,000-49,999 (held out of every fine-tuning here). `rank`: `best`, or "
          "`tied` when within one standard error of the difference to the best at that budget. `tflite_fp32_rel`: "
          "the final model converted to fp32 TFLite, max |LiteRT - torch| / max |logit| on 16 test images "
          "(ships if <= 0.001). `wall_min`: minutes for the row (pruning, training, evaluation).", "",
          md_table(table, ["model", "reduction", "method", "speedup", "test_%", "holdout_%", "dense test/holdout %",
                           "delta_test_pt", "delta_holdout_pt", "rank test/holdout", "epochs gate+ft",
                           "tflite_fp32_rel", "wall_min", "commit"]), "",
          "Torch-Pruning methods: " + "; ".join(f"`{k}` = {v}" for k, v in TP_METHODS.items())]
    if todo:
        md += ["", f"**Not run yet ({len(todo)} rows):** " + ", ".join(todo)
               + ". Rerun the same command to continue; finished rows are kept."]
    write_results(f"cifar_compare{args.tag}", {"args": vars(args), "schedule": schedule_of(args), "rows": rows,
                                              "partial": bool(todo)}, "\n".join(md))


if __name__ == "__main__":
    main()
