"""Datasets behind one spec string: ``synthetic``, ``mnist:ROOT``, ``cifar10:ROOT``, ``folder:ROOT``.

Every dataset yields ``(image, label)`` with ``image`` a float tensor C x H x W already normalised with the
bundle's ``mean``/``std`` and ``label`` an int. Nothing is downloaded and nothing is written under ROOT.

Options may follow the root as a query string, e.g. ``cifar10:data/cifar?normalization=imagenet&augment=1``:

- ``synthetic[?train=512&val=256&classes=10]``
- ``mnist:ROOT`` - ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (torchvision layout)
- ``cifar10:ROOT[?normalization=cifar|imagenet&augment=1&trust_pickle=1]`` - either the ConvNetJS PNG sprites
  (cifar10_batch_0..49.png train, cifar10_batch_50.png test, cifar10_labels.json) or the torchvision
  pickles ROOT/cifar-10-batches-py/ (only with ``trust_pickle=1``: pickles can run code when loaded).
- ``folder:ROOT[?augment=1]`` - ROOT/train/<class>/*.png|jpg and ROOT/val/<class>/... (ImageNet stats).

A model that takes 3 channels can run on 1-channel data (MNIST): pass ``channels=3`` and each image is
repeated over 3 channels (the mean/std tuples are repeated too). Models are never modified for this.
"""
from __future__ import annotations

import bisect
import colorsys
import gzip
import json
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
SYNTHETIC_MEAN = 0.35  # measured pixel statistics of the generated images (3 channels / grey)
SYNTHETIC_STD = {3: 0.25, 1: 0.17}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SCHEMES = ("synthetic", "mnist", "cifar10", "folder")


@dataclass
class DataBundle:
    name: str  # "synthetic" | "mnist" | "cifar10" | "folder"
    train: Dataset
    val: Dataset
    input_shape: tuple[int, int, int]  # (C, H, W) of every image
    mean: tuple[float, ...]  # per channel, already applied to the images
    std: tuple[float, ...]
    class_names: list[str]
    synthetic: bool
    description: str  # one sentence for the report
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ----------------------------------------------------------------------------------------------- helpers


class _ImageDataset(Dataset):
    """Shared tail of every dataset: [0,1] float CHW -> resize -> channel repeat -> normalise."""

    def __init__(self, size: tuple[int, int], channels: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.size = size
        self.channels = channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = False  # only cifar10 and folder datasets augment; elsewhere it has no effect

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size[1])[0]
        if x.shape[0] != self.channels:
            x = x.expand(self.channels, -1, -1)
        return ((x - self.mean) / self.std).contiguous()


def _parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    spec = spec.strip()
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.strip().lower()
    query: dict[str, str] = {}
    if "?" in (rest if sep else scheme):
        if sep:
            rest, _, q = rest.rpartition("?")
        else:
            scheme, _, q = scheme.partition("?")
        query = {k.strip().lower(): v.strip() for k, v in parse_qsl(q, keep_blank_values=True)}
    if scheme not in SCHEMES:
        raise DataError(
            f"unknown data spec {spec!r}: expected one of synthetic, mnist:ROOT, cifar10:ROOT, folder:ROOT"
        )
    root = rest.strip() if sep else None
    if scheme != "synthetic" and not root:
        raise DataError(f"data spec {spec!r} needs a directory: write {scheme}:PATH")
    return scheme, root, query


def _check_query(scheme: str, query: dict[str, str], allowed: tuple[str, ...]) -> None:
    for key in query:
        if key not in allowed:
            ok = ", ".join(allowed) if allowed else "none"
            raise DataError(f"unknown option {key!r} in the {scheme} data spec (accepted options: {ok})")


