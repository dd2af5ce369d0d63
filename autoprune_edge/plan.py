"""Save and reload a pruned model without pickle: a JSON plan plus safetensors weights.

The plan names the original architecture (how to build it), the input it was traced with, and the
pruning history (which channels of which root layer were removed, in order). Loading rebuilds the
original model, re-applies the history through the dependency graph and loads the weights strictly.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import WeightsError
from .graph import apply_history
from .models import ModelSpec

PLAN_FILE = "plan.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "autoprune-edge/pruned-model@1"


def save_pruned(out_dir: Path, model: nn.Module, spec: ModelSpec, history: list[list[Any]],
                input_shape: tuple[int, ...], meta: dict[str, Any] | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    widths = {n: [m.in_channels, m.out_channels] if hasattr(m, "out_channels") else [m.in_features, m.out_features]
              for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))}
    plan = {
        "format": FORMAT,
        "model": asdict(spec),
        "input_shape": list(input_shape),
        "history": history,
        "widths": widths,
        "meta": meta or {},
    }
    (out_dir / PLAN_FILE).write_text(json.dumps(plan, indent=1))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE))
    return [out_dir / PLAN_FILE, out_dir / WEIGHTS_FILE]


def read_plan(path: Path) -> dict[str, Any]:
    path = Path(path)
    plan_path = path / PLAN_FILE if path.is_dir() else path
    if not plan_path.exists():
        raise WeightsError(f"{plan_path}: no pruning plan here; pass a folder written by 'autoprune-edge prune'")
    try:
        plan = json.loads(plan_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{plan_path}: not a valid plan file ({e})") from e
    if plan.get("format") != FORMAT:
        raise WeightsError(f"{plan_path}: unknown plan format {plan.get('format')!r}; expected {FORMAT}")
    return plan


def load_pruned(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a pruned model from a folder holding plan.json and model.safetensors."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    plan = read_plan(path)
    spec = ModelSpec(**plan["model"])
    model = spec.build()
    example = torch.zeros(tuple(plan["input_shape"]))
    apply_history(model, example, plan["history"])
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise WeightsError(f"{weights}: missing weights next to the plan")
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise WeightsError(f"{weights}: cannot read safetensors weights ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise WeightsError(f"{weights} does not match the plan: {detail}") from e
    model.eval()
    return model, plan
