"""Data sources by name: each source module registers its loader here (timm's ``register_model`` pattern).

Adding a source is one module with a ``@register_source("name")`` loader, imported by ``data/__init__.py``.
The registration order is the order in which specs are listed to the user.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .bundle import DataBundle


@dataclass(frozen=True)
class LoadOptions:
    """The keyword arguments of ``load_data``; each source reads the ones that apply to it."""

    input_size: int | None = None
    channels: int | None = None
    seed: int = 0
    synthetic_train: int = 512
    synthetic_val: int = 256
    synthetic_classes: int = 10
    normalization: str | None = None
    augment: bool = False
    trust_pickle: bool = False


#: ``loader(root, query, options)``: ``root`` is the spec's path (``None`` for sources without one),
#: ``query`` its options with lower-case keys. Raises DataError on any problem.
Loader = Callable[[str | None, dict[str, str], LoadOptions], DataBundle]


@dataclass(frozen=True)
class DataSource:
    name: str
    load: Loader
    needs_root: bool = True  # False: the spec is just the name (e.g. ``synthetic``)
    task: str = "classify"  # what its targets are for (tasks.TASKS key)

    @property
    def usage(self) -> str:
        """How the spec is written, for error messages."""
        return f"{self.name}:ROOT" if self.needs_root else self.name


_SOURCES: dict[str, DataSource] = {}


def register_source(name: str, *, needs_root: bool = True, task: str = "classify") -> Callable[[Loader], Loader]:
    """Decorator: make ``loader`` the source called ``name`` in data specs."""

    def add(loader: Loader) -> Loader:
        if name in _SOURCES:
            raise ValueError(f"data source {name!r} is registered twice")
        _SOURCES[name] = DataSource(name, loader, needs_root, task)
        return loader

    return add


def get_source(name: str) -> DataSource | None:
    return _SOURCES.get(name)


def data_sources() -> tuple[DataSource, ...]:
    """Every registered source, in registration order."""
    return tuple(_SOURCES.values())
