"""``folder:ROOT[?augment=1]``: ROOT/train/<class>/*.png|jpg and ROOT/val/<class>/... (ImageNet statistics)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .bundle import DataBundle
from .images import ImageDataset
from .normalization import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, IMAGENET_MEAN, IMAGENET_STD
from .registry import LoadOptions, register_source
from .spec import check_channels, check_query, flag, root_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

class FolderImages(ImageDataset):
    """PIL-decoded files; resize the short side to size/0.875 and center-crop (``augment``: random crop + flip)."""

    def __init__(self, samples: list[tuple[Path, int]], size: int, channels: int, mean, std):
        super().__init__((size, size), channels, mean, std)
        self.samples, self.side = samples, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                im.load()
        except Exception as e:  # noqa: BLE001
            raise DataError(f"cannot read image {path}: {e}; remove or replace the file") from None
        w, h = im.size
        s = self.side
        if self.augment:  # RandomResizedCrop(scale=(0.25, 1), ratio=(3/4, 4/3)) + horizontal flip
            area = w * h * float(torch.empty(()).uniform_(0.25, 1.0))
            ratio = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3))))
            cw = min(w, max(1, round(math.sqrt(area * ratio))))
            ch = min(h, max(1, round(math.sqrt(area / ratio))))
            left = int(torch.randint(0, w - cw + 1, ()))
            top = int(torch.randint(0, h - ch + 1, ()))
            im = im.resize((s, s), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            if torch.rand(()) < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            short = max(s, round(s / 0.875))
            scale = short / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - s) // 2, (nh - s) // 2
            im = im.crop((left, top, left + s, top + s))
        arr = np.asarray(im, dtype=np.uint8)
        x = torch.from_numpy(arr.copy())
        x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
        return self.finish(x.float().div_(255.0)), label


def _scan_split(d: Path, split: str) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{d} has no class folders (expected {d}/<class>/*.png|jpg)")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (d / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"class folder {d / name} has no images (expected *.png or *.jpg files)")
        samples += [(p, label) for p in files]
    return classes, samples


@register_source("folder")
def load_folder(root_s: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    assert root_s is not None  # parse_spec guarantees it for sources that need a root
    input_size, channels = opts.input_size, opts.channels
    check_query("folder", query, ("augment",))
    augment = flag(query.get("augment"), opts.augment, "augment")
    root = root_dir("folder", root_s, "ROOT/train/<class>/*.png and ROOT/val/<class>/*.png")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"image folder {root} has no {split}/ directory (expected {root}/{split}/<class>/*.png)")
    train_classes, train_samples = _scan_split(root / "train", "train")
    val_classes, val_samples = _scan_split(root / "val", "val")
    if train_classes != val_classes:
        only_t = sorted(set(train_classes) - set(val_classes))
        only_v = sorted(set(val_classes) - set(train_classes))
        diff = (f"only in train: {', '.join(only_t)}" if only_t else "") + (
            ("; " if only_t and only_v else "") + (f"only in val: {', '.join(only_v)}" if only_v else "")
        )
        raise DataError(f"train/ and val/ in {root} have different class folders ({diff})")
    check_channels("folder", channels, (1, 3))
    ch = 3 if channels is None else channels
    size = 224 if input_size is None else input_size
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if ch == 3 else (IMAGENET_GREY_MEAN, IMAGENET_GREY_STD)
    train = FolderImages(train_samples, size, ch, mean, std)
    val = FolderImages(val_samples, size, ch, mean, std)
    train.augment = augment
    desc = (
        f"image folder {root}: {len(train):,} train / {len(val):,} val images in {len(train_classes)} classes, "
        f"resized and center-cropped to {size}x{size}" + (" (grayscale)" if ch == 1 else "")
    )
    return DataBundle("folder", train, val, (ch, size, size), mean, std, train_classes, False, desc, str(root),
                      {"augment": augment})

