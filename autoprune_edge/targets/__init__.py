"""Device target profiles: one TOML file per device + runtime, shipped as package data.

    >>> from autoprune_edge.targets import load_target, list_targets
    >>> t = load_target("raspberrypi4")          # a shipped profile, by name
    >>> t = load_target("path/to/device.toml")   # or a user file
    >>> [t.name for t in list_targets()]

The schema is documented in docs/targets.md. ``schema.py`` validates a file and builds a ``Target``
(the dataclasses of ``target.py``) from the key tables of ``keys.py`` and the words of ``vocabulary.py``.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from ..errors import UnknownTargetError
from .schema import load_target_file, parse_target
from .target import (
    Accelerator,
    Compute,
    Device,
    Memory,
    Ops,
    PrecisionCompute,
    Reference,
    Runtime,
    Target,
)
from .vocabulary import BYTES_PER_ELEMENT, EFFICIENCY_CLASSES, FALLBACK_MODES, KNOWN_OPS, PRECISIONS

__all__ = [
    "Accelerator",
    "BYTES_PER_ELEMENT",
    "FALLBACK_MODES",
    "KNOWN_OPS",
    "EFFICIENCY_CLASSES",
    "PRECISIONS",
    "Compute",
    "Device",
    "Memory",
    "Ops",
    "PrecisionCompute",
    "Reference",
    "Runtime",
    "Target",
    "available_targets",
    "list_targets",
    "load_target",
    "parse_target",
    "resolve_target",
    "shipped_target",
]


def _package_dir() -> Path:
    return Path(str(resources.files(__name__)))


def available_targets() -> list[str]:
    """Names of the shipped target profiles (file stems), sorted."""
    return sorted(p.stem for p in _package_dir().glob("*.toml"))


@functools.lru_cache(maxsize=None)
def _load_packaged(name: str) -> Target:
    path = _package_dir() / f"{name}.toml"
    return load_target_file(path, display=path.name, expect_name=name)


def load_target(name_or_path: str | Path) -> Target:
    """Load a target profile by shipped name (``"raspberrypi4"``) or from a ``.toml`` file path.

    ``host`` is this machine: on a CPU its shipped profile was not measured on, the profile calibrated
    here (once, cached; see profiles/host_calibration.py)."""
    s = str(name_or_path)
    if s.endswith(".toml") or isinstance(name_or_path, Path):
        return load_target_file(Path(s))
    names = available_targets()
    key = s.strip().lower()
    if key not in names:
        raise UnknownTargetError(
            f"unknown target {s!r}; available: {', '.join(names)} (or pass a path to a .toml file)"
        )
    if key == "host":
        # lazy: calibration code (suite writer, LiteRT) loads only for `host`, and only off its own CPU
        from ..profiles.host_calibration import host_profile
        from ..progress import log

        return host_profile(_load_packaged(key), log=log)
    return _load_packaged(key)


def shipped_target(name: str) -> Target:
    """A shipped profile exactly as packaged (for `host`: without this CPU's calibration)."""
    key = name.strip().lower()
    if key not in available_targets():
        raise UnknownTargetError(f"unknown target {name!r}; available: {', '.join(available_targets())}")
    return _load_packaged(key)


def resolve_target(target: Target | str | Path) -> Target:
    """A Target as is; a name or path loaded with :func:`load_target`."""
    if isinstance(target, Target):
        return target
    return load_target(target)


def list_targets() -> list[Target]:
    """Every shipped target profile, loaded and validated, sorted by name."""
    return [_load_packaged(n) for n in available_targets()]
