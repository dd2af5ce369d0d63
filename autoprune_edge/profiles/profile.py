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
from .kernels import KernelCost, LatencyEstimate, estimate, kernel_ms
from .latency import weight_bytes
from .fusion import clean, fuse
from .layers import trace_layers
from .memory import buffers_from_kernels, plan_arena
from .opclass import CONV_CLASSES
from .trace_records import Trace

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
    op: str = ""  # TFLite builtin (or composite) name
    runs_on: str = ""  # "accelerator" or "cpu" on a target with an [accelerator]; "" otherwise


@dataclass
class Profile:
    macs: int
    params: int
    latency_ms: float
    peak_memory_bytes: int  # activation arena + model weights (when they live in RAM) + runtime overhead
    model_bytes: int  # predicted file size of the converted model at this precision
    layers: list[LayerProfile]
    target: str
    precision: str
    threads: int
    input_shape: tuple[int, ...] = ()
    padded_macs: int = 0
    arena_bytes: int = 0  # planned activation arena
    activation_lower_bound_bytes: int = 0  # max over time of live activations (planner-independent)
    weights_bytes: int = 0  # model weights resident in RAM (= model_bytes, or 0 when they stay in flash)
    kernels: int = 0  # runtime kernels after fusion
    warnings: list[str] = field(default_factory=list)  # RAM/storage overflow, accelerator fallbacks, SRAM spill
    fits: bool = True  # peak RAM <= device RAM and model file <= device storage
    ram_bytes: int = 0  # the device's RAM
    storage_bytes: int = 0  # the device's storage (flash on an MCU)
    extra: dict = field(default_factory=dict)
    latency_error_pct: float | None = None  # the target's held-out latency error (%); None = never checked

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.target} {self.precision} {self.threads}T: {self.latency_ms:.2f} ms, "
            f"{self.macs / 1e6:.1f}M MACs, {self.params / 1e6:.3f}M params, "
            f"peak RAM {self.peak_memory_bytes / 2**20:.2f} MiB "
            f"(arena {self.arena_bytes / 2**20:.2f} MiB), file {self.model_bytes / 2**20:.2f} MiB"
        )
        if not self.fits:
            text += " — does NOT fit the device"
        return text


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


def _fmt_bytes(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.2f} MiB"
    return f"{n / 2**10:.1f} KiB"


# Composite ops the TFLite converter lowers into several element-wise builtins (passes over the tensor).
_TFLITE_PASSES = {"SILU": 2, "BATCH_NORM": 2, "LAYER_NORM": 6, "GROUP_NORM": 6}


def _needs_explicit_pad(layer) -> bool:
    """onnx2tf writes an explicit PAD before a strided conv/pool when torch's symmetric padding differs
    from TFLite's SAME padding (even input size, stride > 1)."""
    if layer.op_class not in CONV_CLASSES + ("pool",) or layer.stride == (1, 1) or layer.padding == (0, 0):
        return False
    h, w = layer.in_hw
    return (layer.stride[0] > 1 and h % 2 == 0 and layer.padding[0] > 0) or (layer.stride[1] > 1 and w % 2 == 0 and layer.padding[1] > 0)


