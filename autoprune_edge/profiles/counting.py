"""Exact MACs and parameter counts, from torch's own FLOP counter (FLOPs / 2 = MACs)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerCount:
    name: str
    macs: int


@dataclass
class Counts:
    macs: int
    params: int
    layers: list[LayerCount]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor | tuple[int, ...]) -> Counts:
    """MACs of one forward pass (convolutions, linear layers, matmuls, attention), per leaf module.

    Uses torch.utils.flop_counter, which counts 2 FLOPs per multiply-accumulate.
    """
    if not isinstance(example, torch.Tensor):
        example = torch.zeros(tuple(example))
    was_training = model.training
    model.eval()
    # FlopCounterMode's module tracker hooks every tensor argument that requires grad; under no_grad a
    # view of a parameter passed inside a tuple (timm PiT's cls token) has no grad_fn and the hook asserts.
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with FlopCounterMode(display=False) as fc:
            model(example)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    total = fc.get_total_flops() // 2
    per_module = fc.get_flop_counts()
    leaf_names = {n for n, m in model.named_modules() if not list(m.children())}
    layers = []
    for name, ops in per_module.items():
        # The counter keys modules by their qualified name under the top module ("Global" is the total).
        short = name.split(".", 1)[1] if "." in name else name
        if short in leaf_names:
            layers.append(LayerCount(short, int(sum(ops.values()) // 2)))
    return Counts(macs=int(total), params=count_params(model), layers=layers)
