"""torchvision detectors and segmenters as the network an app runs: image in, raw head tensors out.

torchvision's detection models resize and normalise inside forward() and decode boxes with NMS after
it; none of that is a fixed-shape tensor program a .tflite can hold, and apps do it themselves. These
wrappers keep only backbone -> neck -> heads, so pruning, export and parity see what ships:

* SSDlite: {"bbox_regression": N x anchors x 4, "cls_logits": N x anchors x classes} (anchor decoding and
  NMS are the app's, with torchvision's DefaultBoxGenerator settings);
* Faster R-CNN (MobileNetV3 FPN, 320): the backbone, FPN and region-proposal head, per FPN level
  objectness and box deltas; the RoI box head runs on proposals after NMS and is not part of the file;
* LR-ASPP and DeepLabV3: torchvision's own module, {"out": N x classes x H x W} at the input size.

Random initialisation (no download): load weights with --weights.
"""
from __future__ import annotations

import torch
from torch import nn


class SSDliteRaw(nn.Module):
    def __init__(self, num_classes: int = 91) -> None:
        super().__init__()
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        m = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
        self.backbone, self.head = m.backbone, m.head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(list(self.backbone(x).values()))


class FasterRcnnRpnRaw(nn.Module):
    def __init__(self, num_classes: int = 91) -> None:
        super().__init__()
        from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

        m = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=num_classes)
        self.backbone, self.rpn_head = m.backbone, m.rpn.head

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        objectness, deltas = self.rpn_head(list(self.backbone(x).values()))
        return {"objectness": objectness, "box_deltas": deltas}


def ssdlite320_mobilenet_v3_large(num_classes: int = 91, in_channels: int = 3) -> nn.Module:
    return SSDliteRaw(num_classes)


def fasterrcnn_mobilenet_v3_large_320_fpn(num_classes: int = 91, in_channels: int = 3) -> nn.Module:
    return FasterRcnnRpnRaw(num_classes)


def lraspp_mobilenet_v3_large(num_classes: int = 21, in_channels: int = 3) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large as f

    return f(weights=None, weights_backbone=None, num_classes=num_classes)


def deeplabv3_mobilenet_v3_large(num_classes: int = 21, in_channels: int = 3) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large as f

    return f(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
