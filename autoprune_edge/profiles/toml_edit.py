"""Edit a profile's TOML text line by line, so a rewritten profile keeps its comments, order and every
number nobody changed (tomllib reads TOML but cannot write it back)."""
from __future__ import annotations

import re

_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _is_header(line: str) -> bool:
    return bool(_HEADER_RE.match(line)) and not line.lstrip().startswith("#")


def _key_pattern(key: str) -> re.Pattern[str]:
    return re.compile(r'^\s*"?' + re.escape(key) + r'"?\s*=')


def table_span(lines: list[str], table: str) -> tuple[int, int] | None:
    """[header line, end) of the table ``[table]``; ``""`` is the top level (before the first header)."""
    if table == "":
        return -1, next((i for i, line in enumerate(lines) if _is_header(line)), len(lines))
    start = None
    for i, line in enumerate(lines):
        if not _is_header(line):
            continue
        if start is not None:
            return start, i
        if _HEADER_RE.match(line).group(1).replace('"', "") == table and not line.lstrip().startswith("[["):
            start = i
    return (start, len(lines)) if start is not None else None


def set_line(lines: list[str], table: str, key: str, literal: str, quote_key: bool = False) -> None:
    """Set ``key = literal`` in ``[table]`` (top level for ``""``): replaced in place, else added after the
    table's last key (a missing table is appended)."""
    span = table_span(lines, table)
    written_key = f'"{key}"' if quote_key else key
    if span is None:
        lines += ["", f"[{table}]", f"{written_key} = {literal}"]
        return
    a, b = span
    pat = _key_pattern(key)
    for i in range(a + 1, b):
        if pat.match(lines[i]):
            lines[i] = f"{written_key} = {literal}"
            return
    last = a
    for i in range(a + 1, b):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            last = i
    lines.insert(last + 1, f"{written_key} = {literal}")


def drop_line(lines: list[str], table: str, key: str) -> None:
    """Remove ``key`` from ``[table]`` (top level for ``""``) where it is set."""
    span = table_span(lines, table)
    if span is None:
        return
    pat = _key_pattern(key)
    for i in range(span[0] + 1, span[1]):
        if pat.match(lines[i]):
            del lines[i]
            return
