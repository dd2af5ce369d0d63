"""The table of pruning criteria: one class per criterion, registered by name with `@register`.

`prune(method=...)` accepts a registered name, a `Criterion` subclass or an instance; every name is
resolved by `get_criterion`, the one place where an unknown method is reported. Modelled on
Torch-Pruning's `Importance` classes (one object scores a group) and timm's `register_model`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..errors import UnknownMethodError
from ..graph import PruningGraph


class Criterion(ABC):
    """Ranks the channels of every prunable group; `methods.selection` turns the ranks into a budgeted plan.

    A new criterion is one subclass with a `name`, a one-line `description` and `scores`; decorate it
    with `@register` to make it selectable by name (`--method`, `prune(method="name")`).
    """

    name: ClassVar[str] = ""  # defaults to the lower-cased class name
    description: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__.lower()

    @abstractmethod
    def scores(self, graph: PruningGraph, *, data: Any = None, seed: int = 0) -> list[torch.Tensor]:
        """One score vector per group of `graph` (length `group.size`, higher = keep).

        Scores are compared against one global threshold, so they must be comparable across groups
        (e.g. normalised to mean 1 per group). `data` is the DataBundle, if the user gave one.
        """


METHODS: dict[str, type[Criterion]] = {}
CriterionLike = str | Criterion | type[Criterion]  # what `prune(method=...)` accepts


def register(cls: type[Criterion]) -> type[Criterion]:
    """Class decorator: make `cls` selectable by its `name`; registration order is the listing order."""
    if not (isinstance(cls, type) and issubclass(cls, Criterion)):
        raise TypeError(f"register() takes a Criterion subclass, got {cls!r}")
    if not cls.description:
        raise TypeError(f"{cls.__qualname__} needs a one-line `description`: the method listings show it")
    old = METHODS.get(cls.name)
    # the same class defined again (a re-run notebook cell) replaces itself; another class may not
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"pruning method {cls.name!r} is already registered by {old.__module__}.{old.__qualname__}")
    METHODS[cls.name] = cls
    return cls


def get_criterion(method: CriterionLike) -> Criterion:
    """The criterion object for a registered name, a Criterion class or an instance (returned as is)."""
    if isinstance(method, Criterion):
        return method
    if isinstance(method, type) and issubclass(method, Criterion):
        return method()
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]()
    raise UnknownMethodError(f"unknown pruning method {method!r}; choose one of: {', '.join(METHODS)}")