def _flag(value: str | None, default: bool, key: str) -> bool:
    if value is None:
        return default
    v = value.lower()
    if v in ("", "1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise DataError(f"data spec option {key}={value!r} must be 1 or 0")


def _int_opt(value: str | None, default: int, key: str) -> int:
    if value is None:
        return default
    try:
        out = int(value)
    except ValueError:
        raise DataError(f"data spec option {key}={value!r} must be a whole number") from None
    if out < 1:
        raise DataError(f"data spec option {key}={value!r} must be at least 1")
    return out


def _root_dir(scheme: str, root: str, expected: str) -> Path:
    path = Path(os.path.expanduser(root))
    if not path.exists():
        raise DataError(f"{scheme} data directory {path} does not exist (expected {expected})")
    if not path.is_dir():
        raise DataError(f"{scheme} data path {path} is not a directory (expected {expected})")
    return path


def _check_channels(scheme: str, channels: int | None, allowed: tuple[int, ...]) -> None:
    if channels is not None and channels not in allowed:
        raise DataError(
            f"{scheme} data can feed models with {' or '.join(map(str, allowed))} input channels, not {channels}"
        )


def _check_size(input_size: int | None) -> None:
    if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
        raise DataError(f"input size must be a positive number of pixels, got {input_size!r}")


def _size_note(native: int, size: int, channels: int, native_channels: int) -> str:
    notes = []
    if size != native:
        notes.append(f"resized to {size}x{size}")
    if channels != native_channels:
        notes.append(f"repeated to {channels} channels")
    return f" ({', '.join(notes)})" if notes else ""


# --------------------------------------------------------------------------------------------- synthetic


def _synthetic_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (SYNTHETIC_MEAN,) * channels, (SYNTHETIC_STD[3 if channels == 3 else 1],) * channels


class SyntheticGratings(_ImageDataset):
    """A learnable, deterministic stand-in for real data, generated lazily per index.

    Class k has its own grating orientation (k*180/K degrees), spatial frequency (alternating low/high)
    and colour tint (hue k/K). Each image draws a random phase, contrast, brightness, small orientation and
    frequency jitter and pixel noise from a generator seeded by (seed, split, index), so the same seed gives
    bit-identical images. Labels cycle through the classes (balanced).
    """

    def __init__(self, n: int, size: int, channels: int, num_classes: int, seed: int, split: int):
        super().__init__((size, size), channels, *_synthetic_stats(channels))
        self.n, self.side, self.num_classes, self.seed, self.split = n, size, num_classes, seed, split
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self._yy, self._xx = np.meshgrid(coords, coords, indexing="ij")
        self._tints = np.array(
            [colorsys.hsv_to_rgb(k / num_classes, 0.75, 0.9) for k in range(num_classes)], dtype=np.float32
        )

    def __len__(self) -> int:
        return self.n

    def label(self, index: int) -> int:
        return index % self.num_classes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        k = self.label(index)
        rng = np.random.default_rng((self.seed, self.split, index))
        theta = math.pi * k / self.num_classes + rng.normal(0.0, math.radians(3.0))
        freq = (3.0 if k % 2 == 0 else 6.0) * rng.uniform(0.9, 1.1)  # cycles per image side
        phase = rng.uniform(0.0, 2 * math.pi)
        contrast = rng.uniform(0.25, 0.45)
        wave = np.sin(2 * math.pi * freq * (self._xx * math.cos(theta) + self._yy * math.sin(theta)) + phase)
        if self.channels == 3:
            tint = self._tints[k]
        else:
            tint = np.full(self.channels, 0.6, dtype=np.float32)
        img = tint[:, None, None] * (0.6 + contrast * wave)[None] + rng.uniform(-0.08, 0.08)
        img = img + rng.normal(0.0, 0.06, size=img.shape)
        x = torch.from_numpy(np.clip(img, 0.0, 1.0).astype(np.float32))
        return ((x - self.mean) / self.std).contiguous(), k


def _load_synthetic(query, input_size, channels, seed, n_train, n_val, n_classes) -> DataBundle:
    _check_query("synthetic", query, ("train", "val", "classes"))
    n_train = _int_opt(query.get("train"), n_train, "train")
    n_val = _int_opt(query.get("val"), n_val, "val")
    n_classes = _int_opt(query.get("classes"), n_classes, "classes")
    if n_classes < 2:
        raise DataError(f"the synthetic task needs at least 2 classes, got {n_classes}")
    size = 224 if input_size is None else input_size
    if size < 8:
        raise DataError(f"synthetic images need at least 8x8 pixels, got input size {size}")
    ch = 3 if channels is None else channels
    if ch < 1:
        raise DataError(f"channels must be at least 1, got {ch}")
    train = SyntheticGratings(n_train, size, ch, n_classes, seed, 0)
    val = SyntheticGratings(n_val, size, ch, n_classes, seed, 1)
    desc = (
        f"synthetic {n_classes}-class oriented-grating task, {n_train} train / {n_val} val images of "
        f"{ch}x{size}x{size} generated in-process (accuracy is NOT on real data)"
    )
    mean, std = _synthetic_stats(ch)
    return DataBundle(
        "synthetic", train, val, (ch, size, size), mean, std, [f"class{k}" for k in range(n_classes)], True, desc, None,
        {"seed": seed, "train": n_train, "val": n_val, "classes": n_classes},
    )


# ------------------------------------------------------------------------------------------------- MNIST

_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed) of unsigned bytes, as in the MNIST distribution."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: corrupt or truncated file ({e}); replace it with the original") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an idx file (bad magic number); expected an MNIST idx file")
    if raw[2] != 0x08:
        raise DataError(f"{path} holds idx type 0x{raw[2]:02x}; only unsigned-byte (0x08) idx files are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise DataError(f"{path} has a truncated idx header; replace it with the original file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        what = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: header declares {'x'.join(map(str, dims))} = {expected} bytes, "
            f"file has {len(raw) - header}; replace it with the original"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_mnist(root: Path) -> dict[str, Path]:
    dirs = [root / "MNIST" / "raw", root / "raw", root]
    found: dict[str, Path] = {}
    for key, names in _MNIST_FILES.items():
        for d in dirs:
            for name in names:
                for cand in (d / name, d / (name + ".gz")):
                    if cand.is_file() and key not in found:
                        found[key] = cand
        if key not in found:
            raise DataError(
                f"MNIST file {names[0]}[.gz] not found in {root / 'MNIST' / 'raw'} "
                f"(expected the torchvision layout ROOT/MNIST/raw/*-ubyte.gz)"
            )
    return found


class ArrayImages(_ImageDataset):
    """Images held in memory as uint8 N x H x W (grey) or N x H x W x C."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size, channels, mean, std):
        super().__init__(size, channels, mean, std)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(np.array(self.images[index], dtype=np.uint8))
        x = img[None] if img.ndim == 2 else img.permute(2, 0, 1)
        return self._finish(x.float().div_(255.0)), int(self.labels[index])


def _load_mnist(root_s: str, query, input_size, channels) -> DataBundle:
    _check_query("mnist", query, ())
    root = _root_dir("mnist", root_s, "ROOT/MNIST/raw/*-ubyte.gz")
    files = _find_mnist(root)
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        imgs, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3:
            raise DataError(f"{files[f'{split}_images']} should hold N x H x W images, has shape {imgs.shape}")
        if labels.ndim != 1:
            raise DataError(f"{files[f'{split}_labels']} should hold a list of labels, has shape {labels.shape}")
        if len(imgs) != len(labels):
            raise DataError(
                f"MNIST {split} set in {files[f'{split}_images'].parent} has {len(imgs)} images but "
                f"{len(labels)} labels; the idx files do not belong together"
            )
        if len(labels) and labels.max() > 9:
            raise DataError(f"{files[f'{split}_labels']} has label {labels.max()}; MNIST labels are 0..9")
    h, w = arrays["train_images"].shape[1:]
    if arrays["test_images"].shape[1:] != (h, w):
        raise DataError(f"MNIST train and test images in {root} have different sizes")
    size = (h, w) if input_size is None else (input_size, input_size)
    _check_channels("mnist", channels, (1, 3))
    ch = 1 if channels is None else channels
    mean, std = MNIST_MEAN * ch, MNIST_STD * ch
    train = ArrayImages(arrays["train_images"], arrays["train_labels"].astype(np.int64), size, ch, mean, std)
    val = ArrayImages(arrays["test_images"], arrays["test_labels"].astype(np.int64), size, ch, mean, std)
    desc = (
        f"MNIST handwritten digits from {root}: {len(train):,} train / {len(val):,} test images"
        + _size_note(h, size[0], ch, 1)
    )
    return DataBundle("mnist", train, val, (ch, *size), mean, std, [str(i) for i in range(10)], False, desc,
                      str(root), {})


# ---------------------------------------------------------------------------------------------- CIFAR-10


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


class _SpriteStore:
    """ConvNetJS sprites: PNG of width 1024, one 32x32 RGB image per row. Decoded lazily, then cached."""

    def __init__(self, paths: list[Path]) -> None:
        from PIL import Image

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
            from PIL import Image

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


class CifarImages(_ImageDataset):
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
        return self._finish(x), int(self.labels[index])


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
    train_store, test_store = _SpriteStore(train_paths), _SpriteStore([test_path])
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


def _load_cifar10(root_s, query, input_size, channels, normalization, augment, trust_pickle) -> DataBundle:
    _check_query("cifar10", query, ("normalization", "norm", "augment", "trust_pickle"))
    norm = (query.get("normalization") or query.get("norm") or normalization or "cifar").lower()
    if norm not in ("cifar", "imagenet"):
        raise DataError(f"normalization {norm!r} is unknown for cifar10: use normalization=cifar or =imagenet")
    augment = _flag(query.get("augment"), augment, "augment")
    trust = _flag(query.get("trust_pickle"), trust_pickle, "trust_pickle")
    _check_channels("cifar10", channels, (3,))
    root = _root_dir("cifar10", root_s, "ConvNetJS sprites or cifar-10-batches-py/")
    layout, d = _find_cifar(root)
    if layout == "sprites":
        train, val, how = _load_sprites(d)
    else:
        train, val, how = _load_cifar_pickles(d, trust, root_s)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if norm == "imagenet" else (CIFAR_MEAN, CIFAR_STD)
    size = 32 if input_size is None else input_size
    for ds in (train, val):
        ds.size = (size, size)
        ds.mean = torch.tensor(mean).view(-1, 1, 1)
        ds.std = torch.tensor(std).view(-1, 1, 1)
    train.augment = augment
    subset = " (the first 1,000 of the official 10,000 test images)" if how.startswith("ConvNetJS") and len(val) == 1000 else ""
    desc = (
        f"CIFAR-10 from {d} ({how}): {len(train):,} train / {len(val):,} test images{subset}, "
        f"{'ImageNet' if norm == 'imagenet' else 'CIFAR'} normalisation"
        + (", crop+flip augmentation" if augment else "") + _size_note(32, size, 3, 3)
    )
    return DataBundle("cifar10", train, val, (3, size, size), mean, std, list(CIFAR10_CLASSES), False, desc,
                      str(d), {"normalization": norm, "augment": augment, "layout": layout})


# ------------------------------------------------------------------------------------------ image folder


class FolderImages(_ImageDataset):
    """PIL-decoded files; resize the short side to size/0.875 and center-crop (``augment``: random crop + flip)."""

    def __init__(self, samples: list[tuple[Path, int]], size: int, channels: int, mean, std):
        super().__init__((size, size), channels, mean, std)
        self.samples, self.side = samples, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

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
        return self._finish(x.float().div_(255.0)), label


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


def _load_folder(root_s, query, input_size, channels, augment) -> DataBundle:
    _check_query("folder", query, ("augment",))
    augment = _flag(query.get("augment"), augment, "augment")
    root = _root_dir("folder", root_s, "ROOT/train/<class>/*.png and ROOT/val/<class>/*.png")
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
    _check_channels("folder", channels, (1, 3))
    ch = 3 if channels is None else channels
    size = 224 if input_size is None else input_size
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if ch == 3 else ((0.449,), (0.226,))
    train = FolderImages(train_samples, size, ch, mean, std)
    val = FolderImages(val_samples, size, ch, mean, std)
    train.augment = augment
    desc = (
        f"image folder {root}: {len(train):,} train / {len(val):,} val images in {len(train_classes)} classes, "
        f"resized and center-cropped to {size}x{size}" + (" (grayscale)" if ch == 1 else "")
    )
    return DataBundle("folder", train, val, (ch, size, size), mean, std, train_classes, False, desc, str(root),
                      {"augment": augment})


# ---------------------------------------------------------------------------------------------- entry


def load_data(
    spec: str = "synthetic",
    *,
    input_size: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    synthetic_train: int = 512,
    synthetic_val: int = 256,
    synthetic_classes: int = 10,
    normalization: str | None = None,
    augment: bool = False,
    trust_pickle: bool = False,
) -> DataBundle:
    """Open the dataset named by ``spec`` (see the module docstring). Raises DataError on any problem.

    ``input_size``: side of the square images to produce (default: the dataset's own size; 224 for
    synthetic/folder). ``channels``: 1 or 3 (1-channel data is repeated for 3-channel models).
    ``normalization`` ("cifar"|"imagenet"), ``augment`` and ``trust_pickle`` apply to cifar10 (augment
    also to folder); the same options can be given in the spec's query string, which wins.
    """
    _check_size(input_size)
    scheme, root, query = _parse_spec(spec)
    if scheme == "synthetic":
        if root:
            raise DataError(f"the synthetic data spec takes no path (got {spec!r}); write just 'synthetic'")
        return _load_synthetic(query, input_size, channels, seed, synthetic_train, synthetic_val, synthetic_classes)
    assert root is not None
    if scheme == "mnist":
        return _load_mnist(root, query, input_size, channels)
    if scheme == "cifar10":
        return _load_cifar10(root, query, input_size, channels, normalization, augment, trust_pickle)
    return _load_folder(root, query, input_size, channels, augment)


def _stack(ds: Dataset, indices: list[int], with_labels: bool):
    prev = getattr(ds, "augment", None)
    if prev:
        ds.augment = False  # calibration/held-out data must be deterministic
    try:
        items = [ds[i] for i in indices]
    finally:
        if prev:
            ds.augment = prev
    x = torch.stack([it[0] for it in items])
    if with_labels:
        return x, torch.tensor([it[1] for it in items], dtype=torch.int64)
    return x


def calibration_batch(bundle: DataBundle, n: int, seed: int = 0, *, with_labels: bool = False):
    """``n`` training images drawn at random (seeded, without augmentation), stacked into N x C x H x W.

    If the training set has fewer than ``n`` images, images repeat. With ``with_labels`` returns (x, y).
    """
    total = len(bundle.train)
    if total == 0:
        raise DataError(f"the {bundle.name} training set is empty; no calibration images")
    g = torch.Generator().manual_seed(seed)
    reps = -(-n // total)
    idx = torch.cat([torch.randperm(total, generator=g) for _ in range(max(reps, 1))])[:n].tolist()
    return _stack(bundle.train, idx, with_labels)


def heldout_batch(bundle: DataBundle, n: int, *, with_labels: bool = False):
    """The first ``min(n, len(val))`` validation images, stacked (deterministic). With ``with_labels`` -> (x, y)."""
    total = len(bundle.val)
    if total == 0:
        raise DataError(f"the {bundle.name} validation set is empty; no held-out images")
    return _stack(bundle.val, list(range(min(n, total))), with_labels)


__all__ = [
    "DataBundle",
    "load_data",
    "calibration_batch",
    "heldout_batch",
    "read_idx",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "CIFAR10_CLASSES",
]
