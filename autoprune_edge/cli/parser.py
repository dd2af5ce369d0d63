"""The argparse tree of `autoprune-edge`.

Torch-free on purpose: `measure` runs on a board with only numpy + LiteRT, so each command's module is
imported when that command runs (`_command`), and the method list for `--method` is read from the
methods registry only when help is printed (`_MethodListFormatter`).
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from .. import __version__
from ..converters.formats import DEFAULT_FORMATS, INT8_IO, formats_help
from ..converters.parity import ParityThresholds

EXIT_USER_ERROR = 2
METHOD_HELP = "autoprune (learned gates, default), or a registered channel criterion"


def _command(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    """The command ``func`` of ``autoprune_edge.cli.<module>``, imported when it runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(f"autoprune_edge.cli.{module}"), func)(args)

    return run


class _MethodListFormatter(argparse.HelpFormatter):
    """Help that lists every registered pruning method (imports the registry, and torch, only for --help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest == "method":
            from ..methods import METHODS  # torch: only when help is shown (see the module docstring)

            return f"{', '.join(METHODS)} (default autoprune: learned gates; the others score channels once)"
        if action.dest == "data":
            from ..data import data_sources

            return " | ".join(s.usage for s in data_sources())
        if action.dest == "task":
            from ..tasks import TASKS

            return (f"{', '.join(TASKS)}; default: what --data holds. segment and detect prune with the task's loss "
                    "and score mIoU / mAP@0.5")
        return action.help


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), like every other user error here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def parity_flags(p: argparse.ArgumentParser) -> None:
    """Parity limits shared by build and convert (defaults: autoprune_edge.converters.parity.ParityThresholds)."""
    d = ParityThresholds()
    g = p.add_argument_group("parity against torch on held-out images")
    g.add_argument("--parity-samples", type=int, default=64, help="validation images to compare on (default 64)")
    g.add_argument("--parity-fp32-rel", type=float, help=f"max |diff| / max |logit| for onnx, tflite-fp32 "
                   f"(default {d.fp32_rel:g})")
    g.add_argument("--parity-fp16-top1", type=float, help=f"min top-1 agreement, tflite-fp16 (default {d.fp16_top1:g})")
    g.add_argument("--parity-fp16-cosine", type=float, help=f"min logit cosine, tflite-fp16 (default {d.fp16_cosine:g})")
    g.add_argument("--parity-int8-top1", type=float, help=f"min top-1 agreement, tflite-int8 (default {d.int8_top1:g})")
    g.add_argument("--parity-int8-cosine", type=float, help=f"min logit cosine, tflite-int8 (default {d.int8_cosine:g})")
    g.add_argument("--allow-parity-failure", action="store_true",
                   help="write failing artifacts too (marked as failing); default: write the ones that pass, "
                        "withhold the failing ones and exit 2")
    p.add_argument("--int8-io", choices=INT8_IO, default="uint8",
                   help="input/output tensor type of model_int8.tflite (default uint8: image models then take "
                        "raw 0..255 RGB pixels, the normalisation inside, as MediaPipe and the Task Library want)")


def training_flags(p: argparse.ArgumentParser) -> None:
    """How pruning trains: the same flags on build and prune (they mean what `prune()`'s arguments mean)."""
    g = p.add_argument_group("pruning and training")
    g.add_argument("--task", help="what the model is for (listed when help is shown)")
    g.add_argument("--method", default="autoprune", help=METHOD_HELP)
    g.add_argument("--ignore", action="append", metavar="MODULE",
                   help="a module whose layers keep all their channels (name as in model.named_modules(), e.g. "
                        "backbone or head.cls; repeatable)")
    g.add_argument("--epochs", type=float, help="AutoPrune gate-training epochs (default 1; one-shot methods take none)")
    g.add_argument("--finetune-epochs", type=float, default=1.0, help="fine-tuning epochs after compaction (default 1)")
    g.add_argument("--lr", type=float, default=0.01, help="learning rate of the weights (default 0.01)")
    g.add_argument("--batch-size", type=int,
                   help="training batch size of every phase (default 64 while training gates, 32 fine-tuning)")
    g.add_argument("--granularity", default="structured", choices=["structured", "unstructured"])
    g.add_argument("--ste", default=None, choices=["identity", "leaky", "sigmoid", "softplus"],
                   help="straight-through derivative for the gates (AutoPrune; default softplus for channel "
                        "gates, sigmoid for per-weight gates)")
    g.add_argument("--lr-gates", type=float, help="learning rate of the gates (default 0.005)")
    g.add_argument("--cost-exponent", type=float,
                   help="the budget penalty pushes each gate by (its cost)^this: 1 = importance per MAC, "
                        "0 = all gates alike (default 1)")
    g.add_argument("--speed-weight", type=float,
                   help="under a MACs or params budget: the share of each gate's push that comes from the target's "
                        "predicted latency (all its precisions) instead of MACs/params, so channels that are slow "
                        "on the target go first; 0 = MACs alone (default 0)")
    g.add_argument("--no-speed-exchange", dest="speed_exchange", action="store_false",
                   help="under a MACs or params budget with a target, the final selection trades blocks of channels "
                        "between layers when the target's profile predicts that faster and the kept channel scores "
                        "do not fall; this keeps the selection by scores alone")
    g.add_argument("--regrow", action="store_true",
                   help="unstructured only: while fine-tuning, every 100 steps swap each layer's smallest weights "
                        "for the pruned ones with the largest gradient (RigL-style; counts per layer stay)")
    g.add_argument("--distill", action="store_true", help="fine-tune with distillation from the dense model")
    g.add_argument("--distill-alpha", type=float, default=0.9, help="weight of the distillation term (0, 1]")
    g.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature of distillation")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N | mps; conversion and "
                        "profiling always run on the CPU")
    g.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                   help="training precision: fp32 (default, bit-reproducible), bf16/fp16 autocast, or auto "
                        "(bf16 on CPUs and GPUs that have it, else fp16 + loss scaling on CUDA, else fp32)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout; no progress")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="autoprune-edge", description="Prune a PyTorch vision model to a device "
                                 "budget and ship it as ONNX/TFLite. FLOPs here means multiply-accumulates (MACs).")
    ap.add_argument("--version", action="version", version=f"autoprune-edge {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("build", formatter_class=_MethodListFormatter,
                       help="prune, convert, verify and profile in one go (the main job)")
    b.add_argument("--target", required=True, help="target profile name or path to a .toml file")
    b.add_argument("--budget", required=True, action="append",
                   help="e.g. 100MFLOPs, 1.5Mparams, 25ms, 512KB; repeat or comma-separate for several")
    b.add_argument("--model", default="mobilenet_v2", help="torchvision name, zoo name or pkg.module:factory")
    b.add_argument("--weights", help="local state-dict file (.pth/.safetensors) or a torchvision weights name")
    b.add_argument("--data", default="synthetic", help="a data spec (listed when help is shown)")
    b.add_argument("--out", default="out", help="parent folder; results go to OUT/NAME (default: out)")
    b.add_argument("--name", help="result folder name (default: MODEL-TARGET)")
    b.add_argument("--formats", help=f"comma list of {formats_help()} (default: the target profile's "
                   "default_formats; TFLite implies onnx)")
    b.add_argument("--calib-samples", type=int, default=200,
                   help="training images used to calibrate int8 (default 200)")
    b.add_argument("--qat-epochs", type=float, default=0.0,
                   help="quantisation-aware fine-tuning epochs before conversion, for when int8 post-training "
                        "quantisation alone misses (default 0; needs tflite-int8 among the formats)")
    parity_flags(b)
    training_flags(b)
    b.add_argument("--pretrain-epochs", type=float, default=None,
                   help="dense training epochs before pruning (default: 1 without --weights, else 0)")
    b.add_argument("--input-size", type=int, help="square input side (default: the model's or the data's)")
    b.add_argument("--compare", action="append", help="extra target(s) to predict in the report")
    b.add_argument("--allow-download", action="store_true", help="allow downloading torchvision weights")
    b.add_argument("--seed", type=int, default=0)
    _common(b)
    b.set_defaults(func=_command("ship", "cmd_build"))

    p = sub.add_parser("prune", formatter_class=_MethodListFormatter,
                       help="prune a model to a budget and save the compact model (plan + safetensors)")
    p.add_argument("--model", required=True)
    p.add_argument("--budget", required=True, action="append")
    p.add_argument("--data", help="data to fine-tune and evaluate on (omit for a structure-only run)")
    training_flags(p)
    p.add_argument("--checkpoint-dir", help="where per-epoch checkpoints go (default: .OUT.checkpoint beside OUT)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--target", help="target profile (channel rounding, latency/memory budgets)")
    p.add_argument("--weights")
    p.add_argument("--input-size", type=int)
    p.add_argument("--allow-download", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _common(p)
    p.set_defaults(func=_command("ship", "cmd_prune"))

    c = sub.add_parser("convert", help="export a (pruned) model to ONNX/TFLite and check parity")
    c.add_argument("model", help="folder written by 'prune', or a model name")
    c.add_argument("--formats", default=",".join(DEFAULT_FORMATS), help=f"comma list of {formats_help()}")
    c.add_argument("--calib-data", help="data for int8 calibration (train split) and parity (val split)")
    c.add_argument("--calib-samples", type=int, default=200)
    parity_flags(c)
    c.add_argument("--weights")
    c.add_argument("--input-shape", help="e.g. 1,3,224,224 (default: from the plan or the model)")
    c.add_argument("--no-measure", action="store_true", help="skip host latency measurement")
    c.add_argument("--out", required=True)
    _common(c)
    c.set_defaults(func=_command("ship", "cmd_convert"))

    pr = sub.add_parser("profile", help="predicted cost on a target (torch model) or counted/measured (.tflite)")
    pr.add_argument("model", help="model name, folder written by 'prune', or a .tflite file")
    pr.add_argument("--target", default="host")
    pr.add_argument("--input-shape")
    pr.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    pr.add_argument("--threads", type=int)
    pr.add_argument("--weights")
    pr.add_argument("--runs", type=int, default=50, help="timed runs for .tflite measurement")
    _common(pr)
    pr.set_defaults(func=_command("examine", "cmd_profile"))

    cp = sub.add_parser("compare", help="predicted latency/memory/size of one model on several targets")
    cp.add_argument("model")
    cp.add_argument("--targets", required=True, help="comma list, e.g. raspberrypi4,host")
    cp.add_argument("--input-shape")
    cp.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                    help="default: each target's own default precision (int8 on the Edge TPU and MCUs)")
    cp.add_argument("--budget", action="append", help="e.g. 25ms, 512KB, 4MB; repeat or comma-separate")
    cp.add_argument("--plot", help="write a bar chart PNG here")
    cp.add_argument("--weights")
    _common(cp)
    cp.set_defaults(func=_command("examine", "cmd_compare"))

    me = sub.add_parser("measure", help="time .tflite files with LiteRT here and record what 'calibrate' needs "
                                        "(needs only numpy + ai-edge-litert: run it on the device)")
    me.add_argument("models", nargs="*", help=".tflite file(s)")
    me.add_argument("--suite", action="store_true",
                    help="time the fixed calibration suite (synthetic kernels and small networks, written here) "
                         "instead of your files; feed the result to 'calibrate --target T --measurements'")
    me.add_argument("--precision", default="fp32", help="--suite: fp32, int8 or fp32,int8 (default fp32)")
    me.add_argument("--rounds", type=int, default=2, help="--suite: interleaved rounds, fastest kept (default 2)")
    me.add_argument("--threads", default="1", help="threads (--suite: a comma list such as 1,4 also fits the "
                                                  "thread scaling)")
    me.add_argument("--runs", type=int, default=50)
    me.add_argument("--warmup", type=int, default=10)
    me.add_argument("--delegate", help="external delegate library to load, e.g. libedgetpu.so.1")
    me.add_argument("--out", help="write the measurements JSON here")
    me.add_argument("--append", action="store_true", help="add to an existing --out file instead of replacing it")
    _common(me)
    me.set_defaults(func=_command("board", "cmd_measure"))

    ca = sub.add_parser("calibrate", help="refit a target profile to measured latencies and write a new TOML")
    ca.add_argument("--target", required=True, help="profile to refit (name or .toml path)")
    ca.add_argument("--measurements", help="JSON written by 'measure' on the device (default for host: "
                                           "time a microbenchmark here)")
    ca.add_argument("--out", help="new profile TOML (default: TARGET-calibrated.toml)")
    ca.add_argument("--statistic", choices=["median_ms", "p10_ms", "min_ms", "mean_ms"],
                    help="which latency statistic to fit (default: median_ms; p10_ms for the host microbenchmark)")
    ca.add_argument("--quick", action="store_true", help="host microbenchmark: fewer networks")
    _common(ca)
    ca.set_defaults(func=_command("board", "cmd_calibrate"))

    t = sub.add_parser("targets", help="list target profiles, or 'targets show NAME'")
    t.add_argument("action", nargs="?", choices=["list", "show"])
    t.add_argument("name", nargs="?")
    _common(t)
    t.set_defaults(func=_command("examine", "cmd_targets"))
    return ap
