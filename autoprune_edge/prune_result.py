"""`PruneResult`: what `prune()` returns, for both granularities (structured in pruning.py, unstructured in
unstructured.py), kept apart from both so that neither imports the other's module for it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .budget import Budget


@dataclass
class PruneResult:
    """What `prune()` made and measured; `summary()` is the JSON-safe part the model card records."""

    model: nn.Module  # the compacted (physically smaller) model
    history: list[list[Any]]  # Torch-Pruning history: [root layer, is_out_channels, removed indices]
    method: str  # the criterion's name (methods.METHODS key for registered ones)
    budgets: list[Budget]
    input_shape: tuple[int, ...]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    equivalence_max_abs: float
    equivalence_rel: float
    widths_before: dict[str, list[int]]
    widths_after: dict[str, list[int]]
    groups_total: int
    groups_pruned: int
    accuracy_before: float | None = None
    accuracy_pruned: float | None = None  # after compaction, before fine-tuning
    accuracy_after: float | None = None
    train_log: list[dict[str, float]] = field(default_factory=list)  # fine-tuning, per epoch
    gate_log: list[dict[str, float]] = field(default_factory=list)  # AutoPrune gate training, every few steps
    notes: list[str] = field(default_factory=list)
    round_to: int = 1
    granularity: str = "structured"
    nonzero_before: int | None = None  # unstructured: non-zero conv/linear weights
    nonzero_after: int | None = None
    device: str = "cpu"  # where gate training and fine-tuning ran (the returned model is on the CPU)
    precision: str = "fp32"  # fp32, or the bf16 / fp16 autocast they ran under

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "budgets": [b.text for b in self.budgets],
            "input_shape": list(self.input_shape),
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "equivalence_max_abs": self.equivalence_max_abs,
            "equivalence_rel": self.equivalence_rel,
            "accuracy_before": self.accuracy_before,
            "accuracy_pruned": self.accuracy_pruned,
            "accuracy_after": self.accuracy_after,
            "groups_total": self.groups_total,
            "groups_pruned": self.groups_pruned,
            "round_to": self.round_to,
            "granularity": self.granularity,
            "nonzero_before": self.nonzero_before,
            "nonzero_after": self.nonzero_after,
            "device": self.device,
            "precision": self.precision,
            "notes": self.notes,
        }
