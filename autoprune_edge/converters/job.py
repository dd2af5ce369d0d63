"""`ExportJob`: everything an exporter gets, so that every exporter has one signature:
``export(job, formats) -> list[Artifact]``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .artifact import Artifact
from ..errors import ParityError
from .litert import align_outputs
from .parity import Parity, ParityThresholds, compare


@dataclass
class ExportJob:
    model: nn.Module  # eval mode
    example: torch.Tensor  # one input, NCHW
    out_dir: Path
    heldout: np.ndarray  # parity inputs, NCHW float32, disjoint from calib
    reference: np.ndarray | list[np.ndarray]  # torch's outputs on heldout (a list: several outputs, in order)
    thresholds: ParityThresholds
    calib: torch.Tensor | None = None  # int8 calibration samples
    labels: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    name: str = "model"
    measure: bool = True  # time .tflite files on this host
    measure_runs: int = 30
    localize: bool = True  # find the first diverging layer of a failing artifact
    edgetpu_sram_bytes: int | None = None
    int8_io: str = "uint8"  # tensor type of the int8 file's input/output (uint8: raw pixels for image models)
    time_pixel_step: bool = False  # the target is this machine: time the uint8 input's two forms (pixel_path.py)
    done: list[Artifact] = field(default_factory=list)  # artifacts written so far, in table order

    def judge(self, art: Artifact, got: np.ndarray, step: float = 0.0) -> None:
        """Set the artifact's parity numbers and failures from its outputs on ``heldout`` (``step``: the
        resolution of a quantised output, see `Parity`)."""
        try:
            p = self.parity(got, step)
        except ParityError as e:  # e.g. the converter changed an output's layout: a failure of the file
            art.parity, art.failures, art.parity_ok = None, [str(e)], False
            return
        art.parity = p.to_dict()
        art.failures = self.thresholds.failures(art.format, p)
        art.parity_ok = not art.failures

    def parity(self, got: np.ndarray | list[np.ndarray], step: float = 0.0) -> Parity:
        """An artifact's outputs on ``heldout`` against torch's (several outputs matched up by shape)."""
        if isinstance(self.reference, list):
            got = align_outputs(self.reference, got if isinstance(got, list) else [got])
        return compare(self.reference, got, step=step)

    def artifact(self, fmt: str) -> Artifact | None:
        return next((a for a in self.done if a.format == fmt), None)
