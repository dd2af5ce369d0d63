"""Line numbers for dotted keys of a TOML text: tomllib gives no positions for values, so scan the text."""
from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _split_dotted(s: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', s)
    return [a or b or c for a, b, c in parts]


class TomlLines:
    """Maps dotted key paths (with list indices for arrays of tables) to 1-based line numbers."""

    def __init__(self, text_: str):
        self.keys: dict[tuple, int] = {}
        self.tables: dict[tuple, int] = {}
        counters: dict[tuple, int] = {}
        current: tuple = ()
        for lineno, line in enumerate(text_.splitlines(), start=1):
            m = _HEADER.match(line)
            if m and not line.lstrip().startswith("#"):
                path = tuple(_split_dotted(m.group(2)))
                if m.group(1) == "[[":
                    idx = counters.get(path, 0)
                    counters[path] = idx + 1
                    current = path + (idx,)
                else:
                    current = path
                self.tables.setdefault(current, lineno)
                continue
            km = re.match(r'^\s*((?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+))*)\s*=', line)
            if km:
                key = tuple(_split_dotted(km.group(1)))
                self.keys.setdefault(current + key, lineno)

    def line(self, path: tuple) -> int | None:
        """The key's own line; else the line where its table (or nearest ancestor) starts."""
        path = tuple(path)
        if path in self.keys:
            return self.keys[path]
        for i in range(len(path), -1, -1):
            p = path[:i]
            if p in self.tables:
                return self.tables[p]
            if p and p in self.keys:  # inline table / array value
                return self.keys[p]
        return 1


def dotted(path: tuple) -> str:
    """A key path as the user writes it: ``references[2].latency_ms``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + p
    return out
