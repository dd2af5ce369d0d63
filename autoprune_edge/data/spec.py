"""The spec string (``scheme[:ROOT][?key=value&...]``) and the option checks every source shares."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import DataError
from .registry import DataSource, data_sources, get_source


def parse_spec(spec: str) -> tuple[DataSource, str | None, dict[str, str]]:
    """Split a spec into its registered source, its root (``None`` when absent) and its query options."""
    spec = spec.strip()
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.strip().lower()
    query: dict[str, str] = {}
    if "?" in (rest if sep else scheme):
        if sep:
            rest, _, q = rest.rpartition("?")
        else:
            scheme, _, q = scheme.partition("?")
        query = {k.strip().lower(): v.strip() for k, v in parse_qsl(q, keep_blank_values=True)}
    source = get_source(scheme)
    if source is None:
        usages = ", ".join(s.usage for s in data_sources())
        raise DataError(f"unknown data spec {spec!r}: expected one of {usages}")
    root = rest.strip() if sep else None
    if source.needs_root and not root:
        raise DataError(f"data spec {spec!r} needs a directory: write {scheme}:PATH")
    if not source.needs_root and root:
        raise DataError(f"the {scheme} data spec takes no path (got {spec!r}); write just '{scheme}'")
    return source, root, query


def check_query(scheme: str, query: dict[str, str], allowed: tuple[str, ...]) -> None:
    for key in query:
        if key not in allowed:
            ok = ", ".join(allowed) if allowed else "none"
            raise DataError(f"unknown option {key!r} in the {scheme} data spec (accepted options: {ok})")


def flag(value: str | None, default: bool, key: str) -> bool:
    if value is None:
        return default
    v = value.lower()
    if v in ("", "1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise DataError(f"data spec option {key}={value!r} must be 1 or 0")


def int_option(value: str | None, default: int, key: str) -> int:
    if value is None:
        return default
    try:
        out = int(value)
    except ValueError:
        raise DataError(f"data spec option {key}={value!r} must be a whole number") from None
    if out < 1:
        raise DataError(f"data spec option {key}={value!r} must be at least 1")
    return out


def root_dir(scheme: str, root: str, expected: str) -> Path:
    path = Path(os.path.expanduser(root))
    if not path.exists():
        raise DataError(f"{scheme} data directory {path} does not exist (expected {expected})")
    if not path.is_dir():
        raise DataError(f"{scheme} data path {path} is not a directory (expected {expected})")
    return path


def check_channels(scheme: str, channels: int | None, allowed: tuple[int, ...]) -> None:
    if channels is not None and channels not in allowed:
        raise DataError(
            f"{scheme} data can feed models with {' or '.join(map(str, allowed))} input channels, not {channels}"
        )


def check_size(input_size: int | None) -> None:
    if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
        raise DataError(f"input size must be a positive number of pixels, got {input_size!r}")


def size_note(native: int, size: int, channels: int, native_channels: int) -> str:
    """The description's note on resizing and channel repeat ('' when the images are used as stored)."""
    notes = []
    if size != native:
        notes.append(f"resized to {size}x{size}")
    if channels != native_channels:
        notes.append(f"repeated to {channels} channels")
    return f" ({', '.join(notes)})" if notes else ""
