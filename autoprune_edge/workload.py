"""Model + data, sized for each other: the setup that `build` and the `prune` command share.

The model is built first (cheap, catches typos), then the data at the model's input size and channel
count; a classifier with a different number of classes than the data is rebuilt for it, and weights
are loaded last so they fit the final head. Seeded: random initialisation is part of a reproducible run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .data import DataBundle, load_data
from .models import ModelSpec, build_model, default_input_size, load_weights


@dataclass
class Workload:
    model: nn.Module
    spec: ModelSpec
    data: DataBundle | None  # None: a structure-only run
    input_shape: tuple[int, ...]  # (1, C, H, W)

    def meta(self) -> dict[str, Any]:
        """What a saved pruned model records about its data (empty for a structure-only run)."""
        if self.data is None:
            return {}
        return {"mean": list(self.data.mean), "std": list(self.data.std), "class_names": self.data.class_names,
                "layout": "NCHW", "data": self.data.description}


def load_workload(model: str, data: str | None, *, weights: str | None = None, input_size: int | None = None,
                  allow_download: bool = False, seed: int = 0) -> Workload:
    torch.manual_seed(seed)
    net, spec = build_model(model)
    channels = first_conv_channels(net) or 3
    bundle = None
    if data:
        bundle = load_data(data, input_size=input_size_for(model, data, input_size), channels=channels, seed=seed)
        if bundle.task != "classify" or bundle.num_classes != num_outputs(net, bundle.input_shape):
            net, spec = build_model(model, num_classes=bundle.num_classes)  # a head for the data's classes
        input_shape = (1, *bundle.input_shape)
    else:
        side = input_size or default_input_size(model)
        input_shape = (1, channels, side, side)
    if weights:
        load_weights(net, weights, allow_download=allow_download, model_name=spec.name)
    return Workload(net, spec, bundle, tuple(input_shape))


def input_size_for(model_name: str, data_spec: str, input_size: int | None) -> int | None:
    """The input side to load data at: the user's, the model's for sources without a native size, else None."""
    if input_size:
        return input_size
    if data_spec.split(":", 1)[0].split("?", 1)[0] in ("synthetic", "folder", "synthetic-seg", "synthetic-det",
                                                        "masks", "yolo", "coco"):
        return default_input_size(model_name)
    return None  # the dataset's native size


def first_conv_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            return m.in_channels
    return None


def num_outputs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        net.eval()
        return int(net(torch.zeros(1, *input_shape)).shape[-1])
