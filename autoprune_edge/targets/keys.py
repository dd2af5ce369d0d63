"""Which keys a target file has and what values they accept: the single source of truth for the schema.

Each value check returns an error phrase (completed by the validator into a one-line error) or None.
The keys of ``[budgets]`` are ``schema.BUDGET_KEYS``; ``[sources]`` takes any dotted key of the file.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from .vocabulary import EFFICIENCY_CLASSES, FALLBACK_MODES, PRECISIONS, REFERENCE_ROLES

Check = Callable[[Any], str | None]  # returns an error phrase, or None when the value is fine


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


def side_range(v: Any) -> str | None:
    if (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
            and v[0] <= v[1]):
        return None
    return "must be [smallest, largest]: two positive whole numbers of pixels, smallest first"


def text_list(v: Any) -> str | None:
    if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        return None
    return "must be a non-empty list of strings"


def one_of(options: tuple[str, ...]) -> Check:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


@dataclass(frozen=True)
class Key:
    """One key of a table: how its value is checked, whether it must be there, whether it needs a source."""

    check: Check
    required: bool = True
    numeric: bool = False  # numbers must have an entry in [sources]


def numeric_key(check: Check, required: bool = True) -> Key:
    """A key holding a number, which the file must cite in ``[sources]``."""
    return Key(check, required, numeric=True)


PRECISION_KEYS = {
    "gmacs_per_core": numeric_key(positive_number),
    "peak_gmacs_per_core": numeric_key(positive_number, required=False),
    "out_tile": numeric_key(positive_int),
    "out_tile_small": numeric_key(positive_int, required=False),
    "in_tile": numeric_key(positive_int, required=False),
    "dw_tile": numeric_key(positive_int, required=False),
    "channel_multiple": numeric_key(positive_int, required=False),
    "output_element_cost": numeric_key(nonneg_number, required=False),
}

PRECISION_OPS_KEYS = {k: numeric_key(efficiency, required=False) for k in EFFICIENCY_CLASSES}

#: The file's top level; a dict value is a required table with its own keys.
TOP_LEVEL_KEYS: dict[str, Any] = {
    "schema_version": Key(positive_int),
    "name": Key(name_text),
    "description": Key(text),
    "notes": Key(any_text, required=False),
    "storage_bytes": numeric_key(positive_int),
    "channel_multiple": numeric_key(positive_int),
    # mean absolute error (%) of this profile's latency predictions on measurements held out of its fit
    "latency_error_pct": numeric_key(positive_number, required=False),
    # the input sides (px, shorter side) of the held-out networks that error was measured on; outside them a
    # prediction's error is unknown (shown as ±?)
    "latency_error_inputs": numeric_key(side_range, required=False),
    "precisions": Key(text_list),
    "default_formats": Key(text_list),
    "device": {
        "cpu": Key(text),
        # the CPU's speed-relevant extensions (cpu.SPEED_FLAGS) where the profile was measured; written by
        # calibrate, compared by `build --target host` with the machine it runs on
        "cpu_flags": Key(any_text_list, required=False),
        "accelerator": Key(any_text, required=False),
        "os": Key(any_text, required=False),
    },
    "runtime": {
        "name": Key(text),
        "version": Key(any_text, required=False),
        "threads": numeric_key(positive_int),
        "invoke_overhead_us": numeric_key(nonneg_number, required=False),
        "fuse_all_activations": Key(boolean, required=False),
    },
    "compute": {
        "cores": numeric_key(positive_int),
        "clock_ghz": numeric_key(positive_number, required=False),
        "thread_speedup": numeric_key(positive_list),
        "parallel_half_work": numeric_key(nonneg_number, required=False),
        "thread_sync_us": numeric_key(nonneg_number, required=False),
        # plus one sub-table per precision: [compute.fp32], [compute.int8], ... (PRECISION_KEYS)
    },
    "memory": {
        "ram_bytes": numeric_key(positive_int),
        "bandwidth_gbps": numeric_key(positive_number),
        "peak_bandwidth_gbps": numeric_key(positive_number, required=False),
        "cache_bytes": numeric_key(nonneg_int, required=False),
        "cache_bandwidth_gbps": numeric_key(positive_number, required=False),
        "weights_in_ram": Key(boolean, required=False),
        "runtime_overhead_bytes": numeric_key(nonneg_int, required=False),
    },
    "ops": {
        **{k: numeric_key(efficiency) for k in EFFICIENCY_CLASSES},
        "fixed_overhead_us": numeric_key(nonneg_number),
        "pixel_overhead_ns": numeric_key(nonneg_number, required=False),
    },
}

REFERENCE_KEYS = {
    "model": Key(text),
    "precision": Key(one_of(PRECISIONS)),
    "threads": Key(positive_int),
    "latency_ms": Key(positive_number),
    "source": Key(text),
    "role": Key(one_of(REFERENCE_ROLES)),
    "input_size": Key(positive_int, required=False),
    "note": Key(any_text, required=False),
    "device": Key(any_text, required=False),
    "scale": Key(positive_number, required=False),
}

ACCELERATOR_KEYS = {
    "name": Key(text),
    "precisions": Key(text_list),
    "unsupported_ops": Key(any_text_list, required=False),
    "max_nonunit_dims": numeric_key(positive_int, required=False),
    "fallback": Key(one_of(FALLBACK_MODES), required=False),
    "fallback_gmacs": numeric_key(positive_number),
    "fallback_overhead_us": numeric_key(nonneg_number, required=False),
    "transition_us": numeric_key(nonneg_number, required=False),
    "link_gbps": numeric_key(positive_number, required=False),
    "param_cache_bytes": numeric_key(positive_int, required=False),
}

#: Top-level tables a file may leave out; ``schema.parse_target`` checks each on its own.
OPTIONAL_TABLES = ("budgets", "references", "sources", "accelerator")
