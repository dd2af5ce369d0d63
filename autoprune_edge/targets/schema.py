"""Target profile schema: frozen dataclasses, and a strict TOML validator with line-numbered errors.

One TOML file describes one device + runtime. Every key is documented in ``docs/targets.md``; the
table ``_SPEC`` below is the single source of truth for which keys exist, which are required, and what
values they accept. Errors are one line, name the file, the dotted key and a line number, e.g.::

    raspberrypi4.toml: key compute.fp32.gmacs_per_core must be a positive number (line 41)
"""
from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..budget import Budget, BudgetError, parse_budget
from ..converters.formats import FORMAT_NAMES
from ..errors import TargetProfileError

SCHEMA_VERSION = 1

#: Precisions a target may list. ``fp16`` means fp16 arithmetic *and* fp16 activations.
PRECISIONS = ("fp32", "fp16", "int8")
#: Bytes per activation / weight element for each precision (int8 biases are int32: 4 bytes).
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}
#: Op classes that carry an efficiency factor in ``[ops]``. ``norm``/``act`` layers that are not fused
#: into a preceding conv/fc cost as ``elementwise``; matmuls between activations cost as ``fc``.
EFFICIENCY_CLASSES = ("conv3x3", "conv1x1", "depthwise", "grouped", "fc", "pool", "elementwise")
#: Artifact formats a target may list as defaults.
FORMATS = FORMAT_NAMES  # the converters' format table
#: Keys allowed in ``[budgets]``, mapped to the budget kind they must parse to.
BUDGET_KEYS = {
    "macs": "macs",
    "params": "params",
    "latency": "latency_ms",
    "memory": "memory_bytes",
    "size": "size_bytes",
}
REFERENCE_ROLES = ("fit", "holdout", "anchor")
#: How an accelerator handles an op it cannot run: ``op`` = only that op runs on the host CPU (Core ML,
#: GPU delegates, TensorRT plugins); ``rest`` = that op and everything after it run on the CPU (the Edge
#: TPU compiler partitions a graph only once).
FALLBACK_MODES = ("op", "rest")
#: Op names accepted in ``accelerator.unsupported_ops``: TFLite builtin operator names, plus the
#: composite names the profiler gives to ops TFLite lowers into several builtins.
KNOWN_OPS = (
    "ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "CONCATENATION", "SPLIT",
    "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "FULLY_CONNECTED", "BATCH_MATMUL",
    "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "L2_NORMALIZATION",
    "RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "PRELU", "ELU", "LOGISTIC", "TANH", "HARD_SWISH",
    "GELU", "EXP", "SOFTMAX", "LOG_SOFTMAX", "RESHAPE", "TRANSPOSE", "PAD", "PADV2", "STRIDED_SLICE",
    "SLICE", "GATHER", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
    "QUANTIZE", "DEQUANTIZE", "CAST", "LSTM",
    # composites (lowered to several builtins by the converter)
    "LAYER_NORM", "GROUP_NORM", "BATCH_NORM", "SILU", "ELEMENTWISE",
)
_BUDGET_ALIASES = {
    "ram": "memory", "peak_memory": "memory", "memory_bytes": "memory", "flops": "macs", "mflops": "macs",
    "latency_ms": "latency", "time": "latency", "model_size": "size", "file_size": "size", "size_bytes": "size",
}


# --------------------------------------------------------------------------------------------------
# The dataclass tree (frozen and hashable, so a Target can key caches and latency tables)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    cpu: str
    accelerator: str = ""
    os: str = ""


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
    bandwidth_gbps: float  # effective DRAM/cache bandwidth seen by one inference (GB/s, 1e9)
    peak_bandwidth_gbps: float | None = None
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


# --------------------------------------------------------------------------------------------------
# Key specification
# --------------------------------------------------------------------------------------------------

_Check = Callable[[Any], str | None]  # returns an error phrase, or None when the value is fine


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_number(v: Any) -> str | None:
    return None if _is_num(v) and v > 0 else "must be a positive number"


def nonneg_number(v: Any) -> str | None:
    return None if _is_num(v) and v >= 0 else "must be a number >= 0"


def positive_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "must be a positive integer"


def efficiency(v: Any) -> str | None:
    return None if _is_num(v) and 0 < v <= 4 else "must be a number in (0, 4]"


