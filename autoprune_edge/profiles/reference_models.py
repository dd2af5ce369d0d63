"""Networks that published latencies are quoted for, so a target profile can be checked against them.

``build_reference_model(name, input_size)`` returns a random-weight ``nn.Module`` for every ``model``
name used in the ``[[references]]`` of a target profile:

* any torchvision classification builder (``mobilenet_v2``, ``resnet50``, ``googlenet`` = Inception v1,
  ``squeezenet1_0``, ``vgg16``, ``densenet121``, ...);
* ``mobilenet_v1`` (and ``mobilenet_v1_0.25`` etc.): TF-Slim MobileNetV1 (not in torchvision);
* ``mobilenet_v2_0.35`` etc.: MobileNetV2 at a width multiplier (torchvision's ``width_mult``);
* ``person_detect``: TFLite Micro's person-detection network, MobileNetV1 α=0.25 on 96×96 grayscale,
  2 classes;
* ``efficientnet_lite0`` … ``efficientnet_lite4``: EfficientNet without SE, ReLU6, fixed stem and head
  (github.com/tensorflow/tpu models/official/efficientnet/lite);
* ``mobileone_s0`` … ``mobileone_s4``: MobileOne in its re-parameterised (inference) form
  (github.com/apple/ml-mobileone);
* ``yolov8n``: the Ultralytics YOLOv8n detector (backbone, PAN neck, decoupled head without the box
  decoding post-process; 3.15 M params, 4.4 G MACs at 640×640);
* single layers for kernel-level numbers: ``conv2d_<cin>_<cout>_k<k>_p<pad>`` and
  ``dwconv2d_<c>_k<k>_p<pad>`` (the reference's ``input_size`` is the input side).

Only the architecture matters for latency; weights are random.
"""
from __future__ import annotations

import math

import torch
import torchvision
from torch import nn

from ..errors import UnknownModelError

#: input channels of references that are not RGB
INPUT_CHANNELS = {"person_detect": 1}


def _cbr(cin: int, cout: int, k: int, s: int, groups: int = 1, act: type = nn.ReLU6) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act()]


def mobilenet_v1(alpha: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """TF-Slim MobileNetV1 (569 M MACs at 224×224, α = 1)."""

    def c(n: int) -> int:
        return max(8, int(n * alpha))

    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    layers = _cbr(in_channels, c(32), 3, 2)
    cin = c(32)
    for cout, s in cfg:
        layers += _cbr(cin, cin, 3, s, groups=cin) + _cbr(cin, c(cout), 1, 1)
        cin = c(cout)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, s: int):
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else _cbr(cin, mid, 1, 1)
        layers += _cbr(mid, mid, k, s, groups=mid)
        layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


_LITE = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4), 4: (1.4, 1.8)}  # (width, depth)
_LITE_RES = {0: 224, 1: 240, 2: 260, 3: 280, 4: 300}
_B0_BLOCKS = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


def _round_filters(c: int, width: float, divisor: int = 8) -> int:
    c *= width
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return int(new)


