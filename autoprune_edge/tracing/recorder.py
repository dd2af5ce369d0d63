"""Where each traced op came from (module path + the torch function that made it), for readable reasons."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


class OpRecorder(TorchFunctionMode):
    """Records, while Torch-Pruning traces, where each autograd node came from (module path and torch function,
    for readable reasons) and the geometry of every in-place write into a view (for `partial_write`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.where: dict[Any, tuple[str, str]] = {}
        # CopySlices grad_fn -> geometries of the region written in place and of its base (see `_region`)
        self.writes: dict[Any, tuple[Any, Any]] = {}
        self._stack: list[str] = []
        self._hooks: list[Any] = []
        for name, m in model.named_modules():
            self._hooks.append(m.register_forward_pre_hook(self._push(name)))
            self._hooks.append(m.register_forward_hook(self._pop))

    def _push(self, name: str) -> Any:
        def hook(*_: Any) -> None:
            self._stack.append(name)
        return hook

    def _pop(self, *_: Any) -> None:
        if self._stack:
            self._stack.pop()

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        write = None
        with contextlib.suppress(Exception):
            write = self._region(name, args)
        out = func(*args, **(kwargs or {}))
        with contextlib.suppress(Exception):  # bookkeeping must never break the model
            here = (self._stack[-1] if self._stack else "", name)
            if write is not None:
                base, before, geometry = write
                g = base.grad_fn
                if g is not None and g is not before and "CopySlices" in g.name() and g not in self.writes:
                    self.writes[g] = geometry
                    self.where.setdefault(g, here)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for t in outs:
                g = getattr(t, "grad_fn", None) if isinstance(t, torch.Tensor) else None
                if g is not None and g not in self.where:
                    self.where[g] = here
        return out

    @staticmethod
    def _region(name: str, args: Any) -> tuple[torch.Tensor, Any, tuple[Any, Any]] | None:
        """(base, its grad_fn before the write, (region, base) geometries) of an in-place write into a view
        of a tensor, which autograd records as `CopySlices` on the base (slice assignment, `x[:, :c] += y`,
        an in-place op on a view); a geometry is (sizes, strides, storage offset)."""
        if not args or not isinstance(args[0], torch.Tensor) or not any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return None
        t = args[0]
        if name == "__setitem__":
            with torch.no_grad():
                region = t[args[1]]
            if not region._is_view():  # advanced indexing: an index_put, not a view write
                return None
        elif (name.endswith("_") and not name.endswith("__")) or (name.startswith("__i") and name.endswith("__")):
            region = t
        else:
            return None
        if not region._is_view() or region._base is None:
            return None
        base = region._base

        def geo(v: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...], int]:
            return tuple(v.shape), tuple(v.stride()), int(v.storage_offset())

        return base, base.grad_fn, (geo(region), geo(base))
