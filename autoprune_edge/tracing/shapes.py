"""Shapes as autograd recorded them, and the small arithmetic the channel planners do on them."""
from __future__ import annotations

from typing import Any


def as_sizes(v: Any) -> tuple[int, ...] | None:
    """`v` as a tuple of ints (a torch.Size, a saved sym-size list); None when it is not one."""
    try:
        return tuple(int(s) for s in v)
    except Exception:  # noqa: BLE001
        return None


def recorded_shape(grad_fn: Any, i: int = 0) -> tuple[int, ...] | None:
    """Shape of output `i` of the op behind `grad_fn`, as autograd recorded it (None if it did not)."""
    try:
        return as_sizes(grad_fn._input_metadata[i].shape)
    except Exception:  # noqa: BLE001
        return None


def signed(v: Any) -> int | None:
    """autograd saves negative ints as unsigned 64-bit values."""
    if v is None:
        return None
    v = int(v)
    return v - 2 ** 64 if v >= 2 ** 63 else v


def norm_dim(d: Any, ndim: int) -> int | None:
    """A saved dim argument as a dim in [0, ndim); None when absent or out of range."""
    d = signed(d)
    if d is None or not -ndim <= d < ndim:
        return None
    return d % ndim


def reshape_blocks(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Minimal groups of consecutive dims of `a` and `b` with equal products (how a reshape regroups)."""
    if 0 in a or 0 in b:
        return None
    i = j = 0
    out = []
    while i < len(a) or j < len(b):
        ia, jb, pa, pb = [], [], 1, 1
        if i < len(a):
            ia.append(i)
            pa *= a[i]
            i += 1
        if j < len(b):
            jb.append(j)
            pb *= b[j]
            j += 1
        while pa != pb:
            if pa < pb and i < len(a):
                ia.append(i)
                pa *= a[i]
                i += 1
            elif pb < pa and j < len(b):
                jb.append(j)
                pb *= b[j]
                j += 1
            else:
                return None
        out.append((ia, jb))
    return out


def common_value(vals: list[Any]) -> Any:
    """The common value of the known (non-None) entries; None when none is known or they disagree."""
    known = {v for v in vals if v is not None}
    return known.pop() if len(known) == 1 else None


def offsets(parts: list[int]) -> list[int]:
    """Start of each part of a concat (and the total at the end)."""
    out = [0]
    for s in parts:
        out.append(out[-1] + int(s))
    return out
