"""Atomic output folders: everything is written to a temp dir next to the destination and renamed into
place at the end, so an error or Ctrl-C never leaves a half-written result."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputDirError


def check_writable(dest: Path) -> Path:
    """Fail early (before hours of work) if `dest` cannot be created or replaced."""
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise OutputDirError(f"--out {dest} exists and is a file; pass a folder path")
    parent = dest.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot write to {parent}: permission denied; pass a writable --out folder")
    return dest


@contextlib.contextmanager
def staged_dir(dest: Path) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces `dest`, on any failure it is removed."""
    dest = check_writable(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    except OSError as e:
        raise OutputDirError(f"cannot create output folder next to {dest}: {e.strerror}") from e
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{os.getpid()}"
            dest.rename(old)
        tmp.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:  # also runs on KeyboardInterrupt
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
