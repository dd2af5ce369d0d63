"""Progress reporting shared by every long stage: rich bars on a terminal, silence under --json."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_state = {"quiet": False}
# Everything human-readable goes to stderr so that --json keeps stdout clean.
console = Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def log(message: str) -> None:
    """One status line for the user (stderr); nothing under --json."""
    if not _state["quiet"]:
        console.print(message, highlight=False)


class _NullTask:
    def advance(self, n: float = 1) -> None:
        pass

    def update(self, **kwargs: Any) -> None:
        pass


class _Task:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self._p, self._id = progress, task_id

    def advance(self, n: float = 1) -> None:
        self._p.advance(self._id, n)

    def update(self, **kwargs: Any) -> None:
        self._p.update(self._id, **kwargs)


@contextlib.contextmanager
def task(description: str, total: float | None = None) -> Iterator[_Task | _NullTask]:
    """A progress bar for one stage; a spinner when total is unknown."""
    if _state["quiet"] or not sys.stderr.isatty() and total is None:
        if not _state["quiet"]:
            log(f"[bold]{description}[/bold] ...")
        yield _NullTask()
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns += [MofNCompleteColumn(), TimeRemainingColumn()]
    columns += [TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console, transient=False) as p:
        tid = p.add_task(description, total=total, info="")
        yield _Task(p, tid)
