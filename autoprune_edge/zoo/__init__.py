"""Small built-in architectures that torchvision lacks: CIFAR ResNets (akamaster-compatible) and LeNets."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from . import cifar_resnet, lenet


@dataclass(frozen=True)
class ZooEntry:
    builder: Callable[..., nn.Module]
    input_size: int  # side of the square input the model is designed for
    in_channels: int  # default number of input channels
    num_classes: int  # default number of classes
    description: str


ZOO: dict[str, ZooEntry] = {
    **{
        f"cifar_resnet{d}": ZooEntry(
            getattr(cifar_resnet, f"cifar_resnet{d}"), 32, 3, 10,
            f"ResNet-{d} for 32x32 CIFAR images (option-A shortcuts; loads akamaster checkpoints)",
        )
        for d in (20, 32, 44, 56)
    },
    "lenet5": ZooEntry(lenet.lenet5, 28, 1, 10, "LeNet-5-Caffe for 28x28 MNIST digits"),
    "lenet300": ZooEntry(lenet.lenet300, 28, 1, 10, "LeNet-300-100 MLP for 28x28 MNIST digits"),
}


def list_zoo() -> list[str]:
    return list(ZOO)


def build_zoo(name: str, num_classes: int | None = None, in_channels: int | None = None, **kwargs) -> nn.Module:
    entry = ZOO[name]
    return entry.builder(
        num_classes=entry.num_classes if num_classes is None else num_classes,
        in_channels=entry.in_channels if in_channels is None else in_channels,
        **kwargs,
    )


__all__ = ["ZOO", "ZooEntry", "build_zoo", "list_zoo"]
