"""``synthetic[?train=512&val=256&classes=10]``: oriented gratings generated in-process, nothing on disk."""
from __future__ import annotations

import colorsys
import math

import numpy as np
import torch

from ..errors import DataError
from .bundle import DataBundle
from .images import ImageDataset
from .normalization import SYNTHETIC_MEAN, SYNTHETIC_STD
from .registry import LoadOptions, register_source
from .spec import check_query, int_option


def synthetic_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (SYNTHETIC_MEAN,) * channels, (SYNTHETIC_STD[3 if channels == 3 else 1],) * channels


class SyntheticGratings(ImageDataset):
    """A learnable, deterministic stand-in for real data, generated lazily per index.

    Class k has its own grating orientation (k*180/K degrees), spatial frequency (alternating low/high)
    and colour tint (hue k/K). Each image draws a random phase, contrast, brightness, small orientation and
    frequency jitter and pixel noise from a generator seeded by (seed, split, index), so the same seed gives
    bit-identical images. Labels cycle through the classes (balanced).
    """

    def __init__(self, n: int, size: int, channels: int, num_classes: int, seed: int, split: int):
        super().__init__((size, size), channels, *synthetic_stats(channels))
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


@register_source("synthetic", needs_root=False)
def load_synthetic(root: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    check_query("synthetic", query, ("train", "val", "classes"))
    n_train = int_option(query.get("train"), opts.synthetic_train, "train")
    n_val = int_option(query.get("val"), opts.synthetic_val, "val")
    n_classes = int_option(query.get("classes"), opts.synthetic_classes, "classes")
    if n_classes < 2:
        raise DataError(f"the synthetic task needs at least 2 classes, got {n_classes}")
    size = 224 if opts.input_size is None else opts.input_size
    if size < 8:
        raise DataError(f"synthetic images need at least 8x8 pixels, got input size {size}")
    ch = 3 if opts.channels is None else opts.channels
    if ch < 1:
        raise DataError(f"channels must be at least 1, got {ch}")
    train = SyntheticGratings(n_train, size, ch, n_classes, opts.seed, 0)
    val = SyntheticGratings(n_val, size, ch, n_classes, opts.seed, 1)
    desc = (
        f"synthetic {n_classes}-class oriented-grating task, {n_train} train / {n_val} val images of "
        f"{ch}x{size}x{size} generated in-process (accuracy is NOT on real data)"
    )
    mean, std = synthetic_stats(ch)
    return DataBundle(
        "synthetic", train, val, (ch, size, size), mean, std, [f"class{k}" for k in range(n_classes)], True, desc, None,
        {"seed": opts.seed, "train": n_train, "val": n_val, "classes": n_classes},
    )
