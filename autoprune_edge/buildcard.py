"""Gather what a build made and measured into its `ModelCard` (the last stage: it reads every earlier
one and is read by none)."""
from __future__ import annotations

import importlib.metadata as md
import platform
from dataclasses import asdict, dataclass
from typing import Any

from .budget import Budget, measured, within
from .converters.artifact import Artifact
from .converters.edgetpu import is_edgetpu_target
from .converters.formats import parity_notes
from .data import DataBundle
from .modelcard import (Accuracy, BeforeAfter, BudgetLine, Calibration, DataSource, Equivalence, Formats, Outputs,
                        ModelCard, ParityInfo, Preprocessing, Quantization, Training, Widths)
from .models import ModelSpec
from .profiles.compare import TargetPrediction
from .pruning import PruneResult
from .qat import QatInfo
from .targets import Target
from .tasks import CLASSIFY, Task

_PACKAGES = ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnxscript", "onnxsim", "onnx2tf",
             "tensorflow", "ai-edge-litert", "coremltools", "flatbuffers", "numpy", "matplotlib")
_TFLITE_METADATA = ("embedded in every .tflite: TFLITE_METADATA (ModelMetadata: image input with "
                    "NormalizationOptions, labels.txt as TENSOR_AXIS_LABELS, zip-appended) and an "
                    "'autoprune_edge' JSON entry; written without tflite-support, which cannot be "
                    "installed next to onnx2tf's protobuf pin")
_REPRODUCE = {
    "macs": "autoprune-edge profile model_fp32.tflite  (counts MACs from the .tflite graph)",
    "parity": "autoprune_edge.converters.litert.run_tflite(path, x_nchw) vs "
              "autoprune_edge.load_pruned('pruned')[0](x) on the validation images (x normalised; for a uint8 "
              "model_int8.tflite pass the pixels, autoprune_edge.converters.int8_prep.to_pixels(x, mean, std))",
}
_HOW_TO_FEED = ("q = clip(round(x / scale) + zero_point, -128, 127) on the normalised NHWC input; "
                "logits = (q_out - zero_point) * scale")
_INT8_WHAT = ("full-integer int8 (TFLiteConverter on onnx2tf's Keras model): per-channel int8 weights, "
              "int8 activations, calibrated on these samples; I/O type and recipe under 'recipe'")


@dataclass
class _Achieved:
    """The cost that budgets are judged against: counted MACs/params, predicted on the chosen target."""

    macs: int
    params: int
    latency_ms: float | None = None
    peak_memory_bytes: int | None = None
    model_bytes: int | None = None


def parity_info(thresholds: dict[str, float], inputs: str, n: int, dropped: int) -> ParityInfo:
    return ParityInfo(thresholds, inputs, n, overlap_with_calibration=0, dropped_overlapping=dropped,
                      policy="fp32: max|diff| / max|torch logit| <= fp32_rel; fp16/int8: top-1 agreement and mean "
                             "logit cosine >= thresholds; " + parity_notes().rstrip("."))


def calibration_info(samples: int, seed: int, unique: int) -> Calibration:
    return Calibration(samples, "train", seed, unique, "NHWC", _INT8_WHAT)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def describe_build(*, version: str, model: str, spec: ModelSpec, data: DataBundle, data_source: DataSource,
                   target: Target, budgets: list[Budget], result: PruneResult, artifacts: list[Artifact],
                   predicted: dict[str, TargetPrediction], input_shape: tuple[int, ...], pretrain_epochs: float,
                   pretrain_log: list[Any], finetune_epochs: float, seconds: float, formats: tuple[str, ...],
                   formats_from: str, parity: ParityInfo, calibration: Calibration | None,
                   qat: QatInfo | None = None, task: Task = CLASSIFY,
                   outputs: list[dict[str, Any]] | None = None) -> ModelCard:
    pred = predicted.get(target.name)
    row = pred.default if pred is not None else None
    achieved = _Achieved(result.macs_after, result.params_after, *(
        (row.latency_ms, row.peak_memory_bytes, row.model_bytes) if row is not None else ()))
    tfl = next((a for a in artifacts if a.format.startswith("tflite") and a.io), None)
    int8 = next((a for a in artifacts if a.format == "tflite-int8"), None)
    notes = list(result.notes)
    edgetpu = None
    if is_edgetpu_target(target):
        edgetpu = int8.edgetpu.to_dict() if int8 is not None and int8.edgetpu is not None else {
            "ready": False, "error": "no tflite-int8 artifact: the Edge TPU runs only full-integer models; add "
                                     "tflite-int8"}
        if not edgetpu.get("ready"):
            notes.append("Edge TPU readiness check failed; see 'edgetpu' in the model card")
    quant = None
    if int8 is not None and int8.io:
        quant = Quantization(calibration,
                             {k: int8.io["input"][k] for k in ("dtype", "scale", "zero_point", "shape", "layout")},
                             {k: int8.io["output"][k] for k in ("dtype", "scale", "zero_point", "shape")},
                             int8.int8.how_to_feed if int8.int8 else _HOW_TO_FEED, int8.int8)
    failing = [a.format for a in artifacts if a.failures]
    parity.failing, parity.all_ok = failing, not failing
    return ModelCard(
        autoprune_edge=version, name=model, architecture=asdict(spec), target=target.name,
        target_description=target.description,
        budget=[BudgetLine(b.text, b.kind, b.value, measured(b, achieved), within(b, measured(b, achieved)))
                for b in budgets],
        method=result.method, macs=BeforeAfter(result.macs_before, result.macs_after),
        params=BeforeAfter(result.params_before, result.params_after), channel_round_to=result.round_to,
        widths=Widths(result.widths_before, result.widths_after),
        equivalence=Equivalence(result.equivalence_max_abs, result.equivalence_rel), data=data_source,
        accuracy=Accuracy(task.metric, result.accuracy_before, result.accuracy_pruned, result.accuracy_after,
                          data.description, data.synthetic, f"validation split ({len(data.val)} images)"),
        training=Training(pretrain_epochs, pretrain_log, list(result.gate_log or []), finetune_epochs,
                          result.train_log, result.device, result.precision, result.granularity,
                          None if qat is None else qat.to_dict()),
        preprocessing=Preprocessing(
            input_shape_nchw=list(input_shape), resize=list(input_shape[2:]), mean=list(data.mean),
            std=list(data.std), channels="grayscale" if input_shape[1] == 1 else "RGB",
            tflite_layout=tfl.io["input"]["layout"] if tfl else None,
            tflite_input_shape=tfl.io["input"]["shape"] if tfl else None, class_names=data.class_names),
        formats=Formats(list(formats), formats_from), parity=parity, quantization=quant, artifacts=artifacts,
        edgetpu=edgetpu, tflite_metadata=_TFLITE_METADATA if any(a.metadata for a in artifacts) else None,
        predicted=predicted, reproduce=dict(_REPRODUCE), notes=notes, versions=versions(),
        build_seconds=round(seconds, 1), task=task.name,
        outputs=None if task is CLASSIFY else Outputs(task.outputs, list(outputs or [])))
