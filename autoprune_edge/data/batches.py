"""Fixed batches drawn from a bundle: calibration images for int8 conversion and held-out parity inputs."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .bundle import DataBundle


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

