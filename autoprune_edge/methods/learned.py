"""AutoPrune's entry in the criteria table: listed and selected by name like the others, but its scores
are gate values learned during training, so `prune()` hands it to the gate trainer (autoprune.py)."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..graph import PruningGraph
from .registry import Criterion, register


@register
class AutoPrune(Criterion):
    """Learned channel gates; `prune()` trains them jointly with the weights instead of calling `scores`."""

    name = "autoprune"
    description = ("learned gates trained jointly with the weights (AutoPrune, Xiao et al. 2019); "
                   "the default, needs data and epochs > 0")

    def scores(self, graph: PruningGraph, *, data: Any = None, seed: int = 0) -> list[torch.Tensor]:
        # The gate trainer needs the budgets, the cost model and a training loop, which a one-shot scorer
        # does not get; prune() owns that loop.
        raise ConfigError("autoprune learns its scores while training; use prune(method='autoprune')")
