"""AutoPrune inside a PyTorch Lightning `Trainer`: a callback, no change to the user's LightningModule.

    cb = AutoPruneCallback("2GFLOPs", torch.zeros(1, 3, 320, 320), target="raspberrypi4", module="net")
    Trainer(max_epochs=10, callbacks=[cb]).fit(lit_module, loaders)
    small = cb.model                         # the compacted network (the same object, now smaller)
    ape.save_pruned(...)                     # or export it with ape.convert

The penalty depends only on the gates, so instead of being added to the user's loss it is
back-propagated on its own after theirs (`on_after_backward`), scaled like their loss: by the AMP loss
scale, and divided by ``accumulate_grad_batches`` as Lightning divides the loss. The gates step just before
the user's optimiser (`on_before_optimizer_step`), and the network is compacted when fitting ends.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("AutoPruneCallback needs PyTorch Lightning: pip install 'autoprune-edge[lightning]'") from e

from ..autoprune import AutoPruneConfig
from ..errors import ConfigError
from ..pruner import Pruner, PrunerReport


class AutoPruneCallback(Callback):
    """``module``: the attribute of the LightningModule holding the network to prune (None: the
    LightningModule itself). ``budget``, ``target``, ``ignore``, ``config`` and ``round_to`` mean what
    they mean for `Pruner`; the ramp spans ``trainer.estimated_stepping_batches`` optimiser steps."""

    def __init__(self, budget: str | Sequence[str], example_inputs: torch.Tensor, *, module: str | None = None,
                 target: Any = None, ignore: Iterable[nn.Module | str] = (), config: AutoPruneConfig | None = None,
                 round_to: int | None = None, compact: bool = True) -> None:
        super().__init__()
        self.budget, self.example, self.module_attr = budget, example_inputs, module
        self.target, self.ignore, self.config, self.round_to = target, list(ignore), config, round_to
        self.compact_at_end = compact
        self.pruner: Pruner | None = None
        self.model: nn.Module | None = None
        self.report: PrunerReport | None = None

    def _network(self, pl_module: nn.Module) -> nn.Module:
        if self.module_attr is None:
            return pl_module
        net = getattr(pl_module, self.module_attr, None)
        if not isinstance(net, nn.Module):
            raise ConfigError(f"AutoPruneCallback(module={self.module_attr!r}): the LightningModule has no such "
                              "nn.Module attribute")
        return net

    def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
        net = self._network(pl_module)
        steps = int(trainer.estimated_stepping_batches)
        if steps < 1 or steps == float("inf"):
            raise ConfigError("AutoPruneCallback needs a finite number of training steps (set max_epochs or max_steps)")
        was = net.training
        self.pruner = Pruner(net, self.example.to(pl_module.device), self.budget, total_steps=steps,
                             target=self.target, ignore=self.ignore, config=self.config, round_to=self.round_to)
        net.train(was)
        self.model = net

    def on_after_backward(self, trainer: Any, pl_module: nn.Module) -> None:
        assert self.pruner is not None
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        (self.pruner.penalty() * (scale / max(1, trainer.accumulate_grad_batches))).backward()

    def on_before_optimizer_step(self, trainer: Any, pl_module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        assert self.pruner is not None
        self.pruner.step(optimizer)

    def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.pruner is not None and self.compact_at_end:
            self.model = self.pruner.compact()
            self.report = self.pruner.report
