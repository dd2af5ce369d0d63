"""Ultralytics YOLOv8n / YOLO11n built from the YAML that ships inside the package (random initialisation,
nothing downloaded), as the raw tensor program an app runs: image in, {"boxes": N x 4*reg_max x A,
"scores": N x classes x A} out, before DFL decoding and NMS.

Ultralytics is AGPL-3.0 and therefore only an optional extra (``pip install 'autoprune-edge[yolo]'``).
As with torchvision's detectors, ``num_classes`` counts a background class (labels 1..K in the data);
YOLO itself has no background class, so its head gets K = num_classes - 1 outputs. The detect task's
contract (tasks.py) is met with Ultralytics' own loss (v8DetectionLoss: task-aligned assignment, BCE,
CIoU + DFL) and its own box decoding and NMS.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UnknownModelError


def _ultralytics() -> Any:
    try:
        import ultralytics.nn.tasks as tasks
    except ImportError:
        raise UnknownModelError("YOLO models need Ultralytics (AGPL-3.0, optional): pip install "
                                "'autoprune-edge[yolo]'") from None
    return tasks


class YoloRaw(nn.Module):
    def __init__(self, cfg: str, num_classes: int = 81) -> None:
        super().__init__()
        if num_classes < 2:
            raise UnknownModelError(f"{cfg}: num_classes counts the background, so it must be at least 2")
        self.model = _ultralytics().DetectionModel(cfg, nc=num_classes - 1, verbose=False)
        self._loss: Any = None

    @property
    def head(self) -> nn.Module:
        return self.model.model[-1]

    def _raw(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        head = self.head
        kw = getattr(head, "one2many", None) or {"box_head": head.cv2, "cls_head": head.cv3}
        return head.forward_head(feats, **kw)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        saved: list[torch.Tensor | None] = []
        layers = self.model.model
        for m in layers[:-1]:
            if m.f != -1:
                x = saved[m.f] if isinstance(m.f, int) else [x if j == -1 else saved[j] for j in m.f]
            x = m(x)
            saved.append(x if m.i in self.model.save else None)
        feats = [x if j == -1 else saved[j] for j in self.head.f]
        out = self._raw(feats)
        return {"boxes": out["boxes"], "scores": out["scores"]}

    def _feats(self, batch: int, size: tuple[int, int], device: torch.device) -> list[torch.Tensor]:
        """Stand-ins with the feature maps' shapes: Ultralytics reads only their sizes (anchor grid)."""
        return [torch.empty(batch, 1, size[0] // int(s), size[1] // int(s), device=device) for s in self.head.stride]

    def detection_loss(self, out: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
                       size: tuple[int, int]) -> torch.Tensor:
        from ultralytics.cfg import get_cfg
        from ultralytics.utils.loss import v8DetectionLoss

        device = out["boxes"].device
        if self._loss is None or self._loss.device != device:
            self.model.args = get_cfg()  # the default box/cls/dfl gains
            self._loss = v8DetectionLoss(self.model)
        h, w = size
        idx, cls, boxes = [], [], []
        for i, t in enumerate(targets):
            b = t["boxes"].float()
            idx.append(torch.full((len(b),), float(i), device=device))
            cls.append((t["labels"] - 1).float())
            xywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                                (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)
            boxes.append(xywh)
        batch = {"batch_idx": torch.cat(idx), "cls": torch.cat(cls).to(device), "bboxes": torch.cat(boxes).to(device)}
        n = out["boxes"].shape[0]
        preds = {"boxes": out["boxes"].float(), "scores": out["scores"].float(), "feats": self._feats(n, size, device)}
        loss, _ = self._loss(preds, batch)
        return loss.sum() / n  # Ultralytics scales by the batch size for its own learning rates

    def detections(self, out: dict[str, torch.Tensor], size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        from ultralytics.utils.nms import non_max_suppression

        n = out["boxes"].shape[0]
        preds = {"boxes": out["boxes"].float(), "scores": out["scores"].float(),
                 "feats": self._feats(n, size, out["boxes"].device)}
        y = self.head._inference(preds)
        kept = non_max_suppression(y, conf_thres=0.001, iou_thres=0.7, max_det=300)
        return [{"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long() + 1} for d in kept]

    def decoding(self, size: tuple[int, int]) -> dict:
        head = self.head
        return {"outputs": {"boxes": f"per anchor point, 4 sides x {head.reg_max} DFL bins (softmax, expectation "
                                     "= distance in strides from the point to the left, top, right, bottom side)",
                            "scores": "per anchor point, class logits (sigmoid each; no background class, class j "
                                      "here is label j+1 in labels.txt)"},
                "dfl_bins": int(head.reg_max),
                "box": "x1 = (px - left) * stride, y1 = (py - top) * stride, x2 = (px + right) * stride, "
                       "y2 = (py + bottom) * stride",
                "strides": [int(s) for s in head.stride],
                "anchor_points": "grid cell centres (x + 0.5, y + 0.5) of each level, row-major, levels in stride "
                                 "order; multiply by the level's stride for pixels",
                "grids_hw": [[size[0] // int(s), size[1] // int(s)] for s in head.stride],
                "scores_rule": "keep sigmoid score > 0.001, then NMS at IoU 0.7, at most 300 boxes (Ultralytics "
                               "defaults)",
                "input_size_hw": list(size)}


def yolov8n(num_classes: int = 81, in_channels: int = 3) -> nn.Module:
    return YoloRaw("yolov8n.yaml", num_classes)


def yolo11n(num_classes: int = 81, in_channels: int = 3) -> nn.Module:
    return YoloRaw("yolo11n.yaml", num_classes)
