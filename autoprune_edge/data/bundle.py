"""The one result every data source returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset


@dataclass
class DataBundle:
    name: str  # the source's registered name: "synthetic" | "mnist" | "cifar10" | "folder" | ...
    train: Dataset
    val: Dataset
    input_shape: tuple[int, int, int]  # (C, H, W) of every image
    mean: tuple[float, ...]  # per channel, already applied to the images
    std: tuple[float, ...]
    class_names: list[str]
    synthetic: bool
    description: str  # one sentence for the report
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    task: str = "classify"  # tasks.TASKS key: what the targets are (labels, masks, boxes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