def nonneg_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "must be an integer >= 0"


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def any_text_list(v: Any) -> str | None:
    if isinstance(v, list) and all(isinstance(x, str) and x for x in v):
        return None
    return "must be a list of strings"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def any_text(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def name_text(v: Any) -> str | None:
    if isinstance(v, str) and re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", v):
        return None
    return "must be a lower-case name of letters, digits, '-' and '_'"


def positive_list(v: Any) -> str | None:
    if isinstance(v, list) and v and all(_is_num(x) and x > 0 for x in v):
        return None
    return "must be a non-empty list of positive numbers"


def text_list(v: Any) -> str | None:
    if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        return None
    return "must be a non-empty list of strings"


def one_of(options: tuple[str, ...]) -> _Check:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


@dataclass(frozen=True)
class _Key:
    check: _Check
    required: bool = True
    numeric: bool = False  # numbers must have an entry in [sources]


def _num(check: _Check, required: bool = True) -> _Key:
    return _Key(check, required, numeric=True)


_PRECISION_KEYS = {
    "gmacs_per_core": _num(positive_number),
    "peak_gmacs_per_core": _num(positive_number, required=False),
    "out_tile": _num(positive_int),
    "out_tile_small": _num(positive_int, required=False),
    "in_tile": _num(positive_int, required=False),
    "dw_tile": _num(positive_int, required=False),
    "channel_multiple": _num(positive_int, required=False),
    "output_element_cost": _num(nonneg_number, required=False),
}

_PRECISION_OPS_KEYS = {k: _num(efficiency, required=False) for k in EFFICIENCY_CLASSES}

_SPEC: dict[str, Any] = {
    "schema_version": _Key(positive_int),
    "name": _Key(name_text),
    "description": _Key(text),
    "notes": _Key(any_text, required=False),
    "storage_bytes": _num(positive_int),
    "channel_multiple": _num(positive_int),
    "precisions": _Key(text_list),
    "default_formats": _Key(text_list),
    "device": {
        "cpu": _Key(text),
        "accelerator": _Key(any_text, required=False),
        "os": _Key(any_text, required=False),
    },
    "runtime": {
        "name": _Key(text),
        "version": _Key(any_text, required=False),
        "threads": _num(positive_int),
        "invoke_overhead_us": _num(nonneg_number, required=False),
        "fuse_all_activations": _Key(boolean, required=False),
    },
    "compute": {
        "cores": _num(positive_int),
        "clock_ghz": _num(positive_number, required=False),
        "thread_speedup": _num(positive_list),
        # plus one sub-table per precision: [compute.fp32], [compute.int8], ... (_PRECISION_KEYS)
    },
    "memory": {
        "ram_bytes": _num(positive_int),
        "bandwidth_gbps": _num(positive_number),
        "peak_bandwidth_gbps": _num(positive_number, required=False),
        "weights_in_ram": _Key(boolean, required=False),
        "runtime_overhead_bytes": _num(nonneg_int, required=False),
    },
    "ops": {
        **{k: _num(efficiency) for k in EFFICIENCY_CLASSES},
        "fixed_overhead_us": _num(nonneg_number),
    },
}

_REFERENCE_KEYS = {
    "model": _Key(text),
    "precision": _Key(one_of(PRECISIONS)),
    "threads": _Key(positive_int),
    "latency_ms": _Key(positive_number),
    "source": _Key(text),
    "role": _Key(one_of(REFERENCE_ROLES)),
    "input_size": _Key(positive_int, required=False),
    "note": _Key(any_text, required=False),
    "device": _Key(any_text, required=False),
    "scale": _Key(positive_number, required=False),
}

_ACCELERATOR_KEYS = {
    "name": _Key(text),
    "precisions": _Key(text_list),
    "unsupported_ops": _Key(any_text_list, required=False),
    "max_nonunit_dims": _num(positive_int, required=False),
    "fallback": _Key(one_of(FALLBACK_MODES), required=False),
    "fallback_gmacs": _num(positive_number),
    "fallback_overhead_us": _num(nonneg_number, required=False),
    "transition_us": _num(nonneg_number, required=False),
    "link_gbps": _num(positive_number, required=False),
    "param_cache_bytes": _num(positive_int, required=False),
}

_TOP_OPTIONAL_TABLES = ("budgets", "references", "sources", "accelerator")


# --------------------------------------------------------------------------------------------------
# Line lookup: tomllib gives no positions for values, so scan the text
# --------------------------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _split_dotted(s: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', s)
    return [a or b or c for a, b, c in parts]


class _Lines:
    """Maps dotted key paths (with list indices for arrays of tables) to 1-based line numbers."""

    def __init__(self, text_: str):
        self.keys: dict[tuple, int] = {}
        self.tables: dict[tuple, int] = {}
        counters: dict[tuple, int] = {}
        current: tuple = ()
        for lineno, line in enumerate(text_.splitlines(), start=1):
            m = _HEADER.match(line)
            if m and not line.lstrip().startswith("#"):
                path = tuple(_split_dotted(m.group(2)))
                if m.group(1) == "[[":
                    idx = counters.get(path, 0)
                    counters[path] = idx + 1
                    current = path + (idx,)
                else:
                    current = path
                self.tables.setdefault(current, lineno)
                continue
            km = re.match(r'^\s*((?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+))*)\s*=', line)
            if km:
                key = tuple(_split_dotted(km.group(1)))
                self.keys.setdefault(current + key, lineno)

    def line(self, path: tuple) -> int | None:
        """The key's own line; else the line where its table (or nearest ancestor) starts."""
        path = tuple(path)
        if path in self.keys:
            return self.keys[path]
        for i in range(len(path), -1, -1):
            p = path[:i]
            if p in self.tables:
                return self.tables[p]
            if p and p in self.keys:  # inline table / array value
                return self.keys[p]
        return 1


# --------------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------------


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + p
    return out


class _Validator:
    def __init__(self, display: str, text_: str):
        self.display = display
        self.lines = _Lines(text_)

    def fail(self, path: tuple, phrase: str) -> TargetProfileError:
        return TargetProfileError(
            f"{self.display}: key {_dotted(path)} {phrase} (line {self.lines.line(path)})"
        )

    def table(self, data: Any, path: tuple) -> dict:
        if not isinstance(data, dict):
            raise self.fail(path, "must be a table")
        return data

    def check_keys(self, data: dict, spec: dict, path: tuple, extra: tuple[str, ...] = ()) -> None:
        allowed = list(spec) + list(extra)
        for k in data:
            if k not in allowed:
                guess = difflib.get_close_matches(k, allowed, n=1)
                hint = f"; did you mean {_dotted(path + (guess[0],))}?" if guess else ""
                raise TargetProfileError(
                    f"{self.display}: unknown key {_dotted(path + (k,))} "
                    f"(line {self.lines.line(path + (k,))}){hint}"
                )
        for k, rule in spec.items():
            if isinstance(rule, dict):
                if k not in data:
                    raise self.fail(path + (k,), "is missing (a required table)")
                continue
            if k not in data:
                if rule.required:
                    raise self.fail(path + (k,), "is missing")
                continue
            phrase = rule.check(data[k])
            if phrase:
                raise self.fail(path + (k,), phrase)


def _numeric_paths(data: dict, spec: dict, path: tuple = ()) -> list[tuple]:
    out = []
    for k, v in data.items():
        rule = spec.get(k) if isinstance(spec, dict) else None
        if isinstance(rule, dict) and isinstance(v, dict):
            out += _numeric_paths(v, rule, path + (k,))
        elif isinstance(rule, _Key) and rule.numeric:
            out.append(path + (k,))
    return out


def parse_target(text_: str, display: str, path: str = "") -> Target:
    """Validate TOML text and build a Target. ``display`` names the file in error messages."""
    try:
        data = tomllib.loads(text_)
    except tomllib.TOMLDecodeError as e:
        raise TargetProfileError(f"{display}: invalid TOML: {e}") from None
    v = _Validator(display, text_)

    precision_tables = tuple(p for p in PRECISIONS)
    v.check_keys(data, _SPEC, (), extra=_TOP_OPTIONAL_TABLES)
    for k, rule in _SPEC.items():
        if isinstance(rule, dict):
            tbl = v.table(data[k], (k,))
            extra = precision_tables if k == "compute" else ()
            v.check_keys(tbl, rule, (k,), extra=extra)

    if data["schema_version"] != SCHEMA_VERSION:
        raise v.fail(("schema_version",), f"must be {SCHEMA_VERSION} (this version of autoprune-edge)")

    # precisions <-> [compute.<precision>] tables
    precisions = tuple(data["precisions"])
    for i, p in enumerate(precisions):
        if p not in PRECISIONS:
            raise v.fail(("precisions",), f"has unknown precision {p!r} (known: {', '.join(PRECISIONS)})")
        if precisions.count(p) > 1:
            raise v.fail(("precisions",), f"lists {p!r} twice")
    compute = data["compute"]
    for p in PRECISIONS:
        if p in compute and p not in precisions:
            raise v.fail(("compute", p), f"is given but {p} is not in precisions")
    specs = []
    for p in precisions:
        if p not in compute:
            raise v.fail(("compute", p), "is missing (a table is required for every entry of precisions)")
        tbl = v.table(compute[p], ("compute", p))
        v.check_keys(tbl, _PRECISION_KEYS, ("compute", p), extra=("ops",))
        ops_tbl = v.table(tbl.get("ops", {}), ("compute", p, "ops"))
        v.check_keys(ops_tbl, _PRECISION_OPS_KEYS, ("compute", p, "ops"))
        specs.append(
            PrecisionCompute(
                name=p,
                gmacs_per_core=float(tbl["gmacs_per_core"]),
                peak_gmacs_per_core=float(tbl["peak_gmacs_per_core"]) if "peak_gmacs_per_core" in tbl else None,
                out_tile=tbl["out_tile"],
                out_tile_small=tbl.get("out_tile_small", tbl["out_tile"]),
                in_tile=tbl.get("in_tile", 1),
                dw_tile=tbl.get("dw_tile", tbl["out_tile"]),
                channel_multiple=tbl.get("channel_multiple", data["channel_multiple"]),
                output_element_cost=float(tbl.get("output_element_cost", 0.0)),
                ops=tuple(sorted((k, float(x)) for k, x in ops_tbl.items())),
            )
        )

    cores = compute["cores"]
    ts = [float(x) for x in compute["thread_speedup"]]
    if len(ts) != cores:
        raise v.fail(("compute", "thread_speedup"), f"must have one entry per thread count 1..{cores} (compute.cores)")
    if abs(ts[0] - 1.0) > 1e-9:
        raise v.fail(("compute", "thread_speedup"), "must start with 1.0 (the speed-up of one thread)")
    if any(b < a for a, b in zip(ts, ts[1:])):
        raise v.fail(("compute", "thread_speedup"), "must not decrease with more threads")
    runtime = data["runtime"]
    if runtime["threads"] > cores:
        raise v.fail(("runtime", "threads"), f"must be <= compute.cores ({cores})")

    formats = tuple(data["default_formats"])
    for f in formats:
        if f not in FORMATS:
            raise v.fail(("default_formats",), f"has unknown format {f!r} (known: {', '.join(FORMATS)})")
        if f.startswith("tflite-") and f.split("-", 1)[1] not in precisions:
            raise v.fail(("default_formats",), f"has {f!r} but {f.split('-', 1)[1]} is not in precisions")

    # [budgets]
    budgets = []
    raw_budgets = v.table(data.get("budgets", {}), ("budgets",))
    for k, val in raw_budgets.items():
        if k not in BUDGET_KEYS:
            guess = _BUDGET_ALIASES.get(k.lower()) or next(iter(difflib.get_close_matches(k, list(BUDGET_KEYS), n=1)), None)
            hint = f"; did you mean budgets.{guess}?" if guess else ""
            raise TargetProfileError(
                f"{display}: unknown key budgets.{k} (line {v.lines.line(('budgets', k))}){hint}"
            )
        if not isinstance(val, str):
            raise v.fail(("budgets", k), 'must be a budget string such as "25ms" or "512MB"')
        try:
            b = parse_budget(val, size=(k == "size"))
        except BudgetError as e:
            raise v.fail(("budgets", k), f"is not a valid budget: {e}") from None
        if b.kind != BUDGET_KEYS[k]:
            raise v.fail(("budgets", k), f"must be a {BUDGET_KEYS[k]} budget, got {val!r}")
        budgets.append(b)

    # [[references]]
    refs = []
    raw_refs = data.get("references", [])
    if not isinstance(raw_refs, list):
        raise v.fail(("references",), "must be an array of tables ([[references]])")
    for i, r in enumerate(raw_refs):
        r = v.table(r, ("references", i))
        v.check_keys(r, _REFERENCE_KEYS, ("references", i))
        if r["precision"] not in precisions:
            raise v.fail(("references", i, "precision"), f"must be one of the target's precisions ({', '.join(precisions)})")
        refs.append(
            Reference(
                model=r["model"],
                precision=r["precision"],
                threads=r["threads"],
                latency_ms=float(r["latency_ms"]),
                source=r["source"],
                role=r["role"],
                input_size=r.get("input_size", 224),
                note=r.get("note", ""),
                device=r.get("device", ""),
                scale=float(r.get("scale", 1.0)),
            )
        )
        if r.get("scale", 1.0) != 1.0 and not r.get("device"):
            raise v.fail(("references", i, "scale"), "needs device = \"...\" (the device the number was measured on)")

    # [accelerator]
    accel = None
    if "accelerator" in data:
        a = v.table(data["accelerator"], ("accelerator",))
        v.check_keys(a, _ACCELERATOR_KEYS, ("accelerator",))
        for p in a["precisions"]:
            if p not in precisions:
                raise v.fail(("accelerator", "precisions"), f"has {p!r}, which is not in precisions")
        for op in a.get("unsupported_ops", []):
            if op not in KNOWN_OPS:
                guess = difflib.get_close_matches(op.upper(), list(KNOWN_OPS), n=1)
                hint = f"; did you mean {guess[0]}?" if guess else " (use TFLite builtin op names, e.g. TRANSPOSE)"
                raise v.fail(("accelerator", "unsupported_ops"), f"has unknown op {op!r}{hint}")
        accel = Accelerator(
            name=a["name"],
            precisions=tuple(a["precisions"]),
            unsupported_ops=tuple(a.get("unsupported_ops", ())),
            max_nonunit_dims=a.get("max_nonunit_dims"),
            fallback=a.get("fallback", "op"),
            fallback_gmacs=float(a["fallback_gmacs"]),
            fallback_overhead_us=float(a.get("fallback_overhead_us", 0.0)),
            transition_us=float(a.get("transition_us", 0.0)),
            link_gbps=float(a["link_gbps"]) if "link_gbps" in a else None,
            param_cache_bytes=a.get("param_cache_bytes"),
        )

    # [sources]: every number must be covered (by its own key or an ancestor table); no stray keys
    sources = v.table(data.get("sources", {}), ("sources",))
    for k, s in sources.items():
        if not isinstance(s, str) or not s.strip():
            raise v.fail(("sources", k), "must be a non-empty string")
        parts = tuple(k.split("."))
        node: Any = data
        for part in parts:
            if not isinstance(node, dict) or part not in node or part == "sources":
                raise TargetProfileError(
                    f"{display}: key sources.{k} names no key of this file (line {v.lines.line(('sources', k))})"
                )
            node = node[part]
    full_spec = dict(_SPEC)
    full_spec["compute"] = {**_SPEC["compute"],
                            **{p: {**_PRECISION_KEYS, "ops": _PRECISION_OPS_KEYS} for p in precisions}}
    full_spec["accelerator"] = _ACCELERATOR_KEYS
    budget_keys = [("budgets", k) for k in raw_budgets]
    for p in _numeric_paths(data, full_spec) + budget_keys:
        if not any(".".join(p[:i]) in sources for i in range(len(p), 0, -1)):
            raise v.fail(p, f"has no source: add \"{_dotted(p)}\" = \"...\" to [sources]")

    m = data["memory"]
    return Target(
        name=data["name"],
        description=data["description"],
        notes=data.get("notes", ""),
        schema_version=data["schema_version"],
        device=Device(**data["device"]),
        runtime=Runtime(
            name=runtime["name"],
            threads=runtime["threads"],
            version=runtime.get("version", ""),
            invoke_overhead_us=float(runtime.get("invoke_overhead_us", 0.0)),
            fuse_all_activations=bool(runtime.get("fuse_all_activations", False)),
        ),
        compute=Compute(
            cores=cores,
            thread_speedup=tuple(ts),
            precisions=tuple(specs),
            clock_ghz=float(compute["clock_ghz"]) if "clock_ghz" in compute else None,
        ),
        memory=Memory(
            ram_bytes=m["ram_bytes"],
            bandwidth_gbps=float(m["bandwidth_gbps"]),
            peak_bandwidth_gbps=float(m["peak_bandwidth_gbps"]) if "peak_bandwidth_gbps" in m else None,
            weights_in_ram=bool(m.get("weights_in_ram", True)),
            runtime_overhead_bytes=int(m.get("runtime_overhead_bytes", 0)),
        ),
        storage_bytes=data["storage_bytes"],
        ops=Ops(**{k: float(val) for k, val in data["ops"].items()}),
        channel_multiple=data["channel_multiple"],
        precisions=precisions,
        default_formats=formats,
        budgets=tuple(budgets),
        references=tuple(refs),
        sources=tuple((k, s) for k, s in sources.items()),
        path=path,
        accelerator=accel,
    )


def load_target_file(path: str | Path, display: str | None = None, expect_name: str | None = None) -> Target:
    path = Path(path)
    display = display or str(path)
    try:
        text_ = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TargetProfileError(f"{display}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TargetProfileError(f"{display}: cannot read: {e}") from None
    target = parse_target(text_, display, str(path))
    if expect_name is not None and target.name != expect_name:
        line = _Lines(text_).line(("name",))
        raise TargetProfileError(
            f"{display}: key name must equal the file name {expect_name!r}, got {target.name!r} (line {line})"
        )
    return target
