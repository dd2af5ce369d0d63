"""What a model is for: the one table of tasks (classify, segment, detect), each with its loss, its metric and
how its batches are put together. `build --task` and the data sources name tasks only through this table.

Detection losses and box decoding depend on the detector's anchors and box coding, so a detector brings
them itself: a model used with the detect task has ``detection_loss(outputs, targets, image_size)`` and
``detections(outputs, image_size)`` (the zoo's SSDlite does, with torchvision's own matcher, coder and NMS).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .data import data_sources
from .device import device_of
from .errors import ConfigError

IGNORE_INDEX = 255  # mask pixels that count for no class (borders, "don't care")
Batch = tuple[torch.Tensor, Any]


@dataclass(frozen=True)
class Task:
    name: str
    metric: str  # what `score` returns, for the report ("top-1", "mIoU", "mAP@0.5")
    outputs: str  # what the exported file's outputs mean, for the model card
    loss: Callable[[nn.Module, Any, Any, tuple[int, int]], torch.Tensor]  # (model, outputs, targets, input H x W)
    score: Callable[[nn.Module, Dataset, int], float]  # (model, dataset, number of classes incl. background)
    collate: Callable[[list[tuple[torch.Tensor, Any]]], Batch]


def main_tensor(out: Any) -> torch.Tensor:
    """The per-pixel logits of a segmenter's output: the tensor itself, ``out["out"]`` or the first of a sequence."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return out["out"] if "out" in out else next(iter(out.values()))
    return out[0]


def _stack(items: list[tuple[torch.Tensor, Any]]) -> Batch:
    xs, ys = zip(*items)
    return torch.stack(xs), torch.stack([torch.as_tensor(y) for y in ys])


def _listed(items: list[tuple[torch.Tensor, Any]]) -> Batch:
    xs, ys = zip(*items)
    return torch.stack(xs), list(ys)


def batches(ds: Dataset, task: Task, batch_size: int):
    """The dataset in order, collated for ``task`` (evaluation: no shuffling)."""
    for i in range(0, len(ds), batch_size):  # type: ignore[arg-type]
        yield task.collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))])  # type: ignore[arg-type]


def _cls_loss(model: nn.Module, out: Any, y: Any, size: tuple[int, int]) -> torch.Tensor:
    return F.cross_entropy(out.float(), y)


@torch.no_grad()
def _top1(model: nn.Module, ds: Dataset, classes: int) -> float:
    was, right, n = model.training, 0, 0
    model.eval()
    for x, y in batches(ds, CLASSIFY, 64):
        right += int((model(x.to(device_of(model))).argmax(-1).cpu() == y).sum())
        n += len(y)
    model.train(was)
    return right / max(1, n)


def _seg_loss(model: nn.Module, out: Any, y: Any, size: tuple[int, int]) -> torch.Tensor:
    return F.cross_entropy(main_tensor(out).float(), y, ignore_index=IGNORE_INDEX)


@torch.no_grad()
def _miou(model: nn.Module, ds: Dataset, classes: int) -> float:
    from torchmetrics.classification import MulticlassJaccardIndex  # ~1 s to import: only when scoring

    metric = MulticlassJaccardIndex(num_classes=classes, average="macro", ignore_index=IGNORE_INDEX)
    was = model.training
    model.eval()
    for x, y in batches(ds, SEGMENT, 16):
        metric.update(main_tensor(model(x.to(device_of(model)))).argmax(1).cpu(), y)
    model.train(was)
    return float(metric.compute())


def detector_of(model: nn.Module) -> nn.Module:
    if not (hasattr(model, "detection_loss") and hasattr(model, "detections")):
        raise ConfigError(f"{type(model).__name__} cannot be trained for detection here: it has no "
                          "detection_loss()/detections() (the zoo's ssdlite320_mobilenet_v3_large has); prune it "
                          "with ape.Pruner in your own loop, or build it with --task segment/classify")
    return model


def _det_loss(model: nn.Module, out: Any, y: Any, size: tuple[int, int]) -> torch.Tensor:
    return detector_of(model).detection_loss(out, y, size)  # type: ignore[operator]


@torch.no_grad()
def _map50(model: nn.Module, ds: Dataset, classes: int) -> float:
    from torchmetrics.detection import MeanAveragePrecision  # ~1 s to import: only when scoring

    det = detector_of(model)
    metric = MeanAveragePrecision(iou_thresholds=[0.5], box_format="xyxy")  # COCO: best 100 boxes per image
    metric.warn_on_many_detections = False
    was = model.training
    model.eval()
    for x, y in batches(ds, DETECT, 16):
        preds = det.detections(model(x.to(device_of(model))), tuple(x.shape[-2:]))  # type: ignore[operator]
        metric.update([{k: (v.float() if k != "labels" else v).cpu() for k, v in p.items()} for p in preds],
                      [{"boxes": t["boxes"].float(), "labels": t["labels"]} for t in y])
    model.train(was)
    return float(metric.compute()["map"])


CLASSIFY = Task("classify", "top-1", "class logits (N x classes); softmax for probabilities", _cls_loss, _top1,
                _stack)
SEGMENT = Task("segment", "mIoU", "per-pixel class logits (N x classes x H x W at the input size); argmax over "
               "classes gives the mask, class 0 is background", _seg_loss, _miou, _stack)
DETECT = Task("detect", "mAP@0.5", "raw head tensors before box decoding and NMS; decoding.json (written when the "
              "model describes its decoding) says how to turn them into boxes", _det_loss, _map50, _listed)
TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFY, SEGMENT, DETECT)}


def get_task(name: str) -> Task:
    task = TASKS.get(name)
    if task is None:
        raise ConfigError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return task


def task_for(name: str | None, bundle: Any) -> Task:
    """The task to build for: ``name`` when given (it must match what the data holds), else the data's."""
    held = get_task(getattr(bundle, "task", "classify"))  # a user's own bundle without one: labels
    if name is None or get_task(name) is held:
        return held
    fits = ", ".join(s.usage for s in data_sources() if s.task == name)
    raise ConfigError(f"--task {name} needs {name} data, but --data {bundle.name} holds {held.name} targets; "
                      f"use one of: {fits}")


@torch.no_grad()
def output_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every output tensor in the order the exported files list them (nested outputs flattened), with shapes."""
    was = model.training
    model.eval()
    out = model(torch.zeros(input_shape))
    model.train(was)
    found: list[dict[str, Any]] = []

    def walk(o: Any, name: str) -> None:
        if isinstance(o, torch.Tensor):
            found.append({"name": name or "output", "shape": list(o.shape)})
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f"{name}[{i}]" if name else f"[{i}]")

    walk(out, "")
    return found


DECODING_FILE = "decoding.json"


def write_decoding(model: nn.Module, input_shape: tuple[int, ...], folder: Any) -> None:
    """For a detector that can describe its box decoding (``decoding(size)``): what an app needs to turn the
    raw head tensors into boxes (default boxes, box-coder weights, score rule), as decoding.json."""
    describe = getattr(model, "decoding", None)
    if describe is not None:
        (Path(folder) / DECODING_FILE).write_text(json.dumps(describe(tuple(input_shape[-2:]))))
