"""AutoPrune as a PyTorch Lightning callback: the user's LightningModule, loss and optimiser are unchanged."""
from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("CI") == "true":  # installed by the dev extra: CI must run this, not skip it
    import lightning.pytorch as pl
else:
    pl = pytest.importorskip("lightning.pytorch")

from autoprune_edge.integrations.lightning import AutoPruneCallback  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402
from test_pruner import TinyDetector, _loss, _task  # noqa: E402


class LitDetector(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyDetector()

    def training_step(self, batch, _):
        x, colour, pos = batch
        return _loss(self.net(x), colour, pos)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def test_lightning_callback_prunes_inside_the_trainer():
    torch.manual_seed(0)
    lit = LitDetector()
    example = torch.zeros(1, 3, 32, 32)
    dense = count_macs(lit.net, example).macs
    x, colour, pos = _task(256, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, colour, pos), batch_size=16, shuffle=True)
    cb = AutoPruneCallback(f"{dense / 2e6:.6f}MFLOPs", example, module="net")
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(lit, loader)
    assert cb.model is lit.net and cb.report is not None
    assert count_macs(lit.net, example).macs <= dense / 2
    assert cb.report.equivalence_rel < 1e-4
    assert cb.pruner.steps == 4 * len(loader)  # the gates stepped once per optimiser step
    # the penalty reached the gates through its own backward: the controller saw costs near the target
    assert cb.pruner.log and cb.pruner.log[-1]["macs"] <= 1.02 * dense / 2
    with torch.no_grad():
        out = lit.net(x[:4])
    assert out["boxes"].shape[1] == 12 and out["scores"].shape[1] == 15  # head channels are a contract


def test_lightning_callback_names_a_missing_module():
    from autoprune_edge.errors import ConfigError

    cb = AutoPruneCallback("1MFLOPs", torch.zeros(1, 3, 32, 32), module="backbone")
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_task(16, 0)), batch_size=8)
    with pytest.raises(ConfigError, match="module='backbone'"):
        trainer.fit(LitDetector(), loader)
