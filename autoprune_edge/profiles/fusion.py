"""Kernel fusion: group traced layers into the kernels a TFLite/XNNPACK runtime runs.

A conv or fc absorbs a following BatchNorm (folded) and a following ReLU/ReLU6/clamp activation (fused
activation); an elementwise add/sub/mul absorbs a following ReLU/ReLU6 (TFLite ADD's fused activation).
"""
from __future__ import annotations

from dataclasses import dataclass

from .opclass import CONV_CLASSES
from .trace_records import Trace

_ELEMENTWISE_BINARY = {"add", "add_", "sub", "sub_", "mul", "mul_"}


@dataclass
class Kernel:
    """What the runtime executes: a head layer plus the layers fused into it."""

    index: int
    head: int  # layer index
    members: list[int]  # layer indices, head first
    inputs: list[int]
    outputs: list[int]
    op_class: str


def consumers(trace: Trace) -> dict[int, list[int]]:
    """Tensor id -> indices of the non-free layers that read it (graph outputs count as a reader -1)."""
    cons: dict[int, list[int]] = {}
    for layer in trace.layers:
        if layer.op_class == "free":
            continue
        for t in layer.inputs:
            cons.setdefault(t, []).append(layer.index)
    for t in trace.outputs:
        cons.setdefault(t, []).append(-1)
    return cons


def fuse(trace: Trace, fuse_all_activations: bool = False) -> tuple[list[Kernel], dict[int, int]]:
    """Group layers into runtime kernels. Returns the kernels and a map layer index -> kernel index.

    ``free`` layers belong to no kernel (they are absent from the map). TFLite fuses only ReLU/ReLU6
    (and ReLU_N1_TO_1); ``fuse_all_activations`` (TensorRT, Core ML) fuses any activation that follows
    a conv / fc / binary elementwise op.
    """
    cons = consumers(trace)
    kernels: list[Kernel] = []
    layer_kernel: dict[int, int] = {}
    producer_kernel: dict[int, int] = {}  # tensor id -> kernel index that writes it
    for layer in trace.layers:
        if layer.op_class == "free":
            continue
        target_k = None
        if len(layer.inputs) == 1 and layer.op_class in ("norm", "act"):
            src = layer.inputs[0]
            k = producer_kernel.get(src)
            if k is not None and cons.get(src) == [layer.index] and kernels[k].outputs == [src]:
                head = trace.layers[kernels[k].head]
                member_classes = [trace.layers[i].op_class for i in kernels[k].members]
                if layer.op_class == "norm" and layer.folds_bn:
                    # BatchNorm folds into a conv/fc that has no activation fused yet
                    if head.op_class in CONV_CLASSES + ("fc",) and "act" not in member_classes and "norm" not in member_classes:
                        target_k = k
                elif layer.op_class == "act" and (layer.fusable_act or fuse_all_activations):
                    fusable_head = head.op_class in CONV_CLASSES + ("fc",) or (
                        head.op_class == "elementwise" and head.kind.split(".")[-1] in _ELEMENTWISE_BINARY
                    )
                    if fusable_head and "act" not in member_classes:
                        target_k = k
        if target_k is not None:
            kern = kernels[target_k]
            kern.members.append(layer.index)
            kern.outputs = list(layer.outputs)
            layer_kernel[layer.index] = target_k
            for t in layer.outputs:
                producer_kernel[t] = target_k
            continue
        k = len(kernels)
        kernels.append(Kernel(k, layer.index, [layer.index], list(layer.inputs), list(layer.outputs), layer.op_class))
        layer_kernel[layer.index] = k
        for t in layer.outputs:
            producer_kernel[t] = k
    return kernels, layer_kernel
