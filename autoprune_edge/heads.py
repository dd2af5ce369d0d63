"""Which layers produce a model's outputs: their output channels are a contract with whatever reads the
outputs (class count, box coordinates, anchors per cell) and are never pruned.

For a classifier that is the last layer as wide as the logits (graph.find_output_layers). A detector or
segmenter returns several tensors, nested in tuples, lists or dicts; here every conv/linear whose output
reaches one of them without passing through another conv/linear is a head layer. Found by walking the
autograd graph back from each output, so reshapes, permutes, concatenations and activations between a
head conv and the output are seen through.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) tuple / list / dict output, in the order torch.onnx.export flattens them
    (dicts in insertion order), so the i-th tensor here is the ONNX file's i-th output."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten_outputs(v)]
    return []


def output_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the conv/linear layers that directly produce the model's (nested) outputs."""
    by_fn: dict[Any, str] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(mod: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            by_fn[out.grad_fn] = names[mod]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _LAYERS)]
    try:
        with torch.enable_grad():
            outs = flatten_outputs(model(example))
    finally:
        for h in handles:
            h.remove()
    found: dict[str, None] = {}
    seen: set[Any] = set()
    stack = [t.grad_fn for t in outs if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in by_fn:
            found[by_fn[fn]] = None
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return list(found)
