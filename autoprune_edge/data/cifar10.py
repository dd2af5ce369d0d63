"""``cifar10:ROOT[?normalization=cifar|imagenet&augment=1&trust_pickle=1]``.

ROOT holds either the ConvNetJS PNG sprites (cifar10_batch_0..49.png train, cifar10_batch_50.png test,
cifar10_labels.json) or the torchvision pickles ROOT/cifar-10-batches-py/ (only with ``trust_pickle=1``:
pickles can run code when loaded).
"""
from __future__ import annotations

import bisect
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError
from .bundle import DataBundle
from .images import ImageDataset
from .normalization import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from .registry import LoadOptions, register_source
from .spec import check_channels, check_query, flag, root_dir, size_note

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

class _RestrictedUnpickler(pickle.Unpickler):
    """Only numpy arrays and plain containers: even a trusted CIFAR pickle cannot run other code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 batch {path} not found (expected data_batch_1..5 and test_batch)") from None
    except Exception as e:  # noqa: BLE001 - any failure here means a corrupt or foreign file
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    obj = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path} is not a CIFAR-10 batch: 'data' must be a uint8 N x 3072 array")
    if labels is None or len(labels) != len(data):
        n = None if labels is None else len(labels)
        raise DataError(f"CIFAR-10 batch {path} has {len(data)} images but {n} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels, dtype=np.int64)


class SpriteStore:
    """ConvNetJS sprites: PNG of width 1024, one 32x32 RGB image per row. Decoded lazily, then cached."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.rows: list[int] = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    im.verify()  # chunk CRCs and completeness, without decoding
                with Image.open(p) as im:
                    w, h = im.size
            except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
                raise DataError(f"CIFAR-10 sprite {p} is corrupt or truncated ({e}); replace it with the original")
            if w != 1024:
                raise DataError(f"CIFAR-10 sprite {p} is {w} pixels wide; ConvNetJS sprites are 1024 wide")
            self.rows.append(h)
        self.starts = np.cumsum([0] + self.rows).tolist()
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.starts[-1]

    def _sprite(self, i: int) -> np.ndarray:
        arr = self._cache.get(i)
        if arr is None:
            try:
                with Image.open(self.paths[i]) as im:
                    arr = np.asarray(im.convert("RGB"))
            except Exception as e:  # noqa: BLE001
                raise DataError(f"cannot decode CIFAR-10 sprite {self.paths[i]}: {e}") from None
            arr = arr.reshape(self.rows[i], 32, 32, 3)
            self._cache[i] = arr
        return arr

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        i = bisect.bisect_right(self.starts, index) - 1
        return self._sprite(i)[index - self.starts[i]]