def efficientnet_lite(index: int = 0, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite<index>: no squeeze-excite, ReLU6, stem (32) and head (1280) not scaled."""
    width, depth = _LITE[index]
    layers = _cbr(3, 32, 3, 2)
    cin = 32
    for i, (e, k, s, _ci, co, n) in enumerate(_B0_BLOCKS):
        cout = _round_filters(co, width)
        reps = n if i in (0, len(_B0_BLOCKS) - 1) else int(math.ceil(depth * n))
        for r in range(reps):
            layers.append(_MBConv(cin, cout, e, k, s if r == 0 else 1))
            cin = cout
    layers += _cbr(cin, 1280, 1, 1)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes))


class _SE(nn.Module):
    def __init__(self, c: int, ratio: float = 0.0625):
        super().__init__()
        r = int(c * ratio)
        self.reduce = nn.Conv2d(c, r, 1)
        self.expand = nn.Conv2d(r, c, 1)

    def forward(self, x):
        w = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * w


def _mobileone_block(cin: int, cout: int, k: int, s: int, groups: int = 1, se: bool = False) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=True)]
    if se:
        layers.append(_SE(cout))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


_MOBILEONE = {0: (0.75, 1.0, 1.0, 2.0), 1: (1.5, 1.5, 2.0, 2.5), 2: (1.5, 2.0, 2.5, 4.0),
              3: (2.0, 2.5, 3.0, 4.0), 4: (3.0, 3.5, 3.5, 4.0)}


def mobileone(index: int = 0, num_classes: int = 1000) -> nn.Module:
    """MobileOne-S<index> after re-parameterisation (plain depthwise/pointwise stack; S4 has SE)."""
    w = _MOBILEONE[index]
    use_se = index == 4
    planes = min(64, int(64 * w[0]))
    layers = [_mobileone_block(3, planes, 3, 2)]
    for stage, (base, n) in enumerate(zip((64, 128, 256, 512), (2, 8, 10, 1))):
        out = int(base * w[stage])
        n_se = (n // 2 if stage == 2 else n if stage == 3 else 0) if use_se else 0
        for i in range(n):
            s = 2 if i == 0 else 1
            se = i >= n - n_se
            layers.append(_mobileone_block(planes, planes, 3, s, groups=planes, se=se))
            layers.append(_mobileone_block(planes, out, 1, 1, se=se))
            planes = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(planes, num_classes))


def _conv_bn_silu(cin: int, cout: int, k: int = 1, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class _Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1, self.cv2 = _conv_bn_silu(c, c, 3), _conv_bn_silu(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class _C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int, shortcut: bool):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = _conv_bn_silu(c1, 2 * self.c)
        self.cv2 = _conv_bn_silu((2 + n) * self.c, c2)
        self.m = nn.ModuleList(_Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class _SPPF(nn.Module):
    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.cv1 = _conv_bn_silu(c1, c1 // 2)
        self.cv2 = _conv_bn_silu(c1 // 2 * 4, c2)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YOLOv8n(nn.Module):
    """YOLOv8n (depth 0.33, width 0.25, max channels 1024) up to the raw head outputs."""

    def __init__(self, nc: int = 80, reg_max: int = 16):
        super().__init__()
        c = _conv_bn_silu
        self.b0, self.b1, self.b2 = c(3, 16, 3, 2), c(16, 32, 3, 2), _C2f(32, 32, 1, True)
        self.b3, self.b4 = c(32, 64, 3, 2), _C2f(64, 64, 2, True)
        self.b5, self.b6 = c(64, 128, 3, 2), _C2f(128, 128, 2, True)
        self.b7, self.b8, self.b9 = c(128, 256, 3, 2), _C2f(256, 256, 1, True), _SPPF(256, 256)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12, self.h15 = _C2f(384, 128, 1, False), _C2f(192, 64, 1, False)
        self.h16, self.h18 = c(64, 64, 3, 2), _C2f(192, 128, 1, False)
        self.h19, self.h21 = c(128, 128, 3, 2), _C2f(384, 256, 1, False)
        c2, c3 = max(16, 64 // 4, reg_max * 4), max(64, min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(c(ch, c2, 3), c(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for ch in (64, 128, 256))
        self.cv3 = nn.ModuleList(nn.Sequential(c(ch, c3, 3), c(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for ch in (64, 128, 256))

    def forward(self, x):
        x = self.b2(self.b1(self.b0(x)))
        p3 = self.b4(self.b3(x))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        h12 = self.h12(torch.cat([self.up(p5), p4], 1))
        h15 = self.h15(torch.cat([self.up(h12), p3], 1))
        h18 = self.h18(torch.cat([self.h16(h15), h12], 1))
        h21 = self.h21(torch.cat([self.h19(h18), p5], 1))
        return [torch.cat([a(f), b(f)], 1) for f, a, b in zip((h15, h18, h21), self.cv2, self.cv3)]


def _single_layer(name: str) -> nn.Module | None:
    parts = name.split("_")
    try:
        if parts[0] == "conv2d" and len(parts) == 5:
            cin, cout, k, pad = int(parts[1]), int(parts[2]), int(parts[3][1:]), int(parts[4][1:])
            return nn.Conv2d(cin, cout, k, 1, pad)
        if parts[0] == "dwconv2d" and len(parts) == 4:
            c, k, pad = int(parts[1]), int(parts[2][1:]), int(parts[3][1:])
            return nn.Conv2d(c, c, k, 1, pad, groups=c)
    except ValueError:
        return None
    return None


def input_shape(name: str, input_size: int = 224) -> tuple[int, int, int, int]:
    layer = _single_layer(name)
    if layer is not None:
        return (1, layer.in_channels, input_size, input_size)
    return (1, INPUT_CHANNELS.get(name, 3), input_size, input_size)


def build_reference_model(name: str) -> nn.Module:
    """A random-weight model for a reference name (see the module docstring)."""
    torch.manual_seed(0)
    if name == "mobilenet_v1":
        return mobilenet_v1(1.0)
    if name.startswith("mobilenet_v1_"):
        return mobilenet_v1(float(name.rsplit("_", 1)[1]))
    if name == "person_detect":
        return mobilenet_v1(0.25, num_classes=2, in_channels=1)
    if name.startswith("mobilenet_v2_"):  # mobilenet_v2_0.35 ...: torchvision's width multiplier
        return torchvision.models.mobilenet_v2(width_mult=float(name.rsplit("_", 1)[1]))
    if name.startswith("efficientnet_lite") and name[-1].isdigit():
        return efficientnet_lite(int(name[-1]))
    if name.startswith("mobileone_s") and name[-1].isdigit():
        return mobileone(int(name[-1]))
    if name == "yolov8n":
        return YOLOv8n()
    layer = _single_layer(name)
    if layer is not None:
        return layer
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise UnknownModelError(f"unknown reference model {name!r}: not a torchvision model nor one of "
                                "mobilenet_v1, person_detect, efficientnet_lite0-4, mobileone_s0-4, yolov8n, "
                                "conv2d_<cin>_<cout>_k<k>_p<pad>, dwconv2d_<c>_k<k>_p<pad>") from None
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return builder(**kwargs)
