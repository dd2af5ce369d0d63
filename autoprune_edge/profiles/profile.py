"""``profile(model, input_shape, target)``: MACs, params, predicted latency, peak memory, model size.

    >>> import autoprune_edge as ape
    >>> prof = ape.profile(model, (1, 3, 224, 224), "raspberrypi4", precision="int8")
    >>> prof.latency_ms, prof.peak_memory_bytes, prof.model_bytes, prof.macs

Everything is *predicted* from the target profile (see ``latency.py`` and ``memory.py`` for the
models and ``docs/targets.md`` for the profile schema); nothing runs on the device.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..targets import Target, resolve_target
from .latency import layer_work, roofline_ms, weight_bytes
from .layers import CONV_CLASSES, Trace, fuse, trace_layers
from .memory import buffers_from_kernels, plan_arena

# TFLite flatbuffer overhead, approximately: per-kernel op + tensor records, and the file header.
_BYTES_PER_KERNEL = 256
_FILE_HEADER_BYTES = 4096
# int8 per-channel quantisation stores a float32 scale and an int64 zero point per output channel,
# for the weight tensor and again for its int32 bias tensor.
_INT8_BYTES_PER_CHANNEL = 2 * (4 + 8)


@dataclass
class LayerProfile:
    name: str
    kind: str
    op_class: str
    macs: int
    padded_macs: int
    latency_ms: float  # of the kernel this layer heads; 0.0 for fused or free layers
    output_bytes: int
    bytes_moved: int = 0  # of the kernel this layer heads
    in_channels: int | None = None
    out_channels: int | None = None
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    fused_into: str | None = None  # head layer name when folded/fused into another kernel


@dataclass
class Profile:
    macs: int
    params: int
    latency_ms: float
    peak_memory_bytes: int  # activation arena + model weights
    model_bytes: int  # predicted file size of the converted model at this precision
    layers: list[LayerProfile]
    target: str
    precision: str
    threads: int
    input_shape: tuple[int, ...] = ()
    padded_macs: int = 0
    arena_bytes: int = 0  # planned activation arena
    activation_lower_bound_bytes: int = 0  # max over time of live activations (planner-independent)
    weights_bytes: int = 0  # model weights resident in RAM (= model_bytes; the file is mmapped)
    kernels: int = 0  # runtime kernels after fusion
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.target} {self.precision} {self.threads}T: {self.latency_ms:.2f} ms, "
            f"{self.macs / 1e6:.1f}M MACs, {self.params / 1e6:.3f}M params, "
            f"peak RAM {self.peak_memory_bytes / 2**20:.2f} MiB "
            f"(arena {self.arena_bytes / 2**20:.2f} MiB), file {self.model_bytes / 2**20:.2f} MiB"
        )


def _model_bytes(trace: Trace, kernels, precision: str) -> int:
    total = _FILE_HEADER_BYTES + _BYTES_PER_KERNEL * len(kernels)
    for k in kernels:
        head = trace.layers[k.head]
        members = [trace.layers[i] for i in k.members]
        w, b = head.weight_elements, head.bias_elements
        folded_bn = any(m.op_class == "norm" for m in members[1:])
        if folded_bn and b == 0 and head.out_channels:
            w, b = w + head.out_channels, head.out_channels  # BN folding gives the conv a bias
        # parameters of fused activations (PReLU slopes) stay; folded BN parameters vanish
        w += sum(m.weight_elements for m in members[1:] if m.op_class == "act")
        total += weight_bytes(precision, w, b)
        if precision == "int8" and head.op_class in CONV_CLASSES + ("fc",) and head.weight_elements:
            total += _INT8_BYTES_PER_CHANNEL * (head.out_channels or 1)
    return int(total)


@torch.no_grad()
def profile(
    model: nn.Module,
    input_shape: tuple[int, ...] | torch.Tensor,
    target: Target | str,
    precision: str = "fp32",
    threads: int | None = None,
) -> Profile:
    """Predict the cost of ``model`` on ``target`` at ``precision`` with ``threads`` threads.

    ``input_shape`` includes the batch dimension, e.g. ``(1, 3, 224, 224)``. ``threads`` defaults to
    the target's ``runtime.threads``. Works on any ``nn.Module`` that runs a forward pass.
    """
    tgt = resolve_target(target)
    spec = tgt.precision(precision)
    threads = tgt.runtime.threads if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    shape = tuple(input_shape.shape) if isinstance(input_shape, torch.Tensor) else tuple(int(d) for d in input_shape)

    trace = trace_layers(model, input_shape)
    kernels, layer_kernel = fuse(trace)
    bpe = spec.bytes_per_element
    numel = {t.id: t.numel for t in trace.tensors.values()}

    kernel_ms: list[float] = []
    kernel_bytes: list[int] = []
    kernel_padded: list[int] = []
    for k in kernels:
        head = trace.layers[k.head]
        work, padded = layer_work(spec, head)
        out_el = sum(numel[t] for t in k.outputs)
        in_el = sum(numel[t] for t in k.inputs)
        bytes_moved = (in_el + out_el) * bpe + weight_bytes(precision, head.weight_elements, head.bias_elements)
        ms = roofline_ms(tgt, k.op_class, work, bytes_moved, out_el, precision, threads)
        kernel_ms.append(ms)
        kernel_bytes.append(int(bytes_moved))
        kernel_padded.append(int(padded))

    layers: list[LayerProfile] = []
    for layer in trace.layers:
        k = layer_kernel.get(layer.index)
        is_head = k is not None and kernels[k].head == layer.index
        fused_into = None
        if k is not None and not is_head:
            fused_into = trace.layers[kernels[k].head].name
        layers.append(
            LayerProfile(
                name=layer.name,
                kind=layer.kind,
                op_class=layer.op_class,
                macs=layer.macs,
                padded_macs=kernel_padded[k] if is_head else 0,
                latency_ms=kernel_ms[k] if is_head else 0.0,
                output_bytes=layer.out_elements * bpe,
                bytes_moved=kernel_bytes[k] if is_head else 0,
                in_channels=layer.in_channels,
                out_channels=layer.out_channels,
                groups=layer.groups,
                kernel=layer.kernel,
                stride=layer.stride,
                out_hw=layer.out_hw,
                fused_into=fused_into,
            )
        )

    buffers = buffers_from_kernels(kernels, numel, trace.inputs, trace.outputs, bpe)
    plan = plan_arena(buffers)
    model_bytes = _model_bytes(trace, kernels, precision)
    latency = sum(kernel_ms) + tgt.runtime.invoke_overhead_us * 1e-3
    return Profile(
        macs=trace.macs,
        params=trace.params,
        latency_ms=float(latency),
        peak_memory_bytes=int(plan.arena_bytes + model_bytes),
        model_bytes=model_bytes,
        layers=layers,
        target=tgt.name,
        precision=precision,
        threads=threads,
        input_shape=shape,
        padded_macs=int(sum(kernel_padded)),
        arena_bytes=int(plan.arena_bytes),
        activation_lower_bound_bytes=int(plan.lower_bound_bytes),
        weights_bytes=model_bytes,
        kernels=len(kernels),
    )
