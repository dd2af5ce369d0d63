"""Quantisation-aware fine-tuning: a few epochs in which the network sees the int8 rounding TFLite will do,
for the models that post-training quantisation alone leaves too far from fp32 (`build --qat-epochs N`).

What is simulated, with torch's own fake-quantisation ops (straight-through gradients):
* every conv/linear weight as TFLite stores it: BatchNorm folded in (frozen running statistics, the usual
  QAT practice), symmetric int8 per output channel, 127 levels;
* every activation module's output (ReLU, ReLU6, Hardswish, ...) per tensor, 256 levels, range tracked by
  an exponential moving average of its min/max.
Residual sums and linear bottleneck outputs stay float here (TFLite quantises them too): the simulation is
close, not exact, and the int8 file is still judged by its own parity afterwards.

The result is an ordinary float model of the same architecture (no extra modules or buffers): every
format is exported from it, and the int8 converter quantises it as it would any other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from .device import CPU_FP32, Runtime
from .input_pipeline import PipelineConfig
from .train import TrainConfig, train

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Hardtanh)
EMA = 0.9  # activation range: new = EMA * old + (1 - EMA) * this batch's


@dataclass
class QatInfo:
    """What `quantisation_aware_finetune` did, for the model card."""

    epochs: float
    weights_simulated: int  # conv/linear layers whose int8 weights were simulated
    batchnorms_folded: int  # of those, how many with their BatchNorm folded in
    activations_simulated: int
    log: list[dict[str, float]]
    accuracy_before: float | None = None  # the pruned model's, before this fine-tune (set by the caller)
    accuracy_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def conv_batchnorm_pairs(model: nn.Module) -> dict[nn.Module, nn.BatchNorm2d]:
    """conv -> BatchNorm pairs by data flow (torch.fx); {} for a model fx cannot trace (weights are then
    simulated without their BatchNorm: a close approximation)."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - not every model traces
        return {}
    named = dict(model.named_modules())
    pairs = {}
    for node in gm.graph.nodes:
        bn = named.get(str(node.target)) if node.op == "call_module" else None
        src = node.args[0] if node.args else None
        if not isinstance(bn, nn.BatchNorm2d) or not isinstance(src, fx.Node) or src.op != "call_module":
            continue
        conv = named.get(str(src.target))
        if isinstance(conv, nn.Conv2d) and len(src.users) == 1 and bn.track_running_stats:
            pairs[conv] = bn
    return pairs


def _fake_int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    flat = w.detach().float().flatten(1)
    scale = (flat.abs().amax(1) / 127.0).clamp_min(1e-12)
    zero = torch.zeros(len(scale), dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w.float(), scale, zero, 0, -127, 127).to(w.dtype)


class _FoldedWeight(nn.Module):
    """Parametrization: the weight the conv computes with is W_q / k, where W_q = int8(W * k) and k is the
    BatchNorm's per-channel factor (1 without one), so conv + BN in eval mode compute what the file does."""

    def __init__(self, bn: nn.BatchNorm2d | None) -> None:
        super().__init__()
        self._bn = [bn]  # a list: the BN stays the model's own submodule, not this one's

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        bn = self._bn[0]
        if bn is None:
            return _fake_int8_per_channel(w)
        k = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
        k = k.detach().view(-1, *([1] * (w.dim() - 1)))
        k = torch.where(k.abs() > 1e-12, k, torch.ones_like(k))
        return _fake_int8_per_channel(w * k) / k


class _ActivationRange:
    """Forward hook: fake-quantises a module's output per tensor (uint8 levels) with an EMA min/max."""

    def __init__(self) -> None:
        self.lo: float | None = None
        self.hi = 0.0

    def __call__(self, _mod: nn.Module, _inp: Any, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            return y
        if _mod.training:
            lo, hi = min(float(y.detach().min()), 0.0), max(float(y.detach().max()), 0.0)
            self.lo, self.hi = (lo, hi) if self.lo is None else (EMA * self.lo + (1 - EMA) * lo,
                                                                 EMA * self.hi + (1 - EMA) * hi)
        if self.lo is None or self.hi <= self.lo:
            return y
        scale = (self.hi - self.lo) / 255.0
        zero = int(round(-self.lo / scale))
        return torch.fake_quantize_per_tensor_affine(y.float(), scale, zero, 0, 255).to(y.dtype)


def _freeze(bn: nn.Module, _inp: Any) -> None:
    bn.training = False  # frozen statistics: the folded factor k must be what inference uses


def quantisation_aware_finetune(model: nn.Module, data: Dataset, epochs: float, *, lr: float = 1e-3,
                                batch_size: int = 32, seed: int = 0, rt: Runtime = CPU_FP32,
                                pipeline: PipelineConfig = PipelineConfig()) -> QatInfo:
    """Fine-tune ``model`` in place for ``epochs`` with int8 rounding simulated; it leaves as plain float."""
    pairs = conv_batchnorm_pairs(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    acts = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
    handles = [bn.register_forward_pre_hook(_freeze) for bn in model.modules() if isinstance(bn, nn.BatchNorm2d)]
    handles += [m.register_forward_hook(_ActivationRange()) for m in acts]
    for m in layers:
        parametrize.register_parametrization(m, "weight", _FoldedWeight(pairs.get(m)), unsafe=True)
    try:
        log = train(model, data, TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                             bn_recalibration_batches=0),
                    desc="quantisation-aware fine-tune", phase="qat", rt=rt, pipeline=pipeline)
    finally:
        for h in handles:
            h.remove()
        for m in layers:  # keep the trained float weights, drop the simulation
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    model.eval()
    return QatInfo(epochs, len(layers), sum(m in pairs for m in layers), len(acts), log)
