"""Dataset base classes shared by the sources, so every source ends its images the same way."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class ImageDataset(Dataset):
    """Shared tail of every dataset: [0,1] float CHW -> resize -> channel repeat -> normalise."""

    def __init__(self, size: tuple[int, int], channels: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.size = size
        self.channels = channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = False  # cifar10, folder and mnist datasets augment when set; elsewhere it has no effect

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Bring a [0,1] float CHW image to the bundle's size, channels and normalisation."""
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size[1])[0]
        if x.shape[0] != self.channels:
            x = x.expand(self.channels, -1, -1)
        return ((x - self.mean) / self.std).contiguous()


class ArrayImages(ImageDataset):
    """Images held in memory as uint8 N x H x W (grey) or N x H x W x C; ``augment`` shifts each image by up
    to ``shift`` pixels each way (zero fill), the usual augmentation for digits, which must not be flipped."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size, channels, mean, std, shift: int = 0):
        super().__init__(size, channels, mean, std)
        self.images, self.labels = images, labels
        self.shift = shift

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(np.array(self.images[index], dtype=np.uint8))
        x = (img[None] if img.ndim == 2 else img.permute(2, 0, 1)).float().div_(255.0)
        if self.augment and self.shift > 0:
            s = self.shift
            i, j = torch.randint(0, 2 * s + 1, (2,)).tolist()  # the input pipeline seeds this per sample
            x = F.pad(x, (s, s, s, s))[:, i : i + x.shape[1], j : j + x.shape[2]]
        return self.finish(x), int(self.labels[index])
