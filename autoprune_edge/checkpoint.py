"""Per-epoch checkpoints of the training phases, so `--resume` continues after a crash or kill -9.

Files hold only tensors, numbers, strings and lists (read back with `torch.load(weights_only=True)`), are
written to a temp file and renamed, so a kill mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import AutoPruneEdgeError


class Checkpointer:
    def __init__(self, folder: Path | str | None, *, resume: bool = False, main: bool = True) -> None:
        self.folder = Path(folder) if folder else None
        self.resume = resume
        self.main = main  # only rank 0 writes under torchrun
        if resume and (self.folder is None or not self.folder.is_dir()):
            raise AutoPruneEdgeError(f"--resume: no checkpoint folder {self.folder}; run once without --resume "
                                     "(checkpoints are written every epoch)")

    def path(self, phase: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{phase}.pt"

    def load(self, phase: str) -> dict[str, Any] | None:
        if not self.resume or self.folder is None or not self.path(phase).exists():
            return None
        try:
            return torch.load(self.path(phase), map_location="cpu", weights_only=True)
        except Exception as e:
            raise AutoPruneEdgeError(f"checkpoint {self.path(phase)} is unreadable ({type(e).__name__}); "
                                     "delete it to restart that phase") from e

    def save(self, phase: str, state: dict[str, Any]) -> None:
        if self.folder is None or not self.main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(phase).with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path(phase))

    def has(self, phase: str) -> bool:
        return self.resume and self.folder is not None and self.path(phase).exists()


NONE = Checkpointer(None)


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
