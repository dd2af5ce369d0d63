"""CIFAR-10 ResNet-20/32/44/56 (He et al. 2016, sec. 4.2) exactly as in akamaster/pytorch_resnet_cifar10.

The module names and parameter shapes match that repository, so its pretrained checkpoints load with
``strict=True`` once the ``module.`` prefix (from ``nn.DataParallel``) is stripped. Differences that do not
change the state dict: ReLU and global pooling are modules (``nn.ReLU`` / ``nn.AdaptiveAvgPool2d``) and the
option-A shortcut is a named, parameter-free module instead of a lambda, so the model deep-copies, pickles,
and traces cleanly (torch.fx, torch.export, ONNX).

The pretrained weights expect inputs normalised with ImageNet mean/std (see ``data.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ChannelScatter

DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9}


class OptionAShortcut(ChannelScatter):
    """Parameter-free shortcut: subsample by ``stride`` and zero-pad channels equally on both sides.

    For 16->32 channels this is ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))`` as in akamaster. It is a
    `ChannelScatter`, so pruning tracks which residual channel lands where.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__(in_planes, out_planes, stride, offset=(out_planes - in_planes) // 2)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


class CifarResNet(nn.Module):
    def __init__(self, num_blocks: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = self._make_layer(16, num_blocks, stride=1)
        self.layer2 = self._make_layer(32, num_blocks, stride=2)
        self.layer3 = self._make_layer(64, num_blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # akamaster's _weights_init
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    if depth not in DEPTHS:
        raise ValueError(f"CIFAR ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
    return CifarResNet(DEPTHS[depth], num_classes=num_classes, in_channels=in_channels)


def cifar_resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(20, num_classes, in_channels)


def cifar_resnet32(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(32, num_classes, in_channels)


def cifar_resnet44(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(44, num_classes, in_channels)


def cifar_resnet56(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return cifar_resnet(56, num_classes, in_channels)