def kernel_costs(trace: Trace, kernels, tflite_graph: bool = True,
                 explicit_pads: bool = True) -> tuple[list[KernelCost], list[int]]:
    """The cost model's view of the runtime kernels, in execution order, and for each the index of the
    layer it belongs to. ``tflite_graph`` adds what a TFLite graph has beyond the fused torch ops:
    materialised channel slices, and several element-wise passes for SiLU / unfused BatchNorm /
    LayerNorm; ``explicit_pads`` the PADs onnx2tf writes before strided convs (see _needs_explicit_pad)."""
    numel = {t.id: t.numel for t in trace.tensors.values()}
    out: list[KernelCost] = []
    owner: list[int] = []
    by_head = {k.head: k for k in kernels}
    live = clean(trace).live
    for layer in trace.layers:
        if tflite_graph and layer.op_class == "free" and layer.copy_elements and layer.index in live:
            out.append(KernelCost(name=layer.name, op=layer.op, op_class="elementwise", in_elements=layer.copy_elements,
                                  out_elements=layer.copy_elements, max_nonunit_dims=layer.max_nonunit_dims))
            owner.append(layer.index)
            continue
        k = by_head.get(layer.index)
        if k is None:
            continue
        head = layer
        members = [trace.layers[i] for i in k.members]
        in_el = sum(numel[t] for t in k.inputs)
        if tflite_graph and explicit_pads and _needs_explicit_pad(head):
            ph, pw = head.padding
            h, w = head.in_hw
            padded = int(in_el * (h + ph) * (w + pw) / max(1, h * w))
            out.append(KernelCost(name=f"{head.name}.pad", op="PAD", op_class="elementwise", in_elements=in_el,
                                  out_elements=padded, max_nonunit_dims=head.max_nonunit_dims))
            owner.append(layer.index)
        kc = KernelCost(
            name=head.name, op=head.op or "ELEMENTWISE", op_class=k.op_class, macs=head.macs,
            in_channels=head.in_channels, out_channels=head.out_channels, kernel=head.kernel, groups=head.groups,
            rows=head.rows, in_elements=in_el, out_elements=sum(numel[t] for t in k.outputs),
            weight_elements=head.weight_elements, bias_elements=head.bias_elements,
            max_nonunit_dims=max(m.max_nonunit_dims for m in members),
        )
        if tflite_graph and kc.op in _TFLITE_PASSES and k.op_class not in CONV_CLASSES + ("fc",):
            kc.passes = _TFLITE_PASSES[kc.op]
        out.append(kc)
        owner.append(layer.index)
    return out, owner


def _accelerator_warnings(tgt: Target, est: LatencyEstimate, kcs: list[KernelCost]) -> list[str]:
    acc = tgt.accelerator
    if acc is None or not est.accelerator:
        return []
    out = []
    if est.unsupported:
        names = []
        for i in est.unsupported:
            k = kcs[i]
            why = k.op if k.op in acc.unsupported_ops else f"{k.max_nonunit_dims}-D tensor"
            names.append(f"{why} ({k.name})")
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        fb_ms = sum(est.kernel_ms[i] for i in est.fallback) + est.transition_ms
        if acc.fallback == "rest":
            out.append(
                f"{acc.name} cannot run {shown}; it partitions the graph once, so {len(est.fallback)} of "
                f"{len(kcs)} kernels from the first of these on run on the CPU (≈{fb_ms:.2f} ms)")
        else:
            out.append(f"{acc.name} cannot run {shown}: these fall back to the CPU "
                       f"({est.transitions} switches, ≈{fb_ms:.2f} ms)")
    if est.spill_bytes:
        out.append(
            f"parameters need {_fmt_bytes(est.param_bytes_on_accelerator)} but {acc.name} caches only "
            f"{_fmt_bytes(acc.param_cache_bytes or 0)} on chip: {_fmt_bytes(est.spill_bytes)} stream from host "
            f"memory on every inference (+{est.spill_ms:.2f} ms)")
    return out


def _latency_error(tgt: Target, shape: tuple[int, ...]) -> tuple[float | None, str | None]:
    """The target's held-out latency error for this input, and a warning when the input lies outside the
    sizes that error was measured on (the error is then unknown, not the stated one)."""
    side = min(shape[2:]) if len(shape) == 4 else None
    err = tgt.latency_error_at(side)
    if err is not None or tgt.latency_error_pct is None:  # in range, or no error was ever stated
        return err, None
    lo, hi = tgt.latency_error_inputs
    return None, (f"{tgt.name}'s latency error ({tgt.latency_error_pct:g} %) was measured on {lo}-{hi} px inputs, "
                  f"not {side} px, so this prediction's error is unknown (±?): run `autoprune-edge measure --suite` "
                  "on the device and `calibrate` to check it")


