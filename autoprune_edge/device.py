"""Where and in which precision the training phases run: `device` and `precision` resolved once.

"auto" device: CUDA when present (under torchrun: when every local process gets its own GPU, each on
cuda:LOCAL_RANK), else the CPU; MPS only when asked for. "auto" precision: bf16 autocast on a CPU with
native bf16 arithmetic (AVX512-BF16 / AMX / Arm BF16), bf16 on a CUDA card that has it, else fp16 with a
GradScaler, fp32 elsewhere. Weights, optimiser state and AutoPrune's gates stay fp32 in every case;
autocast only lowers the precision of the network's own matmuls and convolutions.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .cpu import cpu_flags
from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """A resolved device and precision; `CPU_FP32` is exactly the loop this project always ran (fp32, NCHW)."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16 (never auto)
    autocast_dtype: torch.dtype | None
    grad_scaler: bool  # fp16 on CUDA: scale the loss so small gradients do not flush to zero
    channels_last: bool  # channels_last for 4-d conv nets: faster on GPUs and, in every precision, on CPUs

    @property
    def label(self) -> str:
        return f"{self.device} {self.precision}" + (" channels_last" if self.channels_last else "")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device.type) if self.grad_scaler else None

    def memory_format(self, model: nn.Module) -> torch.memory_format:
        conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        return torch.channels_last if self.channels_last and conv else torch.contiguous_format

    def inputs(self, x: torch.Tensor, fmt: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """A batch on the device (asynchronously from pinned memory) in the model's memory format."""
        if x.dim() != 4:
            fmt = torch.contiguous_format
        return x.to(self.device, non_blocking=self.device.type == "cuda", memory_format=fmt)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.device, non_blocking=self.device.type == "cuda")


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU; without it bf16 autocast is emulated and slower than fp32."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private but stable since torch 2.1
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        if (probe is not None and probe()) or (amx is not None and amx()):
            return True
    except RuntimeError:
        pass
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def _local_gpu_per_process() -> bool:
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return torch.cuda.is_available() and torch.cuda.device_count() >= local


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N | mps -> torch.device; a device this machine lacks is a DeviceError."""
    text = str(spec).strip().lower()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if text == "auto":
        return torch.device("cuda", local_rank) if _local_gpu_per_process() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("device mps is not available on this machine (Apple-silicon GPUs only); "
                              "use --device cpu or auto")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise DeviceError(f"unknown device {spec!r}; use one of {', '.join(DEVICE_CHOICES)}")
        if not torch.cuda.is_available():
            raise DeviceError(f"device {text} asked for, but torch sees no CUDA GPU here; use --device cpu or auto")
        index = int(index_text) if index_text else local_rank
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device cuda:{index} asked for, but this machine has "
                              f"{torch.cuda.device_count()} CUDA GPU(s)")
        return torch.device("cuda", index)
    raise DeviceError(f"unknown device {spec!r}; use one of {', '.join(DEVICE_CHOICES)}")


def resolve_precision(spec: str, device: torch.device) -> str:
    """auto | fp32 | bf16 | fp16 -> fp32 | bf16 | fp16 for `device`; an unsupported pairing is a DeviceError."""
    text = str(spec).strip().lower()
    if text not in PRECISION_CHOICES:
        raise DeviceError(f"unknown precision {spec!r}; use one of {', '.join(PRECISION_CHOICES)}")
    kind = device.type
    if text == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if kind == "cpu":
            return "bf16" if cpu_has_bf16() else "fp32"
        return "fp32"
    if text == "fp16" and kind == "cpu":
        raise DeviceError("precision fp16 is for GPUs; on the CPU use bf16 (or auto)")
    if text == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use fp16 or auto")
    return text


def resolve_runtime(device: str | torch.device = "auto", precision: str = "fp32") -> Runtime:
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    return Runtime(device=dev, precision=prec, autocast_dtype=_AUTOCAST[prec],
                   grad_scaler=prec == "fp16" and dev.type == "cuda",
                   channels_last=dev.type in ("cuda", "cpu") or prec != "fp32")


CPU_FP32 = Runtime(device=torch.device("cpu"), precision="fp32", autocast_dtype=None, grad_scaler=False,
                   channels_last=False)


def device_of(module: nn.Module) -> torch.device:
    """Where a module's parameters (else buffers) live; the CPU for an empty module."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def placed(rt: Runtime, *modules: nn.Module | None) -> Iterator[torch.memory_format]:
    """Move modules to the runtime's device (and memory format) for the duration; then back where they were,
    contiguous. Parameters keep their identity, so optimisers and gate lists built inside stay valid."""
    mods = [m for m in modules if m is not None]
    homes = [device_of(m) for m in mods]
    fmt = rt.memory_format(mods[0]) if mods else torch.contiguous_format
    changed = fmt is not torch.contiguous_format  # leave a model's own layout alone unless we change it
    if rt.device.type == "cuda":
        torch.cuda.set_device(rt.device)  # nccl and cuDNN work on the current device: make it this rank's
    for m in mods:
        m.to(rt.device, memory_format=fmt) if changed else m.to(rt.device)
    try:
        yield fmt
    finally:
        for m, home in zip(mods, homes):
            m.to(home, memory_format=torch.contiguous_format) if changed else m.to(home)


__all__ = ["Runtime", "CPU_FP32", "DEVICE_CHOICES", "PRECISION_CHOICES", "cpu_has_bf16", "device_of", "placed",
           "resolve_device", "resolve_precision", "resolve_runtime"]
