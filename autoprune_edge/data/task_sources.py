"""Data for segmentation and detection (issue 18): two in-process tasks and three on-disk formats.

- ``synthetic-seg[?train=512&val=128&classes=4]`` / ``synthetic-det[...]``: coloured shapes (synthetic_seg.py),
  masks or boxes; learnable, offline, deterministic per seed.
- ``masks:ROOT[?classes=N]``: ROOT/{train,val}/images/*.png|jpg and ROOT/{train,val}/masks/<same stem>.png
  (pixel value = class index, 255 = ignore); class names from ROOT/classes.txt (line 1 = background) or ``classes``.
- ``yolo:ROOT``: the Ultralytics layout, ROOT/images/{train,val}/* and ROOT/labels/{train,val}/<stem>.txt
  (``class cx cy w h``, normalised); names from ROOT/data.yaml ``names`` or ROOT/classes.txt.
- ``coco:ROOT``: ROOT/annotations/instances_{train,val}*.json, images in ROOT/<json suffix>/ (e.g. train2017/)
  or ROOT/images/; crowd annotations skipped, category ids mapped to 1..K in id order.

Images are resized (not cropped) to the model's square input, masks with nearest-neighbour and boxes
scaled with them, and normalised with ImageNet statistics. Detection labels start at 1 (0 is background,
torchvision's convention); targets are {"boxes": n x 4 xyxy in input pixels, "labels": n}.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .bundle import DataBundle
from .folder import IMAGE_SUFFIXES
from .images import ImageDataset
from .normalization import IMAGENET_MEAN, IMAGENET_STD
from .registry import LoadOptions, register_source
from .spec import check_channels, check_query, int_option, root_dir
from .synthetic_seg import MEAN, STD, SyntheticBoxes, SyntheticShapes

Boxes = tuple[np.ndarray, np.ndarray]  # (n x 4 xyxy in the file's pixels, n labels)


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read image {path}: {e}; remove or replace the file") from None


class ImageTargets(ImageDataset):
    """Image files resized to size x size, each with its target, which ``read(spec, (w, h), side)`` makes
    from the item's spec (a mask path, or boxes and labels in the file's pixels) at the resized scale."""

    def __init__(self, items: list[tuple[Path, Any]], size: int, read: Callable[[Any, tuple[int, int], int], Any]):
        super().__init__((size, size), 3, IMAGENET_MEAN, IMAGENET_STD)
        self.items, self.side, self.read = items, size, read

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        path, spec = self.items[i]
        im = _open(path).convert("RGB")
        arr = np.asarray(im.resize((self.side, self.side), Image.BILINEAR), dtype=np.uint8)
        img = self.finish(torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0))
        return img, self.read(spec, im.size, self.side)


def _mask(path: Path, wh: tuple[int, int], side: int) -> torch.Tensor:
    mask = _open(path)
    if mask.mode not in ("L", "P", "I", "I;16"):
        raise DataError(f"mask {path} is {mask.mode}; masks are single-channel class indices")
    return torch.from_numpy(np.asarray(mask.resize((side, side), Image.NEAREST), dtype=np.int64).copy())


def _boxes(spec: Boxes, wh: tuple[int, int], side: int) -> dict[str, torch.Tensor]:
    boxes, labels = spec
    scale = np.array([side / wh[0], side / wh[1]] * 2, dtype=np.float32)
    b = torch.from_numpy((boxes.reshape(-1, 4) * scale).astype(np.float32))
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return {"boxes": b[ok], "labels": torch.from_numpy(labels.astype(np.int64))[ok]}


def _images(d: Path) -> list[Path]:
    if not d.is_dir():
        raise DataError(f"missing image folder {d}")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{d} holds no images (*.png, *.jpg)")
    return files


def _names_file(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not names:
        raise DataError(f"{path} is empty; write one class name per line")
    return names


@register_source("synthetic-seg", needs_root=False, task="segment")
def load_synthetic_seg(root: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    return _synthetic("synthetic-seg", query, opts, SyntheticShapes, "segment", "masks")


@register_source("synthetic-det", needs_root=False, task="detect")
def load_synthetic_det(root: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    return _synthetic("synthetic-det", query, opts, SyntheticBoxes, "detect", "boxes")


def _synthetic(name: str, query: dict[str, str], opts: LoadOptions, cls: type, task: str, what: str) -> DataBundle:
    check_query(name, query, ("train", "val", "classes"))
    check_channels(name, opts.channels, (3,))
    n_train = int_option(query.get("train"), 512, "train")
    n_val = int_option(query.get("val"), 128, "val")
    k = int_option(query.get("classes"), 4, "classes")
    if k < 2:
        raise DataError(f"{name} counts the background as a class: classes must be at least 2, got {k}")
    size = opts.input_size or 128
    if size < 32:
        raise DataError(f"{name} images need at least 32x32 pixels, got input size {size}")
    desc = (f"synthetic shapes with {what} ({k - 1} shape classes + background), {n_train} train / {n_val} val "
            f"images of 3x{size}x{size} generated in-process (the metric is NOT on real data)")
    names = ["background", *(f"shape{j}" for j in range(1, k))]
    return DataBundle(name, cls(n_train, size, k, opts.seed, 0), cls(n_val, size, k, opts.seed, 1), (3, size, size),
                      MEAN, STD, names, True, desc, None, {"train": n_train, "val": n_val, "classes": k}, task=task)


def _rooted(scheme: str, root_s: str | None, query: dict[str, str], allowed: tuple[str, ...], opts: LoadOptions,
            expected: str) -> Path:
    """The checks every on-disk source shares: its options, RGB input, and the root folder."""
    assert root_s is not None  # parse_spec guarantees it for sources that need a root
    check_query(scheme, query, allowed)
    check_channels(scheme, opts.channels, (3,))
    return root_dir(scheme, root_s, expected)


@register_source("masks", task="segment")
def load_masks(root_s: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    root = _rooted("masks", root_s, query, ("classes",), opts,
                   "ROOT/{train,val}/images/*.png and ROOT/{train,val}/masks/*.png")
    names = _names_file(root / "classes.txt")
    if names is None:
        if "classes" not in query:
            raise DataError(f"{root} has no classes.txt: write one class name per line (background first) or pass "
                            "masks:ROOT?classes=N")
        names = ["background", *(f"class{j}" for j in range(1, int_option(query["classes"], 2, "classes")))]
    size = opts.input_size or 224
    splits = []
    for split in ("train", "val"):
        pairs = []
        for img in _images(root / split / "images"):
            mask = root / split / "masks" / f"{img.stem}.png"
            if not mask.is_file():
                raise DataError(f"image {img} has no mask {mask}; every image needs a <stem>.png mask")
            pairs.append((img, mask))
        splits.append(ImageTargets(pairs, size, _mask))
    desc = (f"segmentation folder {root}: {len(splits[0]):,} train / {len(splits[1]):,} val image+mask pairs in "
            f"{len(names)} classes, resized to {size}x{size}")
    return DataBundle("masks", *splits, (3, size, size), IMAGENET_MEAN, IMAGENET_STD, names, False, desc, str(root),
                      {}, task="segment")


def _yolo_names(root: Path) -> list[str]:
    yml = root / "data.yaml"
    if yml.is_file():
        import yaml

        try:
            names = yaml.safe_load(yml.read_text()).get("names")
        except (yaml.YAMLError, AttributeError) as e:
            raise DataError(f"{yml} is not a YAML mapping with 'names' ({e})") from None
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if isinstance(names, list) and names:
            return [str(n) for n in names]
        raise DataError(f"{yml} has no 'names' list")
    names = _names_file(root / "classes.txt")
    if names is None:
        raise DataError(f"{root} has neither data.yaml (with names:) nor classes.txt naming the classes")
    return names


def _yolo_boxes(txt: Path, w: int, h: int, k: int) -> Boxes:
    rows = []
    for n, line in enumerate(txt.read_text().splitlines() if txt.is_file() else [], 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            c, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, IndexError):
            raise DataError(f"{txt}:{n}: expected 'class cx cy w h' (normalised), got {line.strip()!r}") from None
        if not 0 <= c < k:
            raise DataError(f"{txt}:{n}: class {c} is outside the {k} names of data.yaml/classes.txt")
        rows.append((c + 1, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
    a = np.array(rows, dtype=np.float32).reshape(-1, 5)
    return a[:, 1:], a[:, 0].astype(np.int64)


@register_source("yolo", task="detect")
def load_yolo(root_s: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    root = _rooted("yolo", root_s, query, (), opts, "ROOT/images/{train,val}/*.jpg and ROOT/labels/{train,val}/*.txt")
    names = _yolo_names(root)
    size = opts.input_size or 320
    splits = []
    for split in ("train", "val"):
        items = []
        for img in _images(root / "images" / split):
            w, h = _open(img).size
            items.append((img, _yolo_boxes(root / "labels" / split / f"{img.stem}.txt", w, h, len(names))))
        splits.append(ImageTargets(items, size, _boxes))
    desc = (f"YOLO-format detection folder {root}: {len(splits[0]):,} train / {len(splits[1]):,} val images, "
            f"{len(names)} classes, resized to {size}x{size}")
    return DataBundle("yolo", *splits, (3, size, size), IMAGENET_MEAN, IMAGENET_STD, ["background", *names], False,
                      desc, str(root), {}, task="detect")


def _coco_split(root: Path, split: str) -> tuple[list[tuple[Path, Boxes]], list[str]]:
    found = sorted((root / "annotations").glob(f"instances_{split}*.json"))
    if not found:
        raise DataError(f"{root}/annotations has no instances_{split}*.json (COCO detection annotations)")
    path = found[0]
    try:
        doc = json.loads(path.read_text())
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        images, anns = doc["images"], doc["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not COCO detection JSON (needs images, annotations, categories): {e}") from None
    label = {c["id"]: j + 1 for j, c in enumerate(cats)}
    folder = root / path.stem.removeprefix("instances_")
    if not folder.is_dir():
        folder = root / "images"
    per: dict[int, list[tuple[list[float], int]]] = {im["id"]: [] for im in images}
    for a in anns:
        if a.get("iscrowd") or a.get("category_id") not in label or a.get("image_id") not in per:
            continue
        x, y, w, h = a["bbox"]
        per[a["image_id"]].append(([x, y, x + w, y + h], label[a["category_id"]]))
    items = []
    for im in images:
        p = folder / im["file_name"]
        if not p.is_file():
            raise DataError(f"{path} names image {im['file_name']}, which is not in {folder}")
        rows = per[im["id"]]
        items.append((p, (np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 4),
                          np.array([r[1] for r in rows], dtype=np.int64))))
    return items, [str(c["name"]) for c in cats]


@register_source("coco", task="detect")
def load_coco(root_s: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    root = _rooted("coco", root_s, query, (), opts, "ROOT/annotations/instances_{train,val}*.json and the images")
    train, names = _coco_split(root, "train")
    val, val_names = _coco_split(root, "val")
    if names != val_names:
        raise DataError(f"{root}: the train and val annotations list different categories")
    size = opts.input_size or 320
    desc = (f"COCO-format detection data {root}: {len(train):,} train / {len(val):,} val images, {len(names)} "
            f"categories, resized to {size}x{size}")
    return DataBundle("coco", ImageTargets(train, size, _boxes), ImageTargets(val, size, _boxes), (3, size, size),
                      IMAGENET_MEAN, IMAGENET_STD, ["background", *names], False, desc, str(root), {}, task="detect")
