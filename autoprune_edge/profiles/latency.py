"""Per-kernel latency model (a roofline with SIMD-tile padding), driven by a target profile.

For one runtime kernel (a conv/fc with its folded BatchNorm and fused activation, or a standalone
pool / elementwise op)::

    work    = padded_macs + output_element_cost × output_elements      (MAC-equivalents)
    compute = work / (gmacs_per_core × thread_speedup(threads) × ops.<class>)
    memory  = bytes_moved / memory.bandwidth_gbps                      (does not scale with threads)
    latency = max(compute, memory) + ops.fixed_overhead_us

and the model's latency is the sum over kernels plus ``runtime.invoke_overhead_us``.

* **Padded MACs.** XNNPACK's GEMM micro-kernels compute output channels in tiles of ``nr`` and input
  channels in blocks of ``kr``; a layer with 33 output channels costs what 64 cost when nr = 32
  (research/host-speed.md §5b). ``padded_macs`` rounds output channels up to ``out_tile``
  (``out_tile_small`` when the count is at most that), input channels per group and kernel tap up to
  ``in_tile``, and depthwise channels up to ``dw_tile``.
* **Work of ops without MACs.** pooling: output elements × kernel area (global pooling: input
  elements); elementwise / unfused norm / unfused activation: input elements read.
* **Bytes moved.** activation inputs + output + weights at the precision's element size (int8 biases
  are int32).

The functions taking channel counts (:func:`conv_latency_ms`, :func:`linear_latency_ms`) are pure and
cheap, so pruning code can tabulate latency per channel count for a latency budget.
"""
from __future__ import annotations

import math

from ..targets import Target, resolve_target
from ..targets.schema import PrecisionCompute
from .opclass import CONV_CLASSES, conv_op_class


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (``n`` itself when multiple <= 1)."""
    if multiple <= 1:
        return int(n)
    return int(-(-int(n) // multiple) * multiple)


def padded_out_channels(spec: PrecisionCompute, c: int) -> int:
    tile = spec.out_tile_small if c <= spec.out_tile_small else spec.out_tile
    return round_up(c, tile)


def padded_conv_macs(
    spec: PrecisionCompute, cin: int, cout: int, kernel: tuple[int, int], groups: int, rows: int
) -> int:
    """MACs a conv costs after XNNPACK pads channels to its micro-kernel tiles.

    ``rows`` = batch × out_h × out_w. Depthwise convs pad channels to ``dw_tile``; dense and grouped
    convs pad output channels (per group) to ``out_tile`` and input channels per group and tap to
    ``in_tile``.
    """
    kh, kw = kernel
    if conv_op_class(cin, cout, kernel, groups) == "depthwise":
        return rows * round_up(cout, spec.dw_tile) * kh * kw
    cin_g, cout_g = cin // groups, cout // groups
    return rows * groups * padded_out_channels(spec, cout_g) * round_up(cin_g, spec.in_tile) * kh * kw


def padded_fc_macs(spec: PrecisionCompute, fin: int, fout: int, rows: int = 1) -> int:
    return rows * padded_out_channels(spec, fout) * round_up(fin, spec.in_tile)


def roofline_ms(
    target: Target,
    op_class: str,
    work: float,
    bytes_moved: float,
    out_elements: int,
    precision: str,
    threads: int,
) -> float:
    """Latency of one kernel in ms: max(compute, memory) + fixed overhead. ``free`` ops cost 0."""
    if op_class == "free":
        return 0.0
    spec = target.precision(precision)
    eff = target.efficiency(op_class, precision)
    total = work + spec.output_element_cost * out_elements
    macs_per_s = spec.gmacs_per_core * 1e9 * kernel_speedup(target, total, threads) * eff
    compute_s = total / macs_per_s
    sync_us = target.compute.thread_sync_us if threads > 1 else 0.0
    return max(compute_s, memory_seconds(target, bytes_moved)) * 1e3 + (target.ops.fixed_overhead_us + sync_us) * 1e-3


def kernel_fixed_ms(target: Target, threads: int) -> float:
    """The part of every kernel's latency that does not shrink with its channels: dispatch, and the
    thread pool's sync when it runs on more than one thread."""
    return (target.ops.fixed_overhead_us + (target.compute.thread_sync_us if threads > 1 else 0.0)) * 1e-3


def kernel_speedup(target: Target, work: float, threads: int) -> float:
    """The thread speed-up one kernel of ``work`` MAC-equivalents gets: the profile's ``thread_speedup``
    for big kernels, less for small ones (too few tiles to keep every thread busy)."""
    s = target.thread_speedup(threads)
    half = target.compute.parallel_half_work
    if threads <= 1 or not half:
        return s
    return 1.0 + (s - 1.0) * work / (work + half)


def pixel_overhead_ms(target: Target, op_class: str, kernel: tuple[int, int], rows: int) -> float:
    """``ops.pixel_overhead_ns`` per output pixel of a dense or grouped k>1 conv or a 2-D pool: the
    indirection-buffer walk XNNPACK does per pixel, which dominates thin layers at 8-32 px. 1x1 convs are
    plain GEMMs and pay none; depthwise convs' per-pixel cost is inside ``ops.depthwise`` (their MACs grow
    with pixels x channels, and public depthwise-heavy data cannot tell the two apart)."""
    ns = target.ops.pixel_overhead_ns
    if not ns or (op_class not in ("conv3x3", "grouped", "pool")) or tuple(kernel) == (1, 1):
        return 0.0
    return rows * ns * 1e-6


