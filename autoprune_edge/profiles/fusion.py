"""Kernel fusion: group traced layers into the kernels a TFLite/XNNPACK runtime runs.

A conv or fc absorbs following BatchNorms (folded) and a following ReLU/ReLU6/clamp activation (fused
activation); an elementwise add/sub/mul and a 2-D max/average pool absorb a following ReLU/ReLU6 (the
fused activation of TFLite's ADD and Pool2D options).

Before fusing, the graph is cleaned the way the converter cleans it (:func:`clean`): ops whose results
never reach an output are dropped (a NAS cell's unused node, a debug branch), and identical activations
of one tensor are computed once (a tensor read by three ``ReLU -> conv`` edges gets one RELU). Without
this, NAS-Bench-201 cells were charged up to 30 convs and 60 RELUs the .tflite does not contain.
"""
from __future__ import annotations

from dataclasses import dataclass

from .opclass import CONV_CLASSES
from .trace_records import Trace

_ELEMENTWISE_BINARY = {"add", "add_", "sub", "sub_", "mul", "mul_"}
#: TFLite ops with a fused_activation_function besides conv / fc / binary element-wise ones
_POOL_OPS_WITH_ACTIVATION = {"AVERAGE_POOL_2D", "MAX_POOL_2D"}


@dataclass
class Cleaned:
    """The result of :func:`clean`: which layers the runtime graph keeps, and tensor renames."""

    live: set[int]  # indices of the layers that remain (free layers included)
    alias: dict[int, int]  # tensor id of a removed duplicate -> the tensor that replaces it

    def resolve(self, t: int) -> int:
        return self.alias.get(t, t)


def clean(trace: Trace) -> Cleaned:
    """Dead-code elimination and common-subexpression elimination of activations, as TFLite does."""
    alias: dict[int, int] = {}
    seen: dict[tuple, int] = {}  # (kind, op, input) -> output tensor of the first such activation
    dup: set[int] = set()
    for layer in trace.layers:
        if layer.op_class != "act" or len(layer.inputs) != 1 or len(layer.outputs) != 1:
            continue
        key = (layer.kind, layer.op, alias.get(layer.inputs[0], layer.inputs[0]))
        if key in seen:
            alias[layer.outputs[0]] = seen[key]
            dup.add(layer.index)
        else:
            seen[key] = layer.outputs[0]
    needed = {alias.get(t, t) for t in trace.outputs}
    live: set[int] = set()
    for layer in reversed(trace.layers):
        if layer.index in dup:
            continue
        if any(t in needed for t in layer.outputs):
            live.add(layer.index)
            needed.update(alias.get(t, t) for t in layer.inputs)
    return Cleaned(live, alias)


@dataclass
class Kernel:
    """What the runtime executes: a head layer plus the layers fused into it."""

    index: int
    head: int  # layer index
    members: list[int]  # layer indices, head first
    inputs: list[int]
    outputs: list[int]
    op_class: str


def consumers(trace: Trace, cleaned: Cleaned | None = None) -> dict[int, list[int]]:
    """Tensor id -> indices of the non-free layers that read it (graph outputs count as a reader -1)."""
    cleaned = cleaned or clean(trace)
    cons: dict[int, list[int]] = {}
    for layer in trace.layers:
        if layer.op_class == "free" or layer.index not in cleaned.live:
            continue
        for t in layer.inputs:
            cons.setdefault(cleaned.resolve(t), []).append(layer.index)
    for t in trace.outputs:
        cons.setdefault(cleaned.resolve(t), []).append(-1)
    return cons


def fuse(trace: Trace, fuse_all_activations: bool = False) -> tuple[list[Kernel], dict[int, int]]:
    """Group layers into runtime kernels. Returns the kernels and a map layer index -> kernel index.

    ``free`` layers, dead layers and duplicate activations belong to no kernel (they are absent from the
    map; see :func:`clean`). TFLite fuses only ReLU/ReLU6 (and ReLU_N1_TO_1); ``fuse_all_activations``
    (TensorRT, Core ML) fuses any activation that follows a conv / fc / binary elementwise op.
    """
    cleaned = clean(trace)
    cons = consumers(trace, cleaned)
    kernels: list[Kernel] = []
    layer_kernel: dict[int, int] = {}
    producer_kernel: dict[int, int] = {}  # tensor id -> kernel index that writes it
    for layer in trace.layers:
        if layer.op_class == "free" or layer.index not in cleaned.live:
            continue
        inputs = [cleaned.resolve(t) for t in layer.inputs]
        target_k = None
        if len(inputs) == 1 and layer.op_class in ("norm", "act"):
            src = inputs[0]
            k = producer_kernel.get(src)
            if k is not None and cons.get(src) == [layer.index] and kernels[k].outputs == [src]:
                head = trace.layers[kernels[k].head]
                member_classes = [trace.layers[i].op_class for i in kernels[k].members]
                if layer.op_class == "norm" and layer.folds_bn:
                    # BatchNorms fold into a conv/fc that has no activation fused yet
                    if head.op_class in CONV_CLASSES + ("fc",) and "act" not in member_classes:
                        target_k = k
                elif layer.op_class == "act" and (layer.fusable_act or fuse_all_activations):
                    fusable_head = head.op_class in CONV_CLASSES + ("fc",) or (
                        head.op_class == "elementwise" and head.kind.split(".")[-1] in _ELEMENTWISE_BINARY
                    ) or (head.op_class == "pool" and head.op in _POOL_OPS_WITH_ACTIVATION) or (
                        head.op_class == "norm" and head.folds_bn)  # a lone BatchNorm: MUL, then ADD + activation
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
        kernels.append(Kernel(k, layer.index, [layer.index], inputs, list(layer.outputs), layer.op_class))
        layer_kernel[layer.index] = k
        for t in layer.outputs:
            producer_kernel[t] = k
    return kernels, layer_kernel
