"""The main job, `build`: model + data -> prune to budget -> convert -> verify -> profile -> artifacts.

Also `convert`, the artifact half on its own, which the CLI's `convert` command and `build` share.

Parity policy (documented in the README): every artifact is run against torch on held-out inputs
(validation images never used for int8 calibration) and judged with ``ParityThresholds``. A failing
artifact makes `build` raise ParityError *before* anything is written (the message names the artifact,
by how much it failed and the first diverging layer). With ``allow_parity_failure=True`` the folder is
written anyway and every failing artifact is marked ``"parity_ok": false`` with its reasons in the
model card and the reports.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import progress
from .budget import Budget, parse_budgets
from .converters.edgetpu import edgetpu_sram_bytes as _target_sram
from .converters.parity import FORMAT_PRECISION, ParityThresholds
from .errors import AutoPruneEdgeError, BudgetError, ConversionError, ParityError
from .outputs import check_writable, staged_dir

FORMATS = ("onnx", "tflite-fp32", "tflite-fp16", "tflite-int8", "coreml")
DEFAULT_FORMATS = ("onnx", "tflite-fp32")
# Kept for callers of the first API version; the defaults now live in ParityThresholds.
PARITY_FP32_REL = ParityThresholds().fp32_rel
PARITY_INT8_COSINE = ParityThresholds().int8_cosine


def parse_formats(formats: str | list[str] | tuple[str, ...] | None,
                  default: tuple[str, ...] = DEFAULT_FORMATS) -> tuple[str, ...]:
    """Validate a format list; TFLite implies ONNX (it is converted from, and shipped with, the ONNX file)."""
    if formats is None:
        formats = default
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise AutoPruneEdgeError(f"unknown format {bad[0] if bad else '(none)'!r}; choose from {', '.join(FORMATS)}")
    if any(f.startswith("tflite") for f in items) and "onnx" not in items:
        items.insert(0, "onnx")
    order = {f: i for i, f in enumerate(FORMATS)}
    return tuple(sorted(dict.fromkeys(items), key=order.__getitem__))


@dataclass
class Artifact:
    format: str
    path: str
    bytes: int
    parity: dict[str, float] | None = None
    parity_ok: bool | None = None  # None: not run numerically (Core ML on Linux)
    macs_counted: int | None = None  # counted from the file's own graph, independently of torch
    host_latency_ms: dict[str, float] = field(default_factory=dict)  # threads -> median ms
    io: dict[str, Any] | None = None
    precision: str | None = None
    failures: list[str] = field(default_factory=list)  # why it fails parity / verification (empty: ok)
    divergence: dict[str, Any] | None = None  # first diverging layer, when it fails
    metadata: dict[str, Any] | None = None  # what was embedded into the file
    edgetpu: dict[str, Any] | None = None  # Edge TPU readiness (int8 TFLite)
    coreml: dict[str, Any] | None = None  # Core ML spec summary
    verified_by: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    def failure_line(self) -> str:
        where = f"; {self.divergence['summary']}" if self.divergence and self.divergence.get("summary") else ""
        return f"{self.format} ({self.path}): {', '.join(self.failures)}{where}"


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() \
        else path.stat().st_size


def convert(model: nn.Module, example: torch.Tensor, out_dir: Path, *, formats: str | tuple[str, ...] | None = None,
            calib: torch.Tensor | None = None, heldout: torch.Tensor | None = None, measure: bool = True,
            measure_runs: int = 30, thresholds: ParityThresholds | dict | None = None,
            labels: list[str] | None = None, mean: list[float] | None = None, std: list[float] | None = None,
            name: str = "model", localize: bool = True, edgetpu_sram_bytes: int | None = None) -> list[Artifact]:
    """Write the requested artifacts into `out_dir` (which must exist) and check each against torch.

    ``heldout`` (NCHW, normalised) are the parity inputs; they must not overlap ``calib`` (the int8
    calibration samples). Failing artifacts are returned with ``failures`` set, not raised: the caller
    decides (``build`` raises unless told otherwise). With ``labels`` (+ mean/std) the .tflite files get
    embedded metadata and the Core ML package gets the labels as user metadata. Every int8 .tflite gets
    an Edge TPU readiness check against ``edgetpu_sram_bytes`` of parameter cache (default ~7 MiB).
    """
    from .converters.onnx_export import export_onnx, run_onnx
    from .converters.parity import compare

    fmts = parse_formats(formats)
    th = ParityThresholds.coerce(thresholds)
    out_dir = Path(out_dir)
    model = model.eval()
    heldout = heldout if heldout is not None else torch.randn(8, *example.shape[1:],
                                                               generator=torch.Generator().manual_seed(123))
    x = heldout.detach().float().numpy()
    with torch.no_grad():
        ref = model(heldout).numpy()
    arts: list[Artifact] = []

    def judge(art: Artifact, got: np.ndarray) -> None:
        p = compare(ref, got)
        art.parity = p.to_dict()
        art.failures = th.failures(art.format, p)
        art.parity_ok = not art.failures

    onnx_path = out_dir / "model.onnx"
    if "onnx" in fmts:
        with progress.task("export ONNX", total=None):
            export_onnx(model, example, onnx_path)
        art = Artifact("onnx", onnx_path.name, onnx_path.stat().st_size, precision="fp32",
                       verified_by="onnxruntime (CPU) vs torch")
        judge(art, np.concatenate([run_onnx(onnx_path, x[i:i + 1]) for i in range(len(x))]))
        if art.failures and localize:
            from .converters.divergence import locate_torch_vs_onnx

            tol = max(th.fp32_rel, 1e-4)
            art.divergence = _safe(lambda: _div(locate_torch_vs_onnx(model, onnx_path, x, tol=tol)))
        arts.append(art)

    precisions = [f.split("-", 1)[1] for f in fmts if f.startswith("tflite-")]
    if precisions:
        arts += _tflite_artifacts(model, onnx_path, out_dir, precisions, calib, x, judge, th, arts, labels=labels,
                                  mean=mean, std=std, name=name, measure=measure, measure_runs=measure_runs,
                                  localize=localize, sram=edgetpu_sram_bytes)
    if "coreml" in fmts:
        arts.append(_coreml_artifact(model, example, out_dir, ref, labels=labels, mean=mean, std=std, name=name))
    return arts


def _safe(locate: Any) -> dict[str, Any]:
    """Run a divergence search; its own failure must not hide the parity failure it explains."""
    try:
        return locate()
    except Exception as e:  # noqa: BLE001 - diagnostics are best effort
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return {"summary": f"could not localise the divergence ({type(e).__name__}: {msg})", "layer": None}


def _div(d: Any) -> dict[str, Any]:
    out = d.to_dict()
    out["summary"] = d.summary()
    return out


def _tflite_artifacts(model, onnx_path, out_dir, precisions, calib, x, judge, th, prior, *, labels, mean, std, name,
                      measure, measure_runs, localize, sram=None) -> list[Artifact]:
    from . import __version__
    from .converters.litert import run_tflite, tflite_io_details
    from .converters.tflite import onnx_to_tflite
    from .converters.tflite_graph import count_tflite_macs

    if "int8" in precisions and calib is None:
        raise ConversionError("tflite-int8 needs calibration data; pass --calib-data (or --data for build)")
    with progress.task(f"convert to TFLite ({', '.join(precisions)}) with onnx2tf", total=None):
        files = onnx_to_tflite(onnx_path, out_dir, precisions=precisions,
                               calib=calib.numpy() if calib is not None else None)
    arts: list[Artifact] = []
    for prec in precisions:
        path = Path(files[prec])
        fmt = f"tflite-{prec}"
        io = tflite_io_details(path)
        art = Artifact(fmt, path.name, 0, precision=prec, io=io, verified_by="LiteRT interpreter vs torch")
        if labels and mean and std:
            from .converters.tflite_metadata import embed_metadata

            info = {"layout": io["input"]["layout"], "input_shape": io["input"]["shape"], "precision": prec,
                    "input_quantization": {k: io["input"][k] for k in ("dtype", "scale", "zero_point")},
                    "output_quantization": {k: io["output"][k] for k in ("dtype", "scale", "zero_point")},
                    "pixel_range": [0.0, 1.0], "producer": f"autoprune-edge {__version__}"}
            art.metadata = embed_metadata(path, name=name, description=f"{name} ({fmt}), pruned by autoprune-edge",
                                          version=__version__, labels=list(labels), mean=list(mean), std=list(std),
                                          info=info)
        art.bytes = path.stat().st_size
        judge(art, run_tflite(path, x))
        art.macs_counted = count_tflite_macs(path).macs
        if prec == "int8":
            from .converters.edgetpu import EDGETPU_PARAM_SRAM_BYTES, check_edgetpu

            art.edgetpu = check_edgetpu(path, sram_bytes=sram or EDGETPU_PARAM_SRAM_BYTES).to_dict()
        if art.failures and localize:
            art.divergence = _safe(lambda: _blame_tflite(prec, path, onnx_path, x, th, [*prior, *arts]))
        if measure:
            from .profiles.host import measure_all_threads

            with progress.task(f"measure {path.name} on this host (LiteRT)", total=None):
                ms = measure_all_threads(path, runs=measure_runs)
            art.host_latency_ms = {str(t): round(m.median_ms, 4) for t, m in ms.items()}
        arts.append(art)
    return arts


def _blame_tflite(prec: str, path: Path, onnx_path: Path, x: np.ndarray, th: ParityThresholds,
                  done: list[Artifact]) -> dict[str, Any]:
    """Which step broke a failing .tflite: the ONNX export, onnx2tf, or int8 quantisation (and where)."""
    from .converters.divergence import Divergence, locate_onnx_vs_tflite

    onnx_art = next((a for a in done if a.format == "onnx"), None)
    if onnx_art is not None and onnx_art.failures:
        d = Divergence("torch -> ONNX export", None, None, None, None, None, "", 0, 0,
                       "the ONNX file it was converted from already differs from torch; see the onnx artifact")
        return _div(d)
    fp32 = next((a for a in done if a.format == "tflite-fp32"), None)
    if prec != "fp32" and fp32 is not None and fp32.failures:
        d = Divergence("ONNX -> TFLite (onnx2tf)", None, None, None, None, None, "", 0, 0,
                       "the fp32 .tflite fails too, so onnx2tf (not quantisation) is the culprit; see tflite-fp32")
        return _div(d)
    if prec == "fp32":
        d = locate_onnx_vs_tflite(onnx_path, path, x, quantized=False, tol=max(th.fp32_rel, 1e-4))
    else:
        cos = th.int8_cosine if prec == "int8" else th.fp16_cosine
        d = locate_onnx_vs_tflite(onnx_path, path, x, quantized=True, tol=min(0.5, 5 * (1.0 - cos)))
        if prec == "fp16":
            d.stage = "fp16 conversion (onnx2tf)"
    return _div(d)


def _coreml_artifact(model, example, out_dir, ref, *, labels, mean, std, name) -> Artifact:
    from .converters.coreml import inspect_mlpackage, torch_to_coreml, verify
    from .layers import export_form
    from .profiles.counting import count_macs

    path = out_dir / "model.mlpackage"
    desc = {"description": f"{name}, pruned by autoprune-edge",
            "input": f"NCHW {list(example.shape)} float32, pixels in [0, 1] normalised with mean {mean} std {std}",
            "output": f"{ref.shape[-1]} class logits", "mean": json.dumps(mean), "std": json.dumps(std)}
    with progress.task("convert to Core ML (mlprogram, fp16) with coremltools", total=None):
        torch_to_coreml(model, example, path, description=desc, labels=labels)
    info = inspect_mlpackage(path)
    with export_form():  # the MACs of the model as converted (ChannelScatter becomes a 1x1 convolution)
        macs = count_macs(model, example).macs
    problems = verify(info, input_shape=list(example.shape), output_shape=[1, *ref.shape[1:]], macs=macs)
    return Artifact("coreml", path.name, _dir_bytes(path), parity=None, parity_ok=None, macs_counted=info.macs,
                    precision="fp16", failures=problems, coreml=info.to_dict(),
                    verified_by="spec check only (Core ML prediction needs macOS): I/O shapes, op list, "
                                "MACs of the MIL program vs torch, fp16 compute")


# -------------------------------------------------------------------------------------------- build
@dataclass
class BuildReport:
    out_dir: Path
    card: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), **self.card}

    @property
    def failing(self) -> list[dict[str, Any]]:
        return [a for a in self.card["artifacts"] if a.get("failures")]


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


def _sample_hashes(x: torch.Tensor) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(s.numpy()).tobytes()).hexdigest() for s in x]


def disjoint_heldout(held: torch.Tensor, calib: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Drop held-out samples that also occur (bit-identical) among the calibration samples.

    Calibration comes from the train split and parity inputs from the validation split, so this is a
    guard against datasets whose splits share images; returns (held-out, number dropped).
    """
    if calib is None or len(calib) == 0:
        return held, 0
    seen = set(_sample_hashes(calib))
    keep = [i for i, h in enumerate(_sample_hashes(held)) if h not in seen]
    if not keep:
        raise AutoPruneEdgeError("every held-out image also occurs in the calibration set; the train and val "
                                 "splits of this data overlap")
    return held[keep], len(held) - len(keep)


