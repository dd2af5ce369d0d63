"""A target profile as frozen dataclasses (hashable, so a Target can key caches and latency tables).

``schema.parse_target`` builds them from a validated TOML file; the cost model reads them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..budget import Budget
from ..errors import TargetProfileError
from .vocabulary import BYTES_PER_ELEMENT, SCHEMA_VERSION


@dataclass(frozen=True)
class Device:
    cpu: str
    accelerator: str = ""
    os: str = ""
    cpu_flags: tuple[str, ...] = ()  # empty: not recorded


@dataclass(frozen=True)
class Runtime:
    name: str
    threads: int
    version: str = ""
    invoke_overhead_us: float = 0.0
    fuse_all_activations: bool = False  # TensorRT / Core ML fuse any pointwise activation into the conv


@dataclass(frozen=True)
class PrecisionCompute:
    """Throughput and SIMD tiling of one precision's kernels on this runtime."""

    name: str
    gmacs_per_core: float  # effective, on padded MACs, 1 thread, efficiency-1.0 op
    peak_gmacs_per_core: float | None
    out_tile: int  # output channels are padded up to a multiple of this
    out_tile_small: int  # ... or of this one when out channels <= out_tile_small
    in_tile: int  # input channels (per group, per kernel tap) are padded up to a multiple of this
    dw_tile: int  # depthwise channels are padded up to a multiple of this
    channel_multiple: int  # preferred channel rounding when pruning for this precision only
    output_element_cost: float  # extra MAC-equivalents per output element (requantisation etc.)
    # per-op-class efficiencies for this precision only ([compute.<p>.ops]); classes not listed use [ops]
    ops: tuple[tuple[str, float], ...] = ()

    @property
    def bytes_per_element(self) -> int:
        return BYTES_PER_ELEMENT[self.name]


@dataclass(frozen=True)
class Compute:
    cores: int
    thread_speedup: tuple[float, ...]  # speed-up at 1..cores threads; [0] == 1.0
    precisions: tuple[PrecisionCompute, ...]
    clock_ghz: float | None = None
    # small kernels do not scale: a kernel of W MAC-equivalents gets 1 + (s - 1) * W / (W + parallel_half_work)
    # of the thread_speedup s, and every kernel run on more than one thread pays thread_sync_us (the
    # thread pool's wake-up and join). 0 = ideal scaling, no sync cost.
    parallel_half_work: float = 0.0
    thread_sync_us: float = 0.0

    def speedup(self, threads: int) -> float:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return self.thread_speedup[min(threads, len(self.thread_speedup)) - 1]

    def get(self, precision: str) -> PrecisionCompute | None:
        for p in self.precisions:
            if p.name == precision:
                return p
        return None


@dataclass(frozen=True)
class Memory:
    ram_bytes: int
    bandwidth_gbps: float  # effective DRAM (or last-level) bandwidth seen by one inference (GB/s, 1e9)
    peak_bandwidth_gbps: float | None = None
    # a kernel's first cache_bytes of traffic stream at cache_bandwidth_gbps (activations that the previous
    # kernel just wrote, small weights); the rest at bandwidth_gbps. 0 = one level only.
    cache_bytes: int = 0
    cache_bandwidth_gbps: float | None = None
    weights_in_ram: bool = True  # False on MCUs: weights stay in flash (storage) and execute in place
    runtime_overhead_bytes: int = 0  # RAM the runtime itself needs besides the arena and the weights


@dataclass(frozen=True)
class Accelerator:
    """An accelerator (NPU, GPU, Edge TPU) that runs the ops it supports; the rest fall back to a CPU.

    When present, ``[compute.<precision>]`` and ``[ops]`` describe the accelerator for the precisions it
    runs (``precisions``); ops it cannot run cost ``work / fallback_gmacs + fallback_overhead_us`` on the
    host CPU, plus ``transition_us`` and the tensor transfer over ``link_gbps`` at every switch.
    """

    name: str
    precisions: tuple[str, ...]
    unsupported_ops: tuple[str, ...] = ()
    max_nonunit_dims: int | None = None  # tensors with more dims > 1 cannot run (Edge TPU: 3)
    fallback: str = "op"  # op | rest (see FALLBACK_MODES)
    fallback_gmacs: float = 1.0  # host-CPU throughput for fallen-back ops (effective, all threads)
    fallback_overhead_us: float = 0.0  # per fallen-back op
    transition_us: float = 0.0  # per switch between accelerator and CPU
    link_gbps: float | None = None  # host <-> accelerator link (USB/PCIe); None = shared memory
    param_cache_bytes: int | None = None  # on-chip parameter memory; the excess streams every inference

    def runs(self, precision: str) -> bool:
        return precision in self.precisions


