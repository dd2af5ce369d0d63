"""LeNet-5-Caffe and LeNet-300-100, the MNIST baselines of the pruning literature (Han et al. 2015, etc.).

LeNet-5-Caffe: conv 20@5x5 -> maxpool 2 -> conv 50@5x5 -> maxpool 2 -> fc 500 -> ReLU -> fc 10
(431,080 parameters on 1x28x28). Like most PyTorch reproductions it also has a ReLU after each conv
(the Caffe prototxt has none there); this changes no parameter and keeps conv channels prunable.
LeNet-300-100: fc 300 -> ReLU -> fc 100 -> ReLU -> fc 10 (266,610 parameters on 1x28x28).
"""
from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet-5 needs inputs of at least 16x16 pixels, got {input_size}")
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc2(x)


class LeNet300(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(in_channels * input_size * input_size, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> LeNet5:
    return LeNet5(num_classes, in_channels, input_size)


def lenet300(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> LeNet300:
    return LeNet300(num_classes, in_channels, input_size)
