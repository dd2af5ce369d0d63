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

from . import progress
from .data import DataBundle, data_sources, load_data
from .data.registry import get_source
from .errors import ConfigError
from .models import ModelSpec, build_model, default_input_size, load_weights
from .zoo import ZOO


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
        data = data_for_task(model, data)
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


def data_for_task(model: str, data: str) -> str:
    """The data spec to load for ``model``: the spec itself, or for a zoo detector/segmenter given the
    default classification stand-in (``synthetic``) the synthetic task of its kind; mismatches fail here."""
    entry = ZOO.get(model.strip())
    if entry is None or entry.task == "classify":
        return data
    source = get_source(data.strip().split("?", 1)[0].split(":", 1)[0].lower())
    if source is None or source.task == entry.task:
        return data  # unknown specs fail in load_data with the list of known ones
    if not source.needs_root:
        swap = next(s.name for s in data_sources() if s.task == entry.task and not s.needs_root)
        progress.log(f"{model} is a {entry.task} model: using the {swap} data instead of {source.name}")
        return swap + (data.strip()[len(source.name):] if data.strip().startswith(source.name + "?") else "")
    fits = ", ".join(s.usage for s in data_sources() if s.task == entry.task)
    raise ConfigError(f"{model} is a {entry.task} model, but --data {data} holds {source.task} targets; use one of: "
                      f"{fits}")


def first_conv_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            return m.in_channels
    return None


def num_outputs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        net.eval()
        out = net(torch.zeros(1, *input_shape))
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"the model returns {type(out).__name__}, not class logits, so it is not a classifier: "
                          "pass --task segment or detect with matching --data (e.g. synthetic-seg, synthetic-det)")
    return int(out.shape[-1])