def build(model: str = "mobilenet_v2", data: str = "synthetic", target: str = "raspberrypi4",
          budget: str | list[str] = "100MFLOPs", out_dir: str | Path = "out", *, weights: str | None = None,
          name: str | None = None, method: str = "autoprune", epochs: float = 1.0,
          formats: str | tuple[str, ...] | None = None, pretrain_epochs: float | None = None,
          finetune_epochs: float = 1.0, lr: float = 0.01,
          input_size: int | None = None, allow_download: bool = False, measure_runs: int = 30,
          calib_samples: int = 200, parity_samples: int = 64, compare_targets: tuple[str, ...] | None = None,
          parity: ParityThresholds | dict | None = None, allow_parity_failure: bool = False,
          html_report: bool = True, seed: int = 0) -> BuildReport:
    """Prune `model` for `target` under `budget`, convert it, verify every artifact, write out/<name>/.

    ``formats`` defaults to the target profile's ``default_formats``. ``parity`` sets the pass limits
    (see ParityThresholds); a failing artifact raises ParityError and writes nothing unless
    ``allow_parity_failure``.
    """
    from . import __version__
    from .data import calibration_batch, heldout_batch, load_data
    from .models import build_model, load_weights
    from .plan import save_pruned
    from .pruning import prune
    from .report import write_report
    from .targets import load_target
    from .train import TrainConfig, train

    t0 = time.perf_counter()
    budgets: list[Budget] = parse_budgets(budget)
    if not budgets:
        raise BudgetError("no budget given; pass e.g. --budget 100MFLOPs")
    tgt = load_target(target)
    fmts = parse_formats(formats, default=tuple(tgt.default_formats) or DEFAULT_FORMATS)
    formats_from = "--formats" if formats is not None else f"target {tgt.name} default_formats"
    th = ParityThresholds.coerce(parity)
    if calib_samples < 1 or parity_samples < 1:
        raise AutoPruneEdgeError("--calib-samples and --parity-samples must be at least 1")
    name = name or f"{model.replace(':', '_').replace('.', '_')}-{tgt.name}"
    dest = check_writable(Path(out_dir) / name)

    # Model first (cheap, catches typos), then data sized for it. Seeded: initialisation is part of the run.
    torch.manual_seed(seed)
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
        held, dropped = disjoint_heldout(heldout_batch(bundle, parity_samples), calib)
        arts = convert(result.model, example, tmp, formats=fmts, calib=calib, heldout=held,
                       measure_runs=measure_runs, thresholds=th, labels=list(bundle.class_names),
                       mean=list(bundle.mean), std=list(bundle.std), name=name,
                       edgetpu_sram_bytes=_target_sram(tgt))
        (tmp / "labels.txt").write_text("\n".join(bundle.class_names) + "\n")
        targets = [tgt, *(load_target(t) for t in (compare_targets or ()))]
        profiles = _predict(result.model, input_shape, targets, fmts)
        parity_info = {
            "thresholds": th.to_dict(),
            "inputs": f"the first {len(held)} images of the validation split of {bundle.name} data"
                      + (f" ({dropped} dropped: they also occur in the calibration set)" if dropped else ""),
            "n": len(held), "overlap_with_calibration": 0, "dropped_overlapping": dropped,
            "policy": "fp32: max|diff| / max|torch logit| <= fp32_rel; fp16/int8: top-1 agreement and mean logit "
                      "cosine >= thresholds; Core ML: spec check only (prediction needs macOS)",
        }
        calib_info = None if calib is None else {
            "samples": int(len(calib)), "split": "train", "seed": seed,
            "unique": len(set(_sample_hashes(calib))), "layout_given_to_converter": "NHWC",
            "what": "full-integer int8 (TFLiteConverter on onnx2tf's Keras model): per-channel int8 weights, "
                    "int8 activations, int8 input and output tensors, calibrated on these samples"}
        card = _model_card(version=__version__, model=model, spec=spec, data=bundle, target=tgt, budgets=budgets,
                           result=result, artifacts=arts, profiles=profiles, input_shape=input_shape,
                           pretrain_epochs=pretrain_epochs, pretrain_log=pretrain_log,
                           finetune_epochs=finetune_epochs, seconds=time.perf_counter() - t0, formats=fmts,
                           formats_from=formats_from, parity=parity_info, calibration=calib_info,
                           data_spec={"spec": data, "seed": seed, "name": bundle.name,
                                      "train_images": len(bundle.train), "val_images": len(bundle.val),
                                      "input_shape_chw": list(bundle.input_shape)})
        failing = [a for a in arts if a.failures]
        if failing and not allow_parity_failure:
            raise ParityError("parity check failed: " + " | ".join(a.failure_line() for a in failing)
                              + " - nothing was written (pass --allow-parity-failure to keep the files marked "
                                "as failing, or relax the --parity-* thresholds)")
        (tmp / "model_card.json").write_text(json.dumps(card, indent=1, default=_json_default))
        write_report(tmp / "report.md", card)
        if html_report:
            from .report_html import write_html_report

            write_html_report(tmp / "report.html", card)
    return BuildReport(dest, card)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _num_outputs(net: nn.Module, bundle: Any) -> int:
    with torch.no_grad():
        net.eval()
        return int(net(torch.zeros(1, *bundle.input_shape)).shape[-1])


