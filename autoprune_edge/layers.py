"""Layers the dependency graph needs help with, and their Torch-Pruning pruners.

`ChannelScatter` places each input channel at a fixed output channel and fills the rest with zeros: the
parameter-free "option A" shortcut of CIFAR ResNets (subsample + zero-pad channels) is one. Generic
tracing sees a channel-preserving op there and couples the wrong channels; as a leaf with its own
pruner its input and output channels are independent dimensions, like a convolution's.

When the model is exported (ONNX, TorchScript tracing for Core ML, torch.export), the scatter is written
as a strided 1x1 convolution with a constant 0/1 weight instead of a channel ``Pad``/``Gather``: every
converter and accelerator translates a convolution correctly (onnx2tf's NCHW->NHWC rewrite of a Pad on
the channel axis does not), its int8 form is exact (per-channel weight scale 1/127 represents 0 and 1),
and one form covers the contiguous pad and the scattered layout after pruning. It costs
``in_channels x out_channels`` MACs per output pixel in the exported file (0.26 M of ResNet-20's 41 M),
which the torch model's MAC count does not include.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn


class ChannelScatter(nn.Module):
    """y[:, out_index[i]] = x[:, i] (subsampled by `stride`), every other output channel zero."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, offset: int | None = None) -> None:
        super().__init__()
        if offset is None:
            offset = (out_channels - in_channels) // 2
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.register_buffer("out_index", torch.arange(in_channels) + offset, persistent=False)
        self.register_buffer("in_scale", torch.ones(in_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _exporting():
            return self._as_conv(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        scale = self.in_scale
        # Applied while gated (the gates' straight-through gradient must see this consumer whether or not
        # a channel is closed yet) or masked; in x's dtype, so a bf16 activation does not turn fp32 here and
        # drag the rest of the stage into fp32 (measured: +40 activation copies per ResNet-56 step).
        if scale.requires_grad or not bool((scale == 1).all()):
            x = x * scale.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        valid = self.out_index >= 0
        idx = self.out_index[valid]
        if idx.numel() and bool(valid.all()) and int(idx[-1] - idx[0]) + 1 == idx.numel() and bool(
                (idx[1:] > idx[:-1]).all()):
            front = int(idx[0])
            return F.pad(x, (0, 0) * (x.dim() - 2) + (front, self.out_channels - front - idx.numel()))
        # General case after pruning: gather from the input plus one zero channel.
        zero = x.new_zeros((x.shape[0], 1, *x.shape[2:]))
        src = torch.full((self.out_channels,), x.shape[1], dtype=torch.long, device=x.device)
        src[idx] = torch.arange(x.shape[1], device=x.device)[valid]
        return torch.cat([x, zero], 1).index_select(1, src)

    def selection_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (out, in, 1, 1) 0/1 matrix with w[out_index[i], i] = in_scale[i]."""
        w = torch.zeros(self.out_channels, self.in_channels, 1, 1, dtype=dtype, device=self.out_index.device)
        valid = self.out_index >= 0
        cols = torch.arange(self.in_channels, device=w.device)[valid]
        w[self.out_index[valid], cols, 0, 0] = self.in_scale[valid].to(dtype)
        return w

    def _as_conv(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"ChannelScatter exports 4-d (N, C, H, W) inputs only, got {x.dim()}-d")
        return F.conv2d(x, self.selection_weight(x.dtype), stride=self.stride)

    def mask_in_channels(self, idxs: Sequence[int]) -> None:
        with torch.no_grad():
            self.in_scale[torch.as_tensor(list(idxs), dtype=torch.long)] = 0

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


_EXPORT_FORM: ContextVar[bool] = ContextVar("autoprune_edge_export_form", default=False)


@contextlib.contextmanager
def export_form() -> Iterator[None]:
    """Run the model as it is exported, e.g. to count the MACs a converted file really has."""
    token = _EXPORT_FORM.set(True)
    try:
        yield
    finally:
        _EXPORT_FORM.reset(token)


def _exporting() -> bool:
    """True while torch.onnx, torch.jit.trace or torch.export records the model, or inside `export_form`."""
    return bool(_EXPORT_FORM.get() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
                or torch.compiler.is_exporting())


class ChannelScatterPruner(tp.pruner.BasePruningFunc):
    TARGET_MODULES = ChannelScatter

    def prune_out_channels(self, layer: ChannelScatter, idxs: Sequence[int]) -> nn.Module:
        removed = set(int(i) for i in idxs)
        keep = [o for o in range(layer.out_channels) if o not in removed]
        new_pos = {old: new for new, old in enumerate(keep)}
        layer.out_index = torch.tensor([new_pos.get(int(o), -1) for o in layer.out_index.tolist()], dtype=torch.long)
        layer.out_channels = len(keep)
        return layer

    def prune_in_channels(self, layer: ChannelScatter, idxs: Sequence[int]) -> nn.Module:
        removed = set(int(i) for i in idxs)
        keep = torch.tensor([i for i in range(layer.in_channels) if i not in removed], dtype=torch.long)
        layer.out_index = layer.out_index[keep].clone()
        layer.in_scale = layer.in_scale[keep].clone()
        layer.in_channels = int(keep.numel())
        return layer

    def get_out_channels(self, layer: ChannelScatter) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: ChannelScatter) -> int:
        return layer.in_channels


# Layer type -> pruner, handed to every DependencyGraph the toolkit builds.
CUSTOM_PRUNERS: dict[type, tp.pruner.BasePruningFunc] = {ChannelScatter: ChannelScatterPruner()}


def custom_pruners_for(model: nn.Module) -> dict[type, tp.pruner.BasePruningFunc]:
    """Pruners keyed by the exact classes present in `model` (Torch-Pruning matches classes exactly)."""
    out: dict[type, tp.pruner.BasePruningFunc] = {}
    for m in model.modules():
        for base, pruner in CUSTOM_PRUNERS.items():
            if isinstance(m, base):
                out[type(m)] = pruner
    return out
