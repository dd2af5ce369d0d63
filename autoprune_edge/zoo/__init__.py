"""Built-in architectures torchvision lacks as plain tensor programs: CIFAR ResNets (akamaster-compatible),
LeNets, NAS-Bench-201 cell networks, torchvision's detectors/segmenters without their pre/post-processing
(dense_heads.py), and Ultralytics YOLO (yolo.py, optional extra)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from . import cifar_resnet, dense_heads, lenet, nb201, yolo


@dataclass(frozen=True)
class ZooEntry:
    builder: Callable[..., nn.Module]
    input_size: int  # side of the square input the model is designed for
    in_channels: int  # default number of input channels
    num_classes: int  # default number of classes
    description: str
    task: str = "classify"  # tasks.TASKS key: what the outputs are


ZOO: dict[str, ZooEntry] = {
    **{
        f"cifar_resnet{d}": ZooEntry(
            getattr(cifar_resnet, f"cifar_resnet{d}"), 32, 3, 10,
            f"ResNet-{d} for 32x32 CIFAR images (option-A shortcuts; loads akamaster checkpoints)",
        )
        for d in (20, 32, 44, 56)
    },
    "lenet5": ZooEntry(lenet.lenet5, 28, 1, 10, "LeNet-5-Caffe for 28x28 MNIST digits"),
    "nb201": ZooEntry(nb201.nb201, 32, 3, 10,
                      "NAS-Bench-201 cell network (pass arch='|op~0|+|...|'; default: the ResNet-like cell)"),
    "lenet300": ZooEntry(lenet.lenet300, 28, 1, 10, "LeNet-300-100 MLP for 28x28 MNIST digits"),
    "ssdlite320_mobilenet_v3_large": ZooEntry(dense_heads.ssdlite320_mobilenet_v3_large, 320, 3, 91,
                                              "SSDlite detector, raw box/class head tensors (no NMS)", task="detect"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ZooEntry(
        dense_heads.fasterrcnn_mobilenet_v3_large_320_fpn, 320, 3, 91,
        "Faster R-CNN MobileNetV3-FPN: backbone, FPN and RPN head per level (the RoI head runs after NMS)", task="detect"),
    "lraspp_mobilenet_v3_large": ZooEntry(dense_heads.lraspp_mobilenet_v3_large, 320, 3, 21,
                                          "LR-ASPP segmenter, {'out': per-pixel class logits}", task="segment"),
    "deeplabv3_mobilenet_v3_large": ZooEntry(dense_heads.deeplabv3_mobilenet_v3_large, 320, 3, 21,
                                             "DeepLabV3 segmenter, {'out': per-pixel class logits}", task="segment"),
    "yolov8n": ZooEntry(yolo.yolov8n, 640, 3, 81, "Ultralytics YOLOv8n from its YAML, raw DFL box + class tensors "
                        "(needs the AGPL 'yolo' extra)", task="detect"),
    "yolo11n": ZooEntry(yolo.yolo11n, 640, 3, 81, "Ultralytics YOLO11n from its YAML, raw DFL box + class tensors "
                        "(needs the AGPL 'yolo' extra)", task="detect"),
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