class CifarImages(ImageDataset):
    """CIFAR images (uint8 32x32x3 from an array or sprite store); ``augment`` = random crop pad 4 + flip."""

    def __init__(self, images, labels: np.ndarray, size, mean, std):
        super().__init__(size, 3, mean, std)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.array(self.images[index], dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        if self.augment:
            x = F.pad(x, (4, 4, 4, 4))  # black border, as RandomCrop(32, padding=4) before ToTensor
            i, j = torch.randint(0, 9, (2,)).tolist()
            x = x[:, i : i + 32, j : j + 32]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return self.finish(x), int(self.labels[index])


def _find_cifar(root: Path) -> tuple[str, Path]:
    for d in (root, root / "cifar10_convnetjs"):
        if (d / "cifar10_labels.json").is_file() or any(d.glob("cifar10_batch_*.png")):
            return "sprites", d
    for d in (root / "cifar-10-batches-py", root):
        if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
            return "pickle", d
    raise DataError(
        f"no CIFAR-10 data in {root}: expected ConvNetJS sprites (cifar10_batch_0..50.png + cifar10_labels.json) "
        f"or the torchvision folder cifar-10-batches-py/"
    )


def _load_sprites(d: Path) -> tuple[CifarImages, CifarImages, str]:
    labels_path = d / "cifar10_labels.json"
    if not labels_path.is_file():
        raise DataError(f"CIFAR-10 labels file {labels_path} not found (the ConvNetJS layout needs it)")
    try:
        obj = json.loads(labels_path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {labels_path}: {e}; expected JSON {{\"labels\": [...]}}") from None
    labels = obj.get("labels") if isinstance(obj, dict) else obj
    if not isinstance(labels, list) or not all(isinstance(v, int) and 0 <= v <= 9 for v in labels):
        raise DataError(f"{labels_path} must hold {{\"labels\": [ints 0..9]}}")
    train_paths = []
    for i in range(50):
        p = d / f"cifar10_batch_{i}.png"
        if not p.is_file():
            break
        train_paths.append(p)
    test_path = d / "cifar10_batch_50.png"
    if not train_paths:
        raise DataError(f"CIFAR-10 training sprite {d / 'cifar10_batch_0.png'} not found")
    later = [i for i in range(len(train_paths), 50) if (d / f"cifar10_batch_{i}.png").is_file()]
    if later:
        raise DataError(
            f"CIFAR-10 sprite {d / f'cifar10_batch_{len(train_paths)}.png'} is missing but batch {later[0]} exists; "
            f"the training sprites must be numbered 0, 1, 2, ... without gaps"
        )
    if not test_path.is_file():
        raise DataError(f"CIFAR-10 test sprite {test_path} not found (expected cifar10_batch_50.png)")
    train_store, test_store = SpriteStore(train_paths), SpriteStore([test_path])
    n_train, n_test = len(train_store), len(test_store)
    if len(labels) != n_train + n_test:
        raise DataError(
            f"{labels_path} has {len(labels)} labels but the sprites in {d} hold {n_train} train + {n_test} test "
            f"images = {n_train + n_test}"
        )
    lab = np.asarray(labels, dtype=np.int64)
    return (
        CifarImages(train_store, lab[:n_train], (32, 32), CIFAR_MEAN, CIFAR_STD),
        CifarImages(test_store, lab[n_train:], (32, 32), CIFAR_MEAN, CIFAR_STD),
        "ConvNetJS PNG sprites",
    )


def _load_cifar_pickles(d: Path, trust: bool, spec_root: str) -> tuple[CifarImages, CifarImages, str]:
    if not trust:
        raise DataError(
            f"{d} holds CIFAR-10 as Python pickles, which can run code when loaded; if you trust the files, "
            f"use the spec cifar10:{spec_root}?trust_pickle=1"
        )
    parts = [_read_cifar_pickle(d / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _read_cifar_pickle(d / "test_batch")
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    for y, name in ((train_y, "data_batch_*"), (test_y, "test_batch")):
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"CIFAR-10 labels in {d / name} must be 0..9")
    return (
        CifarImages(train_x, train_y, (32, 32), CIFAR_MEAN, CIFAR_STD),
        CifarImages(test_x, test_y, (32, 32), CIFAR_MEAN, CIFAR_STD),
        "torchvision pickles",
    )


@register_source("cifar10")
def load_cifar10(root_s: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    assert root_s is not None  # parse_spec guarantees it for sources that need a root
    check_query("cifar10", query, ("normalization", "norm", "augment", "trust_pickle"))
    norm = (query.get("normalization") or query.get("norm") or opts.normalization or "cifar").lower()
    if norm not in ("cifar", "imagenet"):
        raise DataError(f"normalization {norm!r} is unknown for cifar10: use normalization=cifar or =imagenet")
    augment = flag(query.get("augment"), opts.augment, "augment")
    trust = flag(query.get("trust_pickle"), opts.trust_pickle, "trust_pickle")
    check_channels("cifar10", opts.channels, (3,))
    root = root_dir("cifar10", root_s, "ConvNetJS sprites or cifar-10-batches-py/")
    layout, d = _find_cifar(root)
    if layout == "sprites":
        train, val, how = _load_sprites(d)
    else:
        train, val, how = _load_cifar_pickles(d, trust, root_s)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if norm == "imagenet" else (CIFAR_MEAN, CIFAR_STD)
    size = 32 if opts.input_size is None else opts.input_size
    for ds in (train, val):
        ds.size = (size, size)
        ds.mean = torch.tensor(mean).view(-1, 1, 1)
        ds.std = torch.tensor(std).view(-1, 1, 1)
    train.augment = augment
    subset = " (the first 1,000 of the official 10,000 test images)" if how.startswith("ConvNetJS") and len(val) == 1000 else ""
    desc = (
        f"CIFAR-10 from {d} ({how}): {len(train):,} train / {len(val):,} test images{subset}, "
        f"{'ImageNet' if norm == 'imagenet' else 'CIFAR'} normalisation"
        + (", crop+flip augmentation" if augment else "") + size_note(32, size, 3, 3)
    )
    return DataBundle("cifar10", train, val, (3, size, size), mean, std, list(CIFAR10_CLASSES), False, desc,
                      str(d), {"normalization": norm, "augment": augment, "layout": layout})

