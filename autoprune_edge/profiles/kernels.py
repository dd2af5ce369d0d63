"""Runtime kernels as the cost model sees them, and the whole-model latency with an accelerator.

A :class:`KernelCost` describes one kernel the runtime executes (a conv with its folded BatchNorm and
fused ReLU, a pool, an add, ...): its op name, op class, channel counts and element counts. Two
front-ends build them:

* :func:`autoprune_edge.profiles.profile.profile` from a traced torch model (after fusion);
* :func:`autoprune_edge.profiles.tflite_ops.read_kernels` from a converted ``.tflite`` file, without
  torch, so that ``calibrate`` can fit a profile to latencies measured on a board.

:func:`estimate` turns a list of kernels into a latency on a target, deciding for a target with an
``[accelerator]`` which kernels run on it and which fall back to the host CPU (see docs/targets.md).
This module imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..targets import Target
from .latency import layer_work, pixel_overhead_ms, roofline_ms, weight_bytes

#: ops that only move data: no output_element_cost (requantisation) is charged for them
MOVEMENT_OPS = frozenset({"PAD", "PADV2", "STRIDED_SLICE", "SLICE", "SPLIT", "TRANSPOSE", "CONCATENATION", "RESHAPE",
                          "GATHER", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"})


#: MAC-equivalents per element of element-wise ops that are not a single multiply-add. Measured on the
#: host with the microbenchmark (LiteRT/XNNPACK, fp32: a LOGISTIC costs ≈17 and a HARD_SWISH ≈4 times
#: what the roofline charges an element of an ADD); the same relative costs are assumed elsewhere
#: (transcendentals take ≈10-20 SIMD instructions per element on any ISA).
ELEMENT_COST = {"LOGISTIC": 16.0, "TANH": 16.0, "EXP": 12.0, "GELU": 20.0, "ELU": 12.0, "SOFTMAX": 16.0,
                "LOG_SOFTMAX": 18.0, "HARD_SWISH": 4.0, "SILU": 17.0, "LAYER_NORM": 8.0, "GROUP_NORM": 8.0}


@dataclass
class KernelCost:
    name: str
    op: str  # TFLite builtin name (or a composite name, see layers.py)
    op_class: str  # conv3x3 | conv1x1 | depthwise | grouped | fc | pool | elementwise | norm | act
    macs: int = 0
    in_channels: int | None = None
    out_channels: int | None = None
    kernel: tuple[int, int] = (1, 1)
    groups: int = 1
    rows: int = 1  # output pixels × batch (conv) or rows of the matmul (fc)
    in_elements: int = 0  # activation elements read
    out_elements: int = 0  # activation elements written
    weight_elements: int = 0  # parameters (weights + bias)
    bias_elements: int = 0
    max_nonunit_dims: int = 0
    passes: int = 1  # element-wise passes a composite op takes once lowered (SiLU = LOGISTIC + MUL: 2)


@dataclass
class LatencyEstimate:
    total_ms: float
    kernel_ms: list[float]  # per kernel, including fallback cost; transitions / streaming not included
    on_accelerator: list[bool]  # per kernel (all False without an accelerator for this precision)
    accelerator: str = ""  # accelerator name when one is used for this precision
    fallback: list[int] = field(default_factory=list)  # indices of kernels that run on the host CPU
    unsupported: list[int] = field(default_factory=list)  # indices of kernels the accelerator cannot run
    transitions: int = 0
    transition_ms: float = 0.0
    param_bytes_on_accelerator: int = 0
    spill_bytes: int = 0  # parameters beyond the on-chip parameter cache (streamed every inference)
    spill_ms: float = 0.0
    io_ms: float = 0.0  # input/output over the accelerator link
    overhead_ms: float = 0.0  # runtime.invoke_overhead_us


def kernel_bytes(kc: KernelCost, precision: str, bpe: int) -> int:
    return int((kc.in_elements + kc.out_elements) * bpe + weight_bytes(precision, kc.weight_elements, kc.bias_elements))


def kernel_work(target: Target, kc: KernelCost, precision: str) -> tuple[float, int]:
    """(work in MAC-equivalents, padded MACs) of a kernel on the target's main compute path."""
    return layer_work(target.precision(precision), kc)


def kernel_ms(target: Target, kc: KernelCost, precision: str, threads: int) -> tuple[float, int, int]:
    """(latency ms, padded MACs, bytes moved) of one kernel on the target's main compute path."""
    spec = target.precision(precision)
    work, padded = layer_work(spec, kc)
    if kc.op_class not in ("conv3x3", "conv1x1", "depthwise", "grouped", "fc") and not target.runtime.fuse_all_activations:
        work *= ELEMENT_COST.get(kc.op, 1.0)
    moved = kernel_bytes(kc, precision, spec.bytes_per_element) * kc.passes
    # data movement (no arithmetic, no requantisation): output_element_cost does not apply
    out_el = 0 if kc.op in MOVEMENT_OPS else kc.out_elements
    ms = roofline_ms(target, kc.op_class, work, moved, out_el, precision, threads)
    ms += (kc.passes - 1) * target.ops.fixed_overhead_us * 1e-3  # one kernel per pass
    ms += pixel_overhead_ms(target, kc.op_class, kc.kernel, kc.rows)
    return ms, padded, moved


