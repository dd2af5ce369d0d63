"""Target profile schema: a strict TOML validator with line-numbered errors, building a ``Target``.

One TOML file describes one device + runtime. Every key is documented in ``docs/targets.md``; the
tables in ``keys.py`` are the single source of truth for which keys exist, which are required, and what
values they accept. Errors are one line, name the file, the dotted key and a line number, e.g.::

    raspberrypi4.toml: key compute.fp32.gmacs_per_core must be a positive number (line 41)

``parse_target`` reads the file one table at a time, in a fixed order (the first error wins). The
dataclasses (``target.py``), the vocabulary (``vocabulary.py``) and the key tables are re-exported here.
"""
from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from ..budget import Budget, BudgetError, parse_budget
from ..converters.formats import FORMAT_NAMES
from ..errors import TargetProfileError
from .keys import (  # re-exported: the value checks are part of this module's public names
    ACCELERATOR_KEYS,
    OPTIONAL_TABLES,
    PRECISION_KEYS,
    PRECISION_OPS_KEYS,
    REFERENCE_KEYS,
    TOP_LEVEL_KEYS,
    any_text,
    any_text_list,
    boolean,
    efficiency,
    name_text,
    nonneg_int,
    nonneg_number,
    one_of,
    positive_int,
    positive_list,
    positive_number,
    text,
    text_list,
)
from .target import (
    Accelerator,
    Compute,
    Device,
    Memory,
    Ops,
    PrecisionCompute,
    Reference,
    Runtime,
    Target,
    efficiency_class,
)
from .toml_lines import TomlLines, dotted
from .validator import Validator, numeric_paths
from .vocabulary import (
    BYTES_PER_ELEMENT,
    EFFICIENCY_CLASSES,
    FALLBACK_MODES,
    KNOWN_OPS,
    PRECISIONS,
    REFERENCE_ROLES,
    SCHEMA_VERSION,
)

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
_BUDGET_ALIASES = {
    "ram": "memory", "peak_memory": "memory", "memory_bytes": "memory", "flops": "macs", "mflops": "macs",
    "latency_ms": "latency", "time": "latency", "model_size": "size", "file_size": "size", "size_bytes": "size",
}


def parse_target(text_: str, display: str, path: str = "") -> Target:
    """Validate TOML text and build a Target. ``display`` names the file in error messages."""
    data = _read_toml(text_, display)
    v = Validator(display, text_)
    _check_tables(v, data)
    precisions = _precisions(v, data)
    compute = _compute(v, data, _precision_computes(v, data, precisions))
    runtime = _runtime(v, data["runtime"], compute.cores)
    formats = _default_formats(v, data, precisions)
    budgets = _budgets(v, data)
    references = _references(v, data, precisions)
    accelerator = _accelerator(v, data, precisions)
    sources = _sources(v, data, precisions)
    return Target(
        name=data["name"],
        description=data["description"],
        notes=data.get("notes", ""),
        schema_version=data["schema_version"],
        device=Device(**{**data["device"], "cpu_flags": tuple(data["device"].get("cpu_flags", ()))}),
        runtime=runtime,
        compute=compute,
        memory=_memory(data["memory"]),
        storage_bytes=data["storage_bytes"],
        ops=Ops(**{k: float(val) for k, val in data["ops"].items()}),
        channel_multiple=data["channel_multiple"],
        precisions=precisions,
        default_formats=formats,
        budgets=budgets,
        references=references,
        sources=sources,
        path=path,
        accelerator=accelerator,
        latency_error_pct=float(data["latency_error_pct"]) if "latency_error_pct" in data else None,
        latency_error_inputs=tuple(data["latency_error_inputs"]) if "latency_error_inputs" in data else None,
    )


def _read_toml(text_: str, display: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text_)
    except tomllib.TOMLDecodeError as e:
        raise TargetProfileError(f"{display}: invalid TOML: {e}") from None


def _check_tables(v: Validator, data: dict) -> None:
    """Top-level keys and the required tables, before anything reads across tables."""
    v.check_keys(data, TOP_LEVEL_KEYS, (), extra=OPTIONAL_TABLES)
    for k, rule in TOP_LEVEL_KEYS.items():
        if isinstance(rule, dict):
            tbl = v.table(data[k], (k,))
            extra = PRECISIONS if k == "compute" else ()
            v.check_keys(tbl, rule, (k,), extra=extra)
    if data["schema_version"] != SCHEMA_VERSION:
        raise v.fail(("schema_version",), f"must be {SCHEMA_VERSION} (this version of autoprune-edge)")