def _shipped_precisions(target: Any, fmts: tuple[str, ...]) -> list[str]:
    """Precisions of the shipped artifacts that the target supports (Core ML counts as fp16)."""
    shipped = {FORMAT_PRECISION[f] for f in fmts if f.startswith("tflite-")} | ({"fp16"} if "coreml" in fmts else set())
    return [p for p in ("fp32", "fp16", "int8") if p in shipped and p in target.precisions]


def _profile_row(p: Any) -> dict[str, Any]:
    row = {"latency_ms": round(p.latency_ms, 3), "peak_memory_bytes": int(p.peak_memory_bytes),
           "model_bytes": int(p.model_bytes), "precision": p.precision, "threads": p.threads}
    warnings = list(getattr(p, "warnings", None) or [])
    if warnings:
        row["warnings"] = warnings
    return row


def _predict(model: nn.Module, input_shape: tuple[int, ...], targets: list[Any],
             fmts: tuple[str, ...] = DEFAULT_FORMATS) -> dict[str, Any]:
    """Predicted cost on the chosen target, the compared ones and every shipped target profile.

    Each row is at the target's default precision (what prune() checks latency/memory budgets at), with
    every shipped precision the target supports under ``by_precision``. A target the cost model cannot
    handle gets an ``error`` instead of numbers rather than failing the build.
    """
    from .profiles.profile import profile
    from .targets import list_targets

    every: dict[str, Any] = {}
    for t in [*targets, *list_targets()]:
        every.setdefault(t.name, t)
    out: dict[str, Any] = {}
    for tname, t in every.items():
        try:
            first = _profile_row(profile(model, input_shape, t))
            rows = {first["precision"]: first}
            for prec in _shipped_precisions(t, fmts):
                if prec not in rows:
                    rows[prec] = _profile_row(profile(model, input_shape, t, precision=prec))
        except AutoPruneEdgeError as e:
            out[tname] = {"error": str(e).splitlines()[0]}
            continue
        out[tname] = {**first, "by_precision": rows, "ram_bytes": int(getattr(t.memory, "ram_bytes", 0) or 0),
                      "description": t.description, "chosen": tname == targets[0].name}
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxscript", "onnxsim", "onnx2tf",
                "tensorflow", "ai-edge-litert", "coremltools", "flatbuffers", "numpy", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _model_card(*, version: str, model: str, spec: Any, data: Any, target: Any, budgets: list[Budget],
                result: Any, artifacts: list[Artifact], profiles: dict[str, Any], input_shape: tuple[int, ...],
                pretrain_epochs: float, pretrain_log: list, finetune_epochs: float, seconds: float,
                formats: tuple[str, ...] = DEFAULT_FORMATS, formats_from: str = "", parity: dict | None = None,
                calibration: dict | None = None, data_spec: dict | None = None) -> dict[str, Any]:
    from .converters.edgetpu import is_edgetpu_target

    achieved = {"macs": result.macs_after, "params": result.params_after}
    pred = profiles.get(target.name, {})
    achieved.update({"latency_ms": pred.get("latency_ms"), "memory_bytes": pred.get("peak_memory_bytes"),
                     "size_bytes": pred.get("model_bytes")})
    arts = [asdict(a) for a in artifacts]
    tfl = next((a for a in artifacts if a.format.startswith("tflite") and a.io), None)
    int8 = next((a for a in artifacts if a.format == "tflite-int8"), None)
    notes = list(result.notes)
    edgetpu = None
    if is_edgetpu_target(target):
        edgetpu = int8.edgetpu if int8 else {"ready": False, "error": "no tflite-int8 artifact: the Edge TPU runs "
                                                                      "only full-integer models; add tflite-int8"}
        if not edgetpu.get("ready"):
            notes.append("Edge TPU readiness check failed; see 'edgetpu' in the model card")
    quant = None
    if int8 is not None and int8.io:
        quant = {**(calibration or {}),
                 "input": {k: int8.io["input"][k] for k in ("dtype", "scale", "zero_point", "shape", "layout")},
                 "output": {k: int8.io["output"][k] for k in ("dtype", "scale", "zero_point", "shape")},
                 "how_to_feed": "q = clip(round(x / scale) + zero_point, -128, 127) on the normalised NHWC input; "
                                "logits = (q_out - zero_point) * scale"}
    failing = [a.format for a in artifacts if a.failures]
    return {
        "autoprune_edge": version,
        "name": model,
        "architecture": asdict(spec),
        "target": target.name,
        "target_description": target.description,
        "flops_convention": "FLOPs = multiply-accumulates (MACs)",
        "budget": [{"text": b.text, "kind": b.kind, "value": b.value, "achieved": achieved.get(b.kind),
                    "met": achieved.get(b.kind) is not None and achieved[b.kind] <= b.value} for b in budgets],
        "method": result.method,
        "macs": {"before": result.macs_before, "after": result.macs_after},
        "params": {"before": result.params_before, "after": result.params_after},
        "channel_round_to": result.round_to,
        "widths": {"before": result.widths_before, "after": result.widths_after,
                   "what": "per layer [in channels, out channels] (features for linear layers)"},
        "equivalence": {"max_abs": result.equivalence_max_abs, "rel": result.equivalence_rel,
                        "what": "compacted model vs the original with pruned channels masked, same inputs"},
        "data": data_spec,
        "accuracy": {"before": result.accuracy_before, "pruned_no_finetune": result.accuracy_pruned,
                     "after": result.accuracy_after, "data": data.description, "synthetic": data.synthetic,
                     "split": f"validation split ({len(data.val)} images)"},
        "training": {"dense_pretrain_epochs": pretrain_epochs, "dense_pretrain_log": pretrain_log,
                     "gate_log": list(getattr(result, "gate_log", None) or []),
                     "finetune_epochs": finetune_epochs, "finetune_log": result.train_log},
        "preprocessing": {
            "input_shape_nchw": list(input_shape), "resize": list(input_shape[2:]), "mean": list(data.mean),
            "std": list(data.std), "pixel_range": [0.0, 1.0],
            "formula": "x = (pixel / 255 - mean) / std per channel",
            "channels": "grayscale" if input_shape[1] == 1 else "RGB",
            "torch_layout": "NCHW", "onnx_layout": "NCHW", "coreml_layout": "NCHW",
            "tflite_layout": (tfl.io["input"]["layout"] if tfl else None),
            "tflite_input_shape": (tfl.io["input"]["shape"] if tfl else None),
            "class_names": data.class_names},
        "formats": {"shipped": list(formats), "chosen_by": formats_from},
        "parity": {**(parity or {}), "failing": failing, "all_ok": not failing},
        "quantization": quant,
        "artifacts": arts,
        "edgetpu": edgetpu,
        "tflite_metadata": ("embedded in every .tflite: TFLITE_METADATA (ModelMetadata: image input with "
                            "NormalizationOptions, labels.txt as TENSOR_AXIS_LABELS, zip-appended) and an "
                            "'autoprune_edge' JSON entry; written without tflite-support, which cannot be "
                            "installed next to onnx2tf's protobuf pin")
        if any(a.metadata for a in artifacts) else None,
        "predicted": profiles,
        "reproduce": {
            "macs": "autoprune-edge profile model_fp32.tflite  (counts MACs from the .tflite graph)",
            "parity": "autoprune_edge.converters.litert.run_tflite(path, x_nchw) vs "
                      "autoprune_edge.load_pruned('pruned')[0](x) on the validation images",
        },
        "notes": notes,
        "versions": _versions(),
        "build_seconds": round(seconds, 1),
    }