def supported_on(target: Target, kc: KernelCost) -> bool:
    """Whether the target's accelerator can run this kernel (True when there is no accelerator)."""
    acc = target.accelerator
    if acc is None:
        return True
    if kc.op in acc.unsupported_ops:
        return False
    if acc.max_nonunit_dims is not None and kc.max_nonunit_dims > acc.max_nonunit_dims:
        return False
    return True


def fallback_ms(target: Target, kc: KernelCost) -> float:
    """Latency of a kernel that runs on the host CPU instead of the accelerator."""
    acc = target.accelerator
    assert acc is not None
    if kc.op_class == "free":
        return 0.0
    work = float(kc.macs) if kc.macs else float(max(kc.in_elements, kc.out_elements))
    return work / (acc.fallback_gmacs * 1e9) * 1e3 + acc.fallback_overhead_us * 1e-3


def estimate(
    kernels: list[KernelCost],
    target: Target,
    precision: str,
    threads: int,
    *,
    io_bytes: int = 0,
    per_kernel: list[float] | None = None,
) -> LatencyEstimate:
    """Whole-model latency of ``kernels`` (in execution order) on ``target``.

    ``per_kernel`` may pass the main-path latencies already computed by :func:`kernel_ms`.
    ``io_bytes`` = graph input + output bytes (moved over the accelerator link when there is one).
    """
    bpe = target.precision(precision).bytes_per_element
    main = per_kernel if per_kernel is not None else [kernel_ms(target, k, precision, threads)[0] for k in kernels]
    acc = target.accelerator
    overhead = target.runtime.invoke_overhead_us * 1e-3
    if acc is None or not acc.runs(precision):
        return LatencyEstimate(total_ms=float(sum(main) + overhead), kernel_ms=list(main),
                               on_accelerator=[False] * len(kernels), overhead_ms=overhead)

    unsupported = [i for i, k in enumerate(kernels) if k.op_class != "free" and not supported_on(target, k)]
    on = [True] * len(kernels)
    if unsupported:
        if acc.fallback == "rest":
            for i in range(unsupported[0], len(kernels)):
                on[i] = False
        else:
            for i in unsupported:
                on[i] = False
    ms = [main[i] if on[i] else fallback_ms(target, k) for i, k in enumerate(kernels)]

    transitions, transition_ms = 0, 0.0
    for i in range(1, len(kernels)):
        if on[i] != on[i - 1]:
            transitions += 1
            crossing = kernels[i - 1].out_elements * bpe
            transition_ms += acc.transition_us * 1e-3
            if acc.link_gbps:
                transition_ms += crossing / (acc.link_gbps * 1e9) * 1e3
    params_on = sum(weight_bytes(precision, k.weight_elements, k.bias_elements) for k, o in zip(kernels, on) if o)
    spill = max(0, params_on - acc.param_cache_bytes) if acc.param_cache_bytes else 0
    spill_ms = spill / (acc.link_gbps * 1e9) * 1e3 if spill and acc.link_gbps else 0.0
    io_ms = io_bytes / (acc.link_gbps * 1e9) * 1e3 if acc.link_gbps and any(on) else 0.0
    total = sum(ms) + transition_ms + spill_ms + io_ms + overhead
    return LatencyEstimate(
        total_ms=float(total), kernel_ms=ms, on_accelerator=on, accelerator=acc.name,
        fallback=[i for i, o in enumerate(on) if not o], unsupported=unsupported, transitions=transitions,
        transition_ms=transition_ms, param_bytes_on_accelerator=int(params_on), spill_bytes=int(spill),
        spill_ms=spill_ms, io_ms=io_ms, overhead_ms=overhead,
    )


def predict_ms(
    kernels: list[KernelCost], target: Target, precision: str | None = None, threads: int | None = None,
    io_elements: int = 0,
) -> float:
    """Whole-model latency (ms) of already-extracted kernels: what ``profile()`` reports as latency_ms.

    Cheap (no torch): use it to re-predict one model on many targets or profile variants.
    ``io_elements`` = graph input + output elements.
    """
    precision = precision or target.default_precision
    threads = target.runtime.threads if threads is None else int(threads)
    bpe = target.precision(precision).bytes_per_element
    return estimate(kernels, target, precision, threads, io_bytes=io_elements * bpe).total_ms