def _precisions(v: Validator, data: dict) -> tuple[str, ...]:
    """``precisions``, checked against the ``[compute.<precision>]`` tables given."""
    precisions = tuple(data["precisions"])
    for p in precisions:
        if p not in PRECISIONS:
            raise v.fail(("precisions",), f"has unknown precision {p!r} (known: {', '.join(PRECISIONS)})")
        if precisions.count(p) > 1:
            raise v.fail(("precisions",), f"lists {p!r} twice")
    for p in PRECISIONS:
        if p in data["compute"] and p not in precisions:
            raise v.fail(("compute", p), f"is given but {p} is not in precisions")
    return precisions


def _precision_computes(v: Validator, data: dict, precisions: tuple[str, ...]) -> tuple[PrecisionCompute, ...]:
    return tuple(_precision_compute(v, data, p) for p in precisions)


def _precision_compute(v: Validator, data: dict, p: str) -> PrecisionCompute:
    """One ``[compute.<p>]`` table (and its ``ops`` sub-table); unset tiles default to ``out_tile``."""
    if p not in data["compute"]:
        raise v.fail(("compute", p), "is missing (a table is required for every entry of precisions)")
    tbl = v.table(data["compute"][p], ("compute", p))
    v.check_keys(tbl, PRECISION_KEYS, ("compute", p), extra=("ops",))
    ops_tbl = v.table(tbl.get("ops", {}), ("compute", p, "ops"))
    v.check_keys(ops_tbl, PRECISION_OPS_KEYS, ("compute", p, "ops"))
    return PrecisionCompute(
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


def _compute(v: Validator, data: dict, specs: tuple[PrecisionCompute, ...]) -> Compute:
    compute = data["compute"]
    cores = compute["cores"]
    ts = [float(x) for x in compute["thread_speedup"]]
    if len(ts) != cores:
        raise v.fail(("compute", "thread_speedup"), f"must have one entry per thread count 1..{cores} (compute.cores)")
    if abs(ts[0] - 1.0) > 1e-9:
        raise v.fail(("compute", "thread_speedup"), "must start with 1.0 (the speed-up of one thread)")
    if any(b < a for a, b in zip(ts, ts[1:])):
        raise v.fail(("compute", "thread_speedup"), "must not decrease with more threads")
    return Compute(
        cores=cores,
        thread_speedup=tuple(ts),
        precisions=specs,
        clock_ghz=float(compute["clock_ghz"]) if "clock_ghz" in compute else None,
        parallel_half_work=float(compute.get("parallel_half_work", 0.0)),
        thread_sync_us=float(compute.get("thread_sync_us", 0.0)),
    )


def _runtime(v: Validator, runtime: dict, cores: int) -> Runtime:
    if runtime["threads"] > cores:
        raise v.fail(("runtime", "threads"), f"must be <= compute.cores ({cores})")
    return Runtime(
        name=runtime["name"],
        threads=runtime["threads"],
        version=runtime.get("version", ""),
        invoke_overhead_us=float(runtime.get("invoke_overhead_us", 0.0)),
        fuse_all_activations=bool(runtime.get("fuse_all_activations", False)),
    )


def _memory(m: dict) -> Memory:
    return Memory(
        ram_bytes=m["ram_bytes"],
        bandwidth_gbps=float(m["bandwidth_gbps"]),
        peak_bandwidth_gbps=float(m["peak_bandwidth_gbps"]) if "peak_bandwidth_gbps" in m else None,
        cache_bytes=int(m.get("cache_bytes", 0)),
        cache_bandwidth_gbps=float(m["cache_bandwidth_gbps"]) if "cache_bandwidth_gbps" in m else None,
        weights_in_ram=bool(m.get("weights_in_ram", True)),
        runtime_overhead_bytes=int(m.get("runtime_overhead_bytes", 0)),
    )


def _default_formats(v: Validator, data: dict, precisions: tuple[str, ...]) -> tuple[str, ...]:
    """``default_formats``: known formats, and a TFLite format only for a precision the target lists."""
    formats = tuple(data["default_formats"])
    for f in formats:
        if f not in FORMATS:
            raise v.fail(("default_formats",), f"has unknown format {f!r} (known: {', '.join(FORMATS)})")
        if f.startswith("tflite-") and f.split("-", 1)[1] not in precisions:
            raise v.fail(("default_formats",), f"has {f!r} but {f.split('-', 1)[1]} is not in precisions")
    return formats


def _budgets(v: Validator, data: dict) -> tuple[Budget, ...]:
    """``[budgets]``: each key parses to the budget kind it names; common misspellings get a hint."""
    budgets = []
    for k, val in v.table(data.get("budgets", {}), ("budgets",)).items():
        if k not in BUDGET_KEYS:
            guess = _BUDGET_ALIASES.get(k.lower()) or next(iter(difflib.get_close_matches(k, list(BUDGET_KEYS), n=1)), None)
            hint = f"; did you mean budgets.{guess}?" if guess else ""
            raise TargetProfileError(
                f"{v.display}: unknown key budgets.{k} (line {v.lines.line(('budgets', k))}){hint}"
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
    return tuple(budgets)


def _references(v: Validator, data: dict, precisions: tuple[str, ...]) -> tuple[Reference, ...]:
    """``[[references]]``: published latencies, each for one of the target's precisions."""
    raw_refs = data.get("references", [])
    if not isinstance(raw_refs, list):
        raise v.fail(("references",), "must be an array of tables ([[references]])")
    refs = []
    for i, r in enumerate(raw_refs):
        r = v.table(r, ("references", i))
        v.check_keys(r, REFERENCE_KEYS, ("references", i))
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
    return tuple(refs)


def _accelerator(v: Validator, data: dict, precisions: tuple[str, ...]) -> Accelerator | None:
    """``[accelerator]`` (optional): its precisions are the target's, its unsupported ops known names."""
    if "accelerator" not in data:
        return None
    a = v.table(data["accelerator"], ("accelerator",))
    v.check_keys(a, ACCELERATOR_KEYS, ("accelerator",))
    for p in a["precisions"]:
        if p not in precisions:
            raise v.fail(("accelerator", "precisions"), f"has {p!r}, which is not in precisions")
    for op in a.get("unsupported_ops", []):
        if op not in KNOWN_OPS:
            guess = difflib.get_close_matches(op.upper(), list(KNOWN_OPS), n=1)
            hint = f"; did you mean {guess[0]}?" if guess else " (use TFLite builtin op names, e.g. TRANSPOSE)"
            raise v.fail(("accelerator", "unsupported_ops"), f"has unknown op {op!r}{hint}")
    return Accelerator(
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


def _sources(v: Validator, data: dict, precisions: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``[sources]``: every number must be covered (by its own key or an ancestor table); no stray keys."""
    sources = v.table(data.get("sources", {}), ("sources",))
    for k, s in sources.items():
        if not isinstance(s, str) or not s.strip():
            raise v.fail(("sources", k), "must be a non-empty string")
        node: Any = data
        for part in k.split("."):
            if not isinstance(node, dict) or part not in node or part == "sources":
                raise TargetProfileError(
                    f"{v.display}: key sources.{k} names no key of this file (line {v.lines.line(('sources', k))})"
                )
            node = node[part]
    full_spec = dict(TOP_LEVEL_KEYS)
    full_spec["compute"] = {**TOP_LEVEL_KEYS["compute"],
                            **{p: {**PRECISION_KEYS, "ops": PRECISION_OPS_KEYS} for p in precisions}}
    full_spec["accelerator"] = ACCELERATOR_KEYS
    budget_keys = [("budgets", k) for k in data.get("budgets", {})]
    for p in numeric_paths(data, full_spec) + budget_keys:
        if not any(".".join(p[:i]) in sources for i in range(len(p), 0, -1)):
            raise v.fail(p, f"has no source: add \"{dotted(p)}\" = \"...\" to [sources]")
    return tuple((k, s) for k, s in sources.items())


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
        line = TomlLines(text_).line(("name",))
        raise TargetProfileError(
            f"{display}: key name must equal the file name {expect_name!r}, got {target.name!r} (line {line})"
        )
    return target


__all__ = [
    # parsing
    "parse_target",
    "load_target_file",
    "FORMATS",
    "BUDGET_KEYS",
    # the dataclasses (target.py)
    "Accelerator",
    "Compute",
    "Device",
    "Memory",
    "Ops",
    "PrecisionCompute",
    "Reference",
    "Runtime",
    "Target",
    "efficiency_class",
    # the vocabulary (vocabulary.py)
    "BYTES_PER_ELEMENT",
    "EFFICIENCY_CLASSES",
    "FALLBACK_MODES",
    "KNOWN_OPS",
    "PRECISIONS",
    "REFERENCE_ROLES",
    "SCHEMA_VERSION",
    # the key tables and value checks (keys.py)
    "ACCELERATOR_KEYS",
    "OPTIONAL_TABLES",
    "PRECISION_KEYS",
    "PRECISION_OPS_KEYS",
    "REFERENCE_KEYS",
    "TOP_LEVEL_KEYS",
    "any_text",
    "any_text_list",
    "boolean",
    "efficiency",
    "name_text",
    "nonneg_int",
    "nonneg_number",
    "one_of",
    "positive_int",
    "positive_list",
    "positive_number",
    "text",
    "text_list",
]
