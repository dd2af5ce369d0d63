"""Which layer of a model is its classifier: weight loading names it in hints, ``replace_classifier``
swaps it for a different class count."""
from __future__ import annotations

from torch import nn


def find_classifier(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The last nn.Linear in module order, or a final 1x1 Conv2d (SqueezeNet); None when neither."""
    last: tuple[str, nn.Module] | None = None
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = (name, m)
    if last is None:
        return None
    name, m = last
    if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) != (1, 1):
        return None
    return last


def classifier_name(model: nn.Module) -> str | None:
    found = find_classifier(model)
    return found[0] if found else None
