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
    """Also the detect task's contract (tasks.py): `detection_loss` and `detections` use torchvision's own
    anchor generator, matcher, box coder, hard-negative mining and NMS on the raw head tensors. Boxes are
    xyxy in input pixels; label 0 is background."""

    def __init__(self, num_classes: int = 91) -> None:
        super().__init__()
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        m = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
        self.backbone, self.head = m.backbone, m.head
        self._ssd = (m,)  # a tuple: its modules are ours, registered once (above), not twice
        self._anchors: dict[tuple[int, int], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(list(self.backbone(x).values()))

    def anchors(self, size: tuple[int, int]) -> torch.Tensor:
        """torchvision's default boxes for one image of ``size`` (H, W): they depend only on the feature grid."""
        if size not in self._anchors:
            from torchvision.models.detection.image_list import ImageList

            was = self.training
            self.eval()  # shapes only: no BatchNorm statistics move
            with torch.no_grad():
                x = torch.zeros(1, 3, *size, device=next(self.parameters()).device)
                feats = list(self.backbone(x).values())
            self.train(was)
            self._anchors[size] = self._ssd[0].anchor_generator(ImageList(x, [size]), feats)[0]
        return self._anchors[size]

    def decoding(self, size: tuple[int, int]) -> dict:
        """How to decode the two outputs into boxes, for apps (written as decoding.json by build)."""
        ssd = self._ssd[0]
        return {"outputs": {"bbox_regression": "per-anchor (dx, dy, dw, dh), divided by weights",
                            "cls_logits": "per-anchor class logits, class 0 = background"},
                "anchors_cxcywh_pixels": [[round(float(v), 3) for v in a] for a in
                                          _xyxy_to_cxcywh(self.anchors(size))],
                "box_coder_weights": list(ssd.box_coder.weights),
                "decode": "cx = ax + dx/wx * aw; cy = ay + dy/wy * ah; w = aw * exp(dw/ww); h = ah * exp(dh/wh)",
                "scores": "softmax over classes; keep score > %g, then per-class NMS at IoU %g, at most %d boxes"
                          % (ssd.score_thresh, ssd.nms_thresh, ssd.detections_per_img),
                "input_size_hw": list(size)}

    def detection_loss(self, out: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
                       size: tuple[int, int]) -> torch.Tensor:
        """SSD's loss (smooth-L1 boxes + hard-negative-mined classification) for images of ``size`` (H, W)."""
        from torchvision.ops import box_iou

        ssd = self._ssd[0]
        anchors = self.anchors(size).to(out["bbox_regression"].device)
        matched = [ssd.proposal_matcher(box_iou(t["boxes"], anchors)) if t["boxes"].numel()
                   else torch.full((anchors.size(0),), -1, dtype=torch.int64, device=anchors.device) for t in targets]
        head = {k: v.float() for k, v in out.items()}
        losses = ssd.compute_loss(targets, head, [anchors] * len(targets), matched)
        return losses["bbox_regression"] + losses["classification"]

    def detections(self, out: dict[str, torch.Tensor], size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        """Decoded boxes after score threshold and NMS, per image (torchvision's postprocessing)."""
        anchors = self.anchors(size).to(out["bbox_regression"].device)
        head = {k: v.float() for k, v in out.items()}
        n = head["cls_logits"].shape[0]
        return self._ssd[0].postprocess_detections(head, [anchors] * n, [size] * n)


class FasterRcnnRpnRaw(nn.Module):
    def __init__(self, num_classes: int = 91) -> None:
        super().__init__()
        from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

        m = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=num_classes)
        self.backbone, self.rpn_head = m.backbone, m.rpn.head

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        objectness, deltas = self.rpn_head(list(self.backbone(x).values()))
        return {"objectness": objectness, "box_deltas": deltas}


def _xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    return torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


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