@dataclass(frozen=True)
class Ops:
    """Per-op-class efficiency (multiplies the precision's throughput) and fixed cost per kernel."""

    conv3x3: float
    conv1x1: float
    depthwise: float
    grouped: float
    fc: float
    pool: float
    elementwise: float
    fixed_overhead_us: float
    # per output pixel of kernels that walk an indirection buffer (dense/grouped k>1 convs, 2-D pools): the
    # pointer setup XNNPACK does per pixel, which dominates thin layers at 8-32 px
    pixel_overhead_ns: float = 0.0

    def efficiency(self, op_class: str) -> float:
        return float(getattr(self, efficiency_class(op_class)))


def efficiency_class(op_class: str) -> str:
    """The efficiency key an op class is costed under (unfused norms and activations are element-wise)."""
    return "elementwise" if op_class in ("norm", "act") else op_class


@dataclass(frozen=True)
class Reference:
    """A published (or measured) latency used to fit or check the profile."""

    model: str
    precision: str
    threads: int
    latency_ms: float
    source: str
    role: str  # fit | holdout | anchor
    input_size: int = 224
    note: str = ""
    device: str = ""  # set when the number was measured on a related device, not this one
    scale: float = 1.0  # multiply latency_ms by this to compare (device != this one); 1.0 otherwise

    @property
    def expected_ms(self) -> float:
        """The latency this profile should predict: ``latency_ms × scale``."""
        return self.latency_ms * self.scale


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    device: Device
    runtime: Runtime
    compute: Compute
    memory: Memory
    storage_bytes: int
    ops: Ops
    channel_multiple: int
    precisions: tuple[str, ...]
    default_formats: tuple[str, ...]
    budgets: tuple[Budget, ...]
    references: tuple[Reference, ...]
    sources: tuple[tuple[str, str], ...]
    notes: str = ""
    schema_version: int = SCHEMA_VERSION
    path: str = field(default="", compare=False)
    accelerator: Accelerator | None = None
    latency_error_pct: float | None = None  # held-out MAPE of the latency predictions; None = unchecked
    latency_error_inputs: tuple[int, int] | None = None  # input sides (px) that error was measured on

    def latency_error_at(self, side: int | None) -> float | None:
        """``latency_error_pct`` for a model whose input's shorter side is ``side`` px: None (unknown) outside
        ``latency_error_inputs``, because a fit checked on 224-px networks says nothing about 32-px cells."""
        if side is None or self.latency_error_inputs is None:
            return self.latency_error_pct
        lo, hi = self.latency_error_inputs
        return self.latency_error_pct if lo <= side <= hi else None

    @property
    def default_precision(self) -> str:
        """The first precision of ``precisions`` (what ``profile`` uses when none is given)."""
        return self.precisions[0]

    def precision(self, precision: str) -> PrecisionCompute:
        """The compute spec of ``precision``; a one-line error if the target does not support it."""
        spec = self.compute.get(precision)
        if spec is None:
            raise TargetProfileError(
                f"target {self.name} does not support precision {precision!r} "
                f"(supported: {', '.join(self.precisions)})"
            )
        return spec

    def efficiency(self, op_class: str, precision: str | None = None) -> float:
        """Efficiency of an op class: the precision's own ``[compute.<p>.ops]`` value, else ``[ops]``.

        Per-precision values exist so that calibrating one precision (the host microbenchmark is fp32
        only) does not move the others."""
        cls = efficiency_class(op_class)
        if precision is not None:
            for k, x in self.precision(precision).ops:
                if k == cls:
                    return x
        return self.ops.efficiency(cls)

    def thread_speedup(self, threads: int) -> float:
        return self.compute.speedup(threads)

    def narrow_channels(self) -> int:
        """A width below `channel_multiple` that every precision runs without padding (XNNPACK pads fp32
        channel counts <= out_tile_small to out_tile_small), or 0: pruning may keep that many channels too."""
        n = max(min(p.out_tile_small, p.channel_multiple) for p in self.compute.precisions)
        return n if n < self.channel_multiple and self.channel_multiple % n == 0 else 0

    def channel_multiple_for(self, precision: str | None = None) -> int:
        """Preferred channel rounding: the target default, or the one tuned for ``precision``."""
        if precision is None:
            return self.channel_multiple
        return self.precision(precision).channel_multiple

    def to_dict(self) -> dict:
        """A JSON-friendly dict of the whole profile (``sources`` as a mapping)."""
        d = asdict(self)
        d["sources"] = dict(self.sources)
        d["compute"]["precisions"] = {p["name"]: p for p in d["compute"]["precisions"]}
        return d

    def source(self, key: str) -> str:
        """Where the number at dotted ``key`` comes from (the nearest covering entry in [sources])."""
        table = dict(self.sources)
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            k = ".".join(parts[:i])
            if k in table:
                return table[k]
        raise KeyError(key)

