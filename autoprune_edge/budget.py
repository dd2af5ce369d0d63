"""Parse budget strings ("100MFLOPs", "1.5Mparams", "25ms", "512KB") into typed limits.

FLOPs here means multiply-accumulates (MACs), the convention of the AutoPrune, MobileNet, AMC and
Torch-Pruning papers. Memory units are binary (1 KB = 1024 bytes), as device RAM is quoted.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BudgetError

KINDS = ("macs", "params", "latency_ms", "memory_bytes", "size_bytes")
#: budget kind -> the attribute that holds it on a cost (a Profile, a prediction row, a PruneResult-like record)
METRIC = {"macs": "macs", "params": "params", "latency_ms": "latency_ms", "memory_bytes": "peak_memory_bytes",
          "size_bytes": "model_bytes"}

_SI = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9, "t": 1e12, "T": 1e12}
_BYTES = {"b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3, "gib": 1024**3}
_TIME = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}

_NUM = r"(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
_RE_COUNT = re.compile(_NUM + r"\s*(?P<prefix>[kKmMgGtT]?)\s*(?P<unit>flops|macs|params)$", re.I)
_RE_BYTES = re.compile(_NUM + r"\s*(?P<unit>b|kb|kib|mb|mib|gb|gib)$", re.I)
_RE_TIME = re.compile(_NUM + r"\s*(?P<unit>us|µs|ms|s)$")

_HINT = "expected e.g. 100MFLOPs, 300M MACs, 0.1GFLOPs, 1.5Mparams, 25ms, 512KB"


@dataclass(frozen=True)
class Budget:
    """One limit the pruned model must satisfy."""

    kind: str  # one of KINDS
    value: float
    text: str

    def describe(self) -> str:
        return f"{self.text} ({format_budget_value(self.kind, self.value)})"


def format_budget_value(kind: str, value: float) -> str:
    if kind == "macs":
        return f"{value / 1e6:.2f}M MACs"
    if kind == "params":
        return f"{value / 1e6:.3f}M params"
    if kind == "latency_ms":
        return f"{value:.2f} ms"
    return f"{value / 1024:.1f} KiB"


def parse_budget(text: str, *, size: bool = False) -> Budget:
    """Parse one budget. ``size=True`` reads a byte count as model file size, else as peak RAM."""
    raw = text.strip()
    if not raw:
        raise BudgetError(f"empty budget; {_HINT}")
    if raw.startswith("-"):
        raise BudgetError(f"budget {text!r} is negative; budgets must be positive ({_HINT})")
    m = _RE_COUNT.match(raw)
    if m:
        prefix = m.group("prefix")
        # "100m" would be ambiguous only for bytes; for counts m/M both mean mega.
        value = float(m.group("num")) * _SI[prefix]
        kind = "params" if m.group("unit").lower() == "params" else "macs"
        return _checked(Budget(kind, value, raw))
    m = _RE_BYTES.match(raw)
    if m:
        value = float(m.group("num")) * _BYTES[m.group("unit").lower()]
        return _checked(Budget("size_bytes" if size else "memory_bytes", value, raw))
    m = _RE_TIME.match(raw)
    if m:
        return _checked(Budget("latency_ms", float(m.group("num")) * _TIME[m.group("unit")], raw))
    hint = _HINT
    if re.search(r"flop$|mac$|param$", raw, re.I):
        hint = f"did you mean {raw}s? The unit is FLOPs, MACs or params (plural)"
    raise BudgetError(f"cannot parse budget {text!r}: {hint}")


def _checked(b: Budget) -> Budget:
    if not b.value > 0:
        raise BudgetError(f"budget {b.text!r} must be greater than zero")
    return b


def parse_budgets(texts: str | list[str] | tuple[str, ...] | None) -> list[Budget]:
    """Parse a comma-separated string or a list of strings; one budget per kind at most."""
    if texts is None:
        return []
    if isinstance(texts, str):
        texts = [texts]
    out: list[Budget] = []
    for t in texts:
        for part in str(t).split(","):
            if part.strip():
                out.append(parse_budget(part))
    kinds = [b.kind for b in out]
    dup = {k for k in kinds if kinds.count(k) > 1}
    if dup:
        raise BudgetError(f"more than one budget of kind {sorted(dup)[0]!r}; give each kind once")
    return out


def as_budgets(budgets: str | Sequence[str] | Sequence[Budget] | None) -> list[Budget]:
    """Budgets as given at an API edge (text or already parsed) -> parsed, once."""
    if budgets and not isinstance(budgets, str) and all(isinstance(b, Budget) for b in budgets):
        return list(budgets)  # type: ignore[arg-type]
    return parse_budgets(budgets)  # type: ignore[arg-type]


def measured(budget: Budget, cost: Any) -> float | None:
    """The value of ``cost`` that ``budget`` limits (None when the cost does not say)."""
    return getattr(cost, METRIC[budget.kind], None)


def within(budget: Budget, value: float | None) -> bool:
    """The one judgement of a budget: a known cost at or under the limit."""
    return value is not None and value <= budget.value