@torch.no_grad()
def model_kernels(model: nn.Module, input_shape: tuple[int, ...] | torch.Tensor,
                  fuse_all_activations: bool = False, converter: str = "onnx2tf") -> tuple[list[KernelCost], int]:
    """Trace and fuse ``model`` once: its kernels and graph input + output elements, for
    :func:`autoprune_edge.profiles.kernels.predict_ms` (fast re-prediction on many targets with the same
    ``runtime.fuse_all_activations``)."""
    trace = trace_layers(model, input_shape)
    kernels, _ = fuse(trace, fuse_all_activations)
    numel = {t.id: t.numel for t in trace.tensors.values()}
    kcs, _owner = kernel_costs(trace, kernels, tflite_graph=not fuse_all_activations,
                               explicit_pads=converter == "onnx2tf")
    return kcs, sum(numel.get(t, 0) for t in trace.inputs + trace.outputs)


@torch.no_grad()
def profile(
    model: nn.Module,
    input_shape: tuple[int, ...] | torch.Tensor,
    target: Target | str,
    precision: str | None = None,
    threads: int | None = None,
    *,
    converter: str = "onnx2tf",
) -> Profile:
    """Predict the cost of ``model`` on ``target`` at ``precision`` with ``threads`` threads.

    ``input_shape`` includes the batch dimension, e.g. ``(1, 3, 224, 224)``. ``precision`` defaults to
    the target's first precision (``fp32`` for CPU targets, ``int8`` for the Edge TPU and MCUs, ``fp16``
    for Core ML); ``threads`` to the target's ``runtime.threads``. Works on any ``nn.Module`` that runs a
    forward pass. ``Profile.warnings`` says when the model overflows the device's RAM or storage
    (``Profile.fits`` is then False), overflows an accelerator's on-chip parameter memory, or uses ops the
    accelerator cannot run.

    ``converter`` describes how the deployed graph is made: ``"onnx2tf"`` (what this toolkit ships: its
    TFLite graphs have an explicit PAD before every strided conv whose torch padding differs from TFLite's
    SAME padding) or ``"native"`` (a graph written natively for the runtime, as the published reference
    models are).
    """
    if converter not in ("onnx2tf", "native"):
        raise ValueError(f"converter must be 'onnx2tf' or 'native', got {converter!r}")
    tgt = resolve_target(target)
    precision = precision or tgt.default_precision
    spec = tgt.precision(precision)
    threads = tgt.runtime.threads if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    shape = tuple(input_shape.shape) if isinstance(input_shape, torch.Tensor) else tuple(int(d) for d in input_shape)

    trace = trace_layers(model, input_shape)
    kernels, layer_kernel = fuse(trace, tgt.runtime.fuse_all_activations)
    bpe = spec.bytes_per_element
    numel = {t.id: t.numel for t in trace.tensors.values()}
    kcs, owner = kernel_costs(trace, kernels, tflite_graph=not tgt.runtime.fuse_all_activations,
                              explicit_pads=converter == "onnx2tf")

    main_ms, kernel_bytes, kernel_padded = [], [], []
    for kc in kcs:
        ms, padded, moved = kernel_ms(tgt, kc, precision, threads)
        main_ms.append(ms)
        kernel_bytes.append(int(moved))
        kernel_padded.append(int(padded))
    io_bytes = sum(numel.get(t, 0) for t in trace.inputs + trace.outputs) * bpe
    est = estimate(kcs, tgt, precision, threads, io_bytes=io_bytes, per_kernel=main_ms)
    # per layer: the kernels it owns (its own, plus an explicit PAD before it)
    lat: dict[int, float] = {}
    moved_by: dict[int, int] = {}
    padded_by: dict[int, int] = {}
    where: dict[int, bool] = {}
    for i, li in enumerate(owner):
        lat[li] = lat.get(li, 0.0) + est.kernel_ms[i]
        moved_by[li] = moved_by.get(li, 0) + kernel_bytes[i]
        padded_by[li] = padded_by.get(li, 0) + kernel_padded[i]
        where[li] = est.on_accelerator[i]

    layers: list[LayerProfile] = []
    for layer in trace.layers:
        k = layer_kernel.get(layer.index)
        fused_into = None
        if k is not None and kernels[k].head != layer.index:
            fused_into = trace.layers[kernels[k].head].name
        runs_on = ""
        if est.accelerator and layer.index in where:
            runs_on = "accelerator" if where[layer.index] else "cpu"
        elif est.accelerator and fused_into is not None:
            runs_on = "accelerator" if where.get(kernels[k].head, True) else "cpu"
        layers.append(
            LayerProfile(
                name=layer.name,
                kind=layer.kind,
                op_class=layer.op_class,
                macs=layer.macs,
                padded_macs=padded_by.get(layer.index, 0),
                latency_ms=lat.get(layer.index, 0.0),
                output_bytes=layer.out_elements * bpe,
                bytes_moved=moved_by.get(layer.index, 0),
                in_channels=layer.in_channels,
                out_channels=layer.out_channels,
                groups=layer.groups,
                kernel=layer.kernel,
                stride=layer.stride,
                out_hw=layer.out_hw,
                fused_into=fused_into,
                op=layer.op,
                runs_on=runs_on,
            )
        )

    buffers = buffers_from_kernels(kernels, numel, trace.inputs, trace.outputs, bpe)
    plan = plan_arena(buffers)
    model_bytes = _model_bytes(trace, kernels, precision)
    mem = tgt.memory
    weights_resident = model_bytes if mem.weights_in_ram else 0
    peak = int(plan.arena_bytes + weights_resident + mem.runtime_overhead_bytes)

    warnings = []
    fits = True
    if peak > mem.ram_bytes:
        fits = False
        what = "arena" if not mem.weights_in_ram else "arena + weights"
        warnings.append(f"peak RAM {_fmt_bytes(peak)} ({what}) exceeds the device's {_fmt_bytes(mem.ram_bytes)} of RAM")
    if model_bytes > tgt.storage_bytes:
        fits = False
        where = "flash" if not mem.weights_in_ram else "storage"
        warnings.append(f"model file {_fmt_bytes(model_bytes)} exceeds the device's {_fmt_bytes(tgt.storage_bytes)} of {where}")
    warnings += _accelerator_warnings(tgt, est, kcs)
    error_pct, error_note = _latency_error(tgt, shape)
    if error_note:
        warnings.append(error_note)

    extra = {}
    if est.accelerator:
        extra["accelerator"] = {
            "name": est.accelerator, "kernels_on_accelerator": sum(est.on_accelerator),
            "kernels_on_cpu": len(est.fallback), "transitions": est.transitions,
            "transition_ms": est.transition_ms, "param_bytes_on_accelerator": est.param_bytes_on_accelerator,
            "spill_bytes": est.spill_bytes, "spill_ms": est.spill_ms, "io_ms": est.io_ms,
        }
    return Profile(
        macs=trace.macs,
        params=trace.params,
        latency_ms=float(est.total_ms),
        peak_memory_bytes=peak,
        model_bytes=model_bytes,
        layers=layers,
        target=tgt.name,
        precision=precision,
        threads=threads,
        input_shape=shape,
        padded_macs=int(sum(kernel_padded)),
        arena_bytes=int(plan.arena_bytes),
        activation_lower_bound_bytes=int(plan.lower_bound_bytes),
        weights_bytes=weights_resident,
        kernels=len(kernels),
        warnings=warnings,
        fits=fits,
        ram_bytes=mem.ram_bytes,
        storage_bytes=tgt.storage_bytes,
        extra=extra,
        latency_error_pct=error_pct,
    )
