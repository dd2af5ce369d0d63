"""What a command's MODEL argument names: a folder written by `prune`, or a model name."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import AutoPruneEdgeError
from ..models import build_model, default_input_size, load_weights
from ..plan import load_pruned


def load_model_ref(ref: str, *, weights: str | None = None, input_shape: tuple[int, ...] | None = None,
                   num_classes: int | None = None,
                   allow_download: bool = False) -> tuple[nn.Module, tuple[int, ...], dict[str, Any]]:
    """A pruned-model folder (plan.json) or a model name / pkg.module:factory -> (model, input shape, meta)."""
    p = Path(ref)
    if (p.is_dir() and (p / "plan.json").exists()) or (p.name == "plan.json" and p.exists()):
        model, plan = load_pruned(p)
        return model, input_shape or tuple(plan["input_shape"]), plan.get("meta", {})
    if p.suffix == ".tflite":
        raise AutoPruneEdgeError(f"{ref} is a .tflite file; this command needs a torch model (a model name or a "
                                 "folder written by 'autoprune-edge prune')")
    if p.is_dir():
        raise AutoPruneEdgeError(f"{ref} is a folder without plan.json; pass a folder written by 'autoprune-edge "
                                 "prune' or a model name")
    model, _spec = build_model(ref, num_classes=num_classes)
    if weights:
        load_weights(model, weights, allow_download=allow_download, model_name=ref)
    if input_shape is None:
        s = default_input_size(ref)
        ch = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
        input_shape = (1, ch, s, s)
    model.eval()
    return model, input_shape, {}
