"""autoprune-edge: prune a PyTorch vision model to a device budget, compact it, ship it as TFLite/ONNX.

Public API (imported lazily so that `autoprune_edge.profiles.host` runs on a board with only
numpy + ai-edge-litert installed):

    load_target, list_targets, profile, prune, Pruner, convert, build, load_pruned, parse_budget
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_target": ("autoprune_edge.targets", "load_target"),
    "list_targets": ("autoprune_edge.targets", "list_targets"),
    "profile": ("autoprune_edge.profiles.profile", "profile"),
    "prune": ("autoprune_edge.pruning", "prune"),
    "Pruner": ("autoprune_edge.pruner", "Pruner"),
    "PruneResult": ("autoprune_edge.pruning", "PruneResult"),
    "convert": ("autoprune_edge.converters.convert", "convert"),
    "Artifact": ("autoprune_edge.converters.artifact", "Artifact"),
    "build": ("autoprune_edge.pipeline", "build"),
    "BuildReport": ("autoprune_edge.pipeline", "BuildReport"),
    "ModelCard": ("autoprune_edge.modelcard", "ModelCard"),
    "load_card": ("autoprune_edge.modelcard", "load_card"),
    "load_pruned": ("autoprune_edge.plan", "load_pruned"),
    "save_pruned": ("autoprune_edge.plan", "save_pruned"),
    "parse_budget": ("autoprune_edge.budget", "parse_budget"),
    "parse_budgets": ("autoprune_edge.budget", "parse_budgets"),
    "build_model": ("autoprune_edge.models", "build_model"),
    "load_data": ("autoprune_edge.data", "load_data"),
    "AutoPruneEdgeError": ("autoprune_edge.errors", "AutoPruneEdgeError"),
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'autoprune_edge' has no attribute {name!r}")
