"""Parity inputs that are not calibration samples: an int8 file must not be judged on what it was
calibrated with."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..errors import AutoPruneEdgeError


def sample_hashes(x: torch.Tensor) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(s.numpy()).tobytes()).hexdigest() for s in x]


def disjoint_heldout(held: torch.Tensor, calib: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Drop held-out samples that also occur (bit-identical) among the calibration samples.

    Calibration comes from the train split and parity inputs from the validation split, so this is a
    guard against datasets whose splits share images; returns (held-out, number dropped).
    """
    if calib is None or len(calib) == 0:
        return held, 0
    seen = set(sample_hashes(calib))
    keep = [i for i, h in enumerate(sample_hashes(held)) if h not in seen]
    if not keep:
        raise AutoPruneEdgeError("every held-out image also occurs in the calibration set; the train and val "
                                 "splits of this data overlap")
    return held[keep], len(held) - len(keep)