def memory_seconds(target: Target, bytes_moved: float) -> float:
    """Time to stream a kernel's bytes: the first ``memory.cache_bytes`` at the cache's bandwidth (what the
    previous kernel left there), the rest at ``memory.bandwidth_gbps``. Small-tensor kernels (a 16-channel
    32x32 add moves 200 KB) run from cache several times faster than DRAM-bound ones (research:
    benchmarks/results/host_fidelity.md, the small_* networks)."""
    mem = target.memory
    if not mem.cache_bytes or not mem.cache_bandwidth_gbps:
        return bytes_moved / (mem.bandwidth_gbps * 1e9)
    in_cache = min(bytes_moved, mem.cache_bytes)
    return in_cache / (mem.cache_bandwidth_gbps * 1e9) + (bytes_moved - in_cache) / (mem.bandwidth_gbps * 1e9)


def _threads(target: Target, threads: int | None) -> int:
    t = target.runtime.threads if threads is None else int(threads)
    if t < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return t


def weight_bytes(precision: str, weight_elements: int, bias_elements: int) -> int:
    """Bytes of a layer's parameters in the converted model (int8: int8 weights, int32 biases)."""
    if precision == "int8":
        return (weight_elements - bias_elements) + 4 * bias_elements
    return {"fp32": 4, "fp16": 2}[precision] * weight_elements


def conv_latency_ms(
    target: Target | str,
    cin: int,
    cout: int,
    k: int | tuple[int, int],
    groups: int = 1,
    out_hw: int | tuple[int, int] = 1,
    precision: str = "fp32",
    threads: int | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    batch: int = 1,
    bias: bool = True,
) -> float:
    """Predicted latency (ms) of one conv (+ folded BN + fused ReLU) with these channel counts.

    ``out_hw`` is the output spatial size (int for square); the input is taken as ``out_hw × stride``.
    """
    target = resolve_target(target)
    threads = _threads(target, threads)
    spec = target.precision(precision)
    kh, kw = (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))
    oh, ow = (out_hw, out_hw) if isinstance(out_hw, int) else (int(out_hw[0]), int(out_hw[1]))
    sh, sw = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
    rows = batch * oh * ow
    op_class = conv_op_class(cin, cout, (kh, kw), groups)
    padded = padded_conv_macs(spec, cin, cout, (kh, kw), groups, rows)
    bpe = spec.bytes_per_element
    in_el = batch * cin * oh * sh * ow * sw
    out_el = rows * cout
    w_el = cout * (cin // groups) * kh * kw
    b_el = cout if bias else 0
    bytes_moved = (in_el + out_el) * bpe + weight_bytes(precision, w_el + b_el, b_el)
    return (roofline_ms(target, op_class, padded, bytes_moved, out_el, precision, threads)
            + pixel_overhead_ms(target, op_class, (kh, kw), rows))


def linear_latency_ms(
    target: Target | str,
    fin: int,
    fout: int,
    precision: str = "fp32",
    threads: int | None = None,
    *,
    rows: int = 1,
    bias: bool = True,
) -> float:
    """Predicted latency (ms) of one fully connected layer."""
    target = resolve_target(target)
    threads = _threads(target, threads)
    spec = target.precision(precision)
    padded = padded_fc_macs(spec, fin, fout, rows)
    bpe = spec.bytes_per_element
    b_el = fout if bias else 0
    bytes_moved = rows * (fin + fout) * bpe + weight_bytes(precision, fin * fout + b_el, b_el)
    return roofline_ms(target, "fc", padded, bytes_moved, rows * fout, precision, threads)


def layer_work(spec: PrecisionCompute, layer) -> tuple[float, int]:
    """(work in MAC-equivalents, padded MACs) of a traced head layer (see module docstring)."""
    oc = layer.op_class
    if oc in CONV_CLASSES and layer.in_channels and layer.out_channels:
        padded = padded_conv_macs(spec, layer.in_channels, layer.out_channels, layer.kernel, layer.groups, layer.rows)
        # keep exotic convs (transposed, dilated-with-odd-shapes, 3-D) no cheaper than their real MACs
        padded = max(padded, layer.macs)
        return float(padded), padded
    if oc == "fc":
        if layer.in_channels and layer.out_channels and layer.macs:
            # a matmul's MACs are rows × in × out; pad in and out to the tiles
            scale = (padded_out_channels(spec, layer.out_channels) * math.ceil(layer.in_channels / spec.in_tile) * spec.in_tile) / (
                layer.out_channels * layer.in_channels
            )
            padded = int(round(layer.macs * max(1.0, scale)))
        else:
            padded = layer.macs
        return float(padded), padded
    if layer.macs:  # anything else with MACs (rare): cost them unpadded
        return float(layer.macs), layer.macs
    if oc == "pool":
        kh, kw = layer.kernel
        if (kh, kw) != (1, 1) and layer.out_elements:
            return float(layer.out_elements * kh * kw), 0
        return float(max(layer.in_elements, layer.out_elements)), 0
    if oc == "free":
        return 0.0, 0
    return float(max(layer.in_elements, layer.out_elements)), 0
