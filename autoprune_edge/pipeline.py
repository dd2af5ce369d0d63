"""The main job, `build`: model + data -> prune to budget -> convert -> verify -> profile -> artifacts.

Also `convert`, the artifact half on its own, which the CLI's `convert` command and `build` share.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import progress
from .budget import Budget, parse_budgets
from .errors import AutoPruneEdgeError, BudgetError, ConversionError, ParityError
from .outputs import check_writable, staged_dir

FORMATS = ("onnx", "tflite-fp32", "tflite-fp16", "tflite-int8")
DEFAULT_FORMATS = ("onnx", "tflite-fp32")
# Relative max-abs tolerance for float artifacts and top-1 agreement floor for quantised ones.
PARITY_FP32_REL = 1e-3
PARITY_FP16_REL = 1e-2
PARITY_INT8_COSINE = 0.98


def parse_formats(formats: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if formats is None:
        return DEFAULT_FORMATS
    items = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise AutoPruneEdgeError(f"unknown format {bad[0] if bad else '(none)'!r}; choose from {', '.join(FORMATS)}")
    if any(f.startswith("tflite") for f in items) and "onnx" not in items:
        items.insert(0, "onnx")  # TFLite is converted from the ONNX file, which is shipped too
    return tuple(dict.fromkeys(items))


@dataclass
class Artifact:
    format: str
    path: str
    bytes: int
    parity: dict[str, float] | None = None
    parity_ok: bool | None = None
    macs_counted: int | None = None  # counted from the file's own graph, independently of torch
    host_latency_ms: dict[str, float] = field(default_factory=dict)  # threads -> median ms
    io: dict[str, Any] | None = None


def convert(model: nn.Module, example: torch.Tensor, out_dir: Path, *, formats: tuple[str, ...] = DEFAULT_FORMATS,
            calib: torch.Tensor | None = None, heldout: torch.Tensor | None = None, measure: bool = True,
            measure_runs: int = 30) -> list[Artifact]:
    """Write the requested artifacts into `out_dir` (which must exist) and check each against torch."""
    from .converters.onnx_export import export_onnx, run_onnx
    from .converters.parity import compare

    out_dir = Path(out_dir)
    model = model.eval()
    heldout = heldout if heldout is not None else torch.randn(8, *example.shape[1:],
                                                               generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        ref = model(heldout).numpy()
    arts: list[Artifact] = []
    onnx_path = out_dir / "model.onnx"
    with progress.task("export ONNX", total=None):
        export_onnx(model, example, onnx_path)
    p = compare(ref, np.concatenate([run_onnx(onnx_path, heldout[i:i + 1].numpy()) for i in range(len(heldout))]))
    arts.append(Artifact("onnx", onnx_path.name, onnx_path.stat().st_size, p.to_dict(), p.ok(PARITY_FP32_REL)))

    precisions = [f.split("-", 1)[1] for f in formats if f.startswith("tflite-")]
    if precisions:
        from .converters.litert import run_tflite, tflite_io_details
        from .converters.tflite import onnx_to_tflite
        from .converters.tflite_graph import count_tflite_macs

        if "int8" in precisions and calib is None:
            raise ConversionError("tflite-int8 needs calibration data; pass --calib-data (or --data for build)")
        with progress.task(f"convert to TFLite ({', '.join(precisions)}) with onnx2tf", total=None):
            files = onnx_to_tflite(onnx_path, out_dir, precisions=precisions,
                                   calib=calib.numpy() if calib is not None else None)
        for prec in precisions:
            path = Path(files[prec])
            got = run_tflite(path, heldout.numpy())
            par = compare(ref, got)
            ok = par.ok(PARITY_FP32_REL if prec == "fp32" else PARITY_FP16_REL) if prec != "int8" \
                else bool(par.cosine >= PARITY_INT8_COSINE)
            art = Artifact(f"tflite-{prec}", path.name, path.stat().st_size, par.to_dict(), ok,
                           macs_counted=count_tflite_macs(path).macs, io=tflite_io_details(path))
            if measure:
                from .profiles.host import measure_all_threads

                with progress.task(f"measure {path.name} on this host (LiteRT)", total=None):
                    ms = measure_all_threads(path, runs=measure_runs)
                art.host_latency_ms = {str(t): round(m.median_ms, 4) for t, m in ms.items()}
            arts.append(art)
    return arts


@dataclass
class BuildReport:
    out_dir: Path
    card: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), **self.card}


def _input_size_for(model_name: str, data_spec: str, input_size: int | None) -> int | None:
    from .models import default_input_size

    if input_size:
        return input_size
    if data_spec.split(":", 1)[0] in ("synthetic", "folder"):
        return default_input_size(model_name)
    return None  # the dataset's native size


def _first_conv_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            return m.in_channels
    return None


def build(model: str = "mobilenet_v2", data: str = "synthetic", target: str = "raspberrypi4",
          budget: str | list[str] = "100MFLOPs", out_dir: str | Path = "out", *, weights: str | None = None,
          name: str | None = None, method: str = "autoprune", epochs: float = 1.0, formats: str | tuple[str, ...] | None = None,
          pretrain_epochs: float | None = None, finetune_epochs: float = 1.0, lr: float = 0.01,
          input_size: int | None = None, allow_download: bool = False, measure_runs: int = 30,
          calib_samples: int = 200, compare_targets: tuple[str, ...] | None = None,
          seed: int = 0) -> BuildReport:
    """Prune `model` for `target` under `budget`, convert it, verify every artifact, write out/<name>/."""
    from . import __version__
    from .data import calibration_batch, heldout_batch, load_data
    from .models import build_model, load_weights
    from .plan import save_pruned
    from .prune import prune
    from .report import write_report
    from .targets import load_target
    from .train import TrainConfig, evaluate, train

    t0 = time.perf_counter()
    budgets: list[Budget] = parse_budgets(budget)
    if not budgets:
        raise BudgetError("no budget given; pass e.g. --budget 100MFLOPs")
    fmts = parse_formats(formats)
    tgt = load_target(target)
    name = name or f"{model.replace(':', '_').replace('.', '_')}-{tgt.name}"
    dest = check_writable(Path(out_dir) / name)

    # Model first (cheap, catches typos), then data sized for it.
    net, spec = build_model(model)
    in_ch = _first_conv_channels(net) or 3
    bundle = load_data(data, input_size=_input_size_for(model, data, input_size), channels=in_ch, seed=seed)
    if bundle.num_classes != _num_outputs(net, bundle):
        net, spec = build_model(model, num_classes=bundle.num_classes)
    if weights:
        load_weights(net, weights, allow_download=allow_download, model_name=spec.name)
    input_shape = (1, *bundle.input_shape)
    if pretrain_epochs is None:
        pretrain_epochs = 0.0 if weights else 1.0
    pretrain_log = []
    if pretrain_epochs > 0:
        progress.log(f"training the dense {model} for {pretrain_epochs:g} epoch(s) on {bundle.name} data first "
                     "(no --weights given)")
        pretrain_log = train(net, bundle.train, TrainConfig(epochs=pretrain_epochs, lr=1e-3, weight_decay=1e-4,
                                                            optimizer="adam", seed=seed), desc="train dense")

    result = prune(net, bundle, budgets, target=tgt, method=method, input_shape=input_shape, epochs=epochs,
                   finetune_epochs=finetune_epochs, lr=lr, seed=seed)
    example = torch.zeros(input_shape)

    with staged_dir(dest) as tmp:
        pruned_dir = tmp / "pruned"
        meta = {"mean": list(bundle.mean), "std": list(bundle.std), "class_names": bundle.class_names,
                "layout": "NCHW", "data": bundle.description}
        save_pruned(pruned_dir, result.model, spec, result.history, input_shape, meta)
        calib = calibration_batch(bundle, calib_samples, seed=seed) if "tflite-int8" in fmts else None
        held = heldout_batch(bundle, 16)
        arts = convert(result.model, example, tmp, formats=fmts, calib=calib, heldout=held,
                       measure_runs=measure_runs)
        (tmp / "labels.txt").write_text("\n".join(bundle.class_names) + "\n")
        profiles = _predict(result.model, input_shape, [tgt.name, *(compare_targets or ())])
        card = _model_card(version=__version__, model=model, spec=spec, data=bundle, target=tgt, budgets=budgets,
                           result=result, artifacts=arts, profiles=profiles, input_shape=input_shape,
                           pretrain_epochs=pretrain_epochs, pretrain_log=pretrain_log,
                           finetune_epochs=finetune_epochs, seconds=time.perf_counter() - t0)
        import json

        (tmp / "model_card.json").write_text(json.dumps(card, indent=1))
        write_report(tmp / "report.md", card)
        failing = [a for a in arts if a.parity_ok is False]
        if failing:
            raise ParityError("; ".join(f"{a.format} differs from torch ({a.parity})" for a in failing)
                              + " - nothing was written")
    return BuildReport(dest, card)


def _num_outputs(net: nn.Module, bundle: Any) -> int:
    with torch.no_grad():
        net.eval()
        return int(net(torch.zeros(1, *bundle.input_shape)).shape[-1])


def _predict(model: nn.Module, input_shape: tuple[int, ...], targets: list[str]) -> dict[str, Any]:
    """Predicted cost on each target profile (None where the cost model is not available yet)."""
    out: dict[str, Any] = {}
    try:
        from .profiles.profile import profile
    except ImportError:
        return out
    for t in dict.fromkeys(targets):
        p = profile(model, input_shape, t)
        out[t] = {"latency_ms": round(p.latency_ms, 3), "peak_memory_bytes": int(p.peak_memory_bytes),
                  "model_bytes": int(p.model_bytes), "precision": p.precision, "threads": p.threads}
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnx2tf", "tensorflow",
                "ai-edge-litert", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _model_card(*, version: str, model: str, spec: Any, data: Any, target: Any, budgets: list[Budget],
                result: Any, artifacts: list[Artifact], profiles: dict[str, Any], input_shape: tuple[int, ...],
                pretrain_epochs: float, pretrain_log: list, finetune_epochs: float, seconds: float) -> dict[str, Any]:
    from dataclasses import asdict

    achieved = {"macs": result.macs_after, "params": result.params_after}
    pred = profiles.get(target.name, {})
    achieved.update({"latency_ms": pred.get("latency_ms"), "memory_bytes": pred.get("peak_memory_bytes"),
                     "size_bytes": pred.get("model_bytes")})
    return {
        "autoprune_edge": version,
        "name": model,
        "architecture": asdict(spec),
        "target": target.name,
        "flops_convention": "FLOPs = multiply-accumulates (MACs)",
        "budget": [{"text": b.text, "kind": b.kind, "value": b.value, "achieved": achieved.get(b.kind),
                    "met": achieved.get(b.kind) is not None and achieved[b.kind] <= b.value} for b in budgets],
        "method": result.method,
        "macs": {"before": result.macs_before, "after": result.macs_after},
        "params": {"before": result.params_before, "after": result.params_after},
        "channel_round_to": result.round_to,
        "widths": {"before": result.widths_before, "after": result.widths_after},
        "equivalence": {"max_abs": result.equivalence_max_abs, "rel": result.equivalence_rel,
                        "what": "compacted model vs the original with pruned channels masked, same inputs"},
        "accuracy": {"before": result.accuracy_before, "pruned_no_finetune": result.accuracy_pruned,
                     "after": result.accuracy_after, "data": data.description, "synthetic": data.synthetic,
                     "split": f"validation split ({len(data.val)} images)"},
        "training": {"dense_pretrain_epochs": pretrain_epochs, "dense_pretrain_log": pretrain_log,
                     "finetune_epochs": finetune_epochs, "finetune_log": result.train_log},
        "preprocessing": {"input_shape_nchw": list(input_shape), "mean": list(data.mean), "std": list(data.std),
                          "torch_layout": "NCHW", "class_names": data.class_names},
        "artifacts": [asdict(a) for a in artifacts],
        "predicted": profiles,
        "notes": result.notes,
        "versions": _versions(),
        "build_seconds": round(seconds, 1),
    }
