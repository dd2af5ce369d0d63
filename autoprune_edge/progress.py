"""Progress reporting shared by every long stage: rich bars on a terminal, silence under --json."""
from __future__ import annotations

import contextlib
import sys
import time
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


class _LineTask:
    """Progress as plain lines, at most one per ``every`` seconds and one at the end: where stderr is a
    file or a pipe (nohup, a cluster job's log) rich draws its bar only on exit, so an hour of gate training
    would show nothing until it is over."""

    def __init__(self, description: str, total: float, every: float) -> None:
        self.description, self.total, self.every = description, total, every
        self.done, self.info = 0.0, ""
        self.start = self.last = time.monotonic()

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            self._line(now)

    def update(self, **kwargs: Any) -> None:
        self.info = str(kwargs.get("info", self.info))

    def finish(self) -> None:
        self._line(time.monotonic())

    def _line(self, now: float) -> None:
        spent = now - self.start
        left = spent * (self.total - self.done) / self.done if self.done else None
        pct = 100 * self.done / self.total if self.total else 100.0
        console.print(f"  {self.description}: {self.done:g}/{self.total:g} ({pct:.0f} %), {_clock(spent)} elapsed"
                      + (f", ~{_clock(left)} left" if self.done < self.total and left is not None else "")
                      + (f", {self.info}" if self.info else ""), highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


LINE_EVERY_S = 60.0


@contextlib.contextmanager
def task(description: str, total: float | None = None) -> Iterator[_Task | _NullTask | _LineTask]:
    """A progress bar for one stage on a terminal (a spinner when total is unknown); elsewhere a line
    per minute."""
    if _state["quiet"] or not sys.stderr.isatty() and total is None:
        if not _state["quiet"]:
            log(f"[bold]{description}[/bold] ...")
        yield _NullTask()
        return
    if not sys.stderr.isatty():
        line = _LineTask(description, float(total), LINE_EVERY_S)
        yield line
        line.finish()
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns += [MofNCompleteColumn(), TimeRemainingColumn()]
    columns += [TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console, transient=False) as p:
        tid = p.add_task(description, total=total, info="")
        yield _Task(p, tid)
