"""Learnable segmentation and detection tasks generated in-process (nothing on disk): coloured shapes on
textured noise.

Each image holds 1-3 filled shapes (rectangle or ellipse); class k (1..K) has its own hue, so a pixel's
class is learnable from colour and context, with noise, brightness jitter and shapes that overlap (the
later one wins). Class 0 is background. Deterministic per (seed, split, index). `SyntheticShapes` returns
(normalised image C x H x W float, mask H x W int64); `SyntheticBoxes` the same images with
{"boxes": n x 4 xyxy pixels of each shape's visible part, "labels": n} (shapes hidden below 16 visible
pixels are dropped).
"""
from __future__ import annotations

import colorsys

import numpy as np
import torch
from torch.utils.data import Dataset

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


class SyntheticShapes(Dataset):
    def __init__(self, n: int, size: int = 128, num_classes: int = 4, seed: int = 0, split: int = 0) -> None:
        if num_classes < 2:
            raise ValueError("num_classes counts the background: at least 2")
        self.n, self.size, self.num_classes, self.seed, self.split = n, size, num_classes, seed, split
        self.colours = np.array([colorsys.hsv_to_rgb((k - 1) / (num_classes - 1), 0.8, 0.9)
                                 for k in range(1, num_classes)], dtype=np.float32)
        yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        self._yy, self._xx = yy, xx

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, inst, classes = self.render(i)
        return img, torch.from_numpy(np.asarray(classes, dtype=np.int64)[inst])

    def render(self, i: int) -> tuple[torch.Tensor, np.ndarray, list[int]]:
        """The image, its instance map (0: background, j: the j-th shape) and the class of each instance."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.split, i])
        s = self.size
        img = 0.35 + 0.15 * rng.random((3, 1, 1), dtype=np.float32) + 0.12 * rng.standard_normal((3, s, s)).astype(
            np.float32)
        inst = np.zeros((s, s), dtype=np.int64)
        classes = [0]
        for j in range(1, int(rng.integers(1, 4)) + 1):
            k = int(rng.integers(1, self.num_classes))
            h, w = rng.integers(s // 6, s // 2, size=2)
            y0, x0 = int(rng.integers(0, s - h)), int(rng.integers(0, s - w))
            if rng.random() < 0.5:
                region = (self._yy >= y0) & (self._yy < y0 + h) & (self._xx >= x0) & (self._xx < x0 + w)
            else:
                cy, cx = y0 + h / 2, x0 + w / 2
                region = ((self._yy - cy) / (h / 2)) ** 2 + ((self._xx - cx) / (w / 2)) ** 2 <= 1.0
            shade = 0.8 + 0.4 * rng.random()
            img[:, region] = (self.colours[k - 1] * shade)[:, None] + 0.08 * rng.standard_normal(
                (3, int(region.sum()))).astype(np.float32)
            inst[region] = j
            classes.append(k)
        img = (np.clip(img, 0, 1) - np.array(MEAN, dtype=np.float32)[:, None, None]) / np.array(
            STD, dtype=np.float32)[:, None, None]
        return torch.from_numpy(img), inst, classes


class SyntheticBoxes(SyntheticShapes):
    MIN_PIXELS = 16

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # type: ignore[override]
        img, inst, classes = self.render(i)
        boxes, labels = [], []
        for j in range(1, len(classes)):
            ys, xs = np.nonzero(inst == j)
            if len(ys) < self.MIN_PIXELS:
                continue
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(classes[j])
        return img, {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                     "labels": torch.tensor(labels, dtype=torch.int64)}
