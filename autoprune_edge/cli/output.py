"""How commands answer (one JSON summary with --json, rich text otherwise) and the argument readers
several commands share."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from ..errors import AutoPruneEdgeError


def emit(args: argparse.Namespace, summary: dict[str, Any], human: Callable[[], None]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=1, default=str) + "\n")
    else:
        human()


def console() -> Console:
    return Console()


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise AutoPruneEdgeError(f"--input-shape {text!r} is not a list of integers; write e.g. 1,3,224,224") from None
    if len(shape) < 2 or any(v <= 0 for v in shape):
        raise AutoPruneEdgeError(f"--input-shape {text!r} must be positive integers like 1,3,224,224")
    return shape


def parity_args(args: argparse.Namespace) -> dict[str, float]:
    """The --parity-* limits the user gave (ParityThresholds fills in the rest)."""
    keys = ("fp32_rel", "fp16_top1", "fp16_cosine", "int8_top1", "int8_cosine")
    return {k: getattr(args, f"parity_{k}") for k in keys if getattr(args, f"parity_{k}", None) is not None}
