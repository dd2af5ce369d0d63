"""Applies the key tables of ``keys.py`` to parsed TOML, with one-line errors naming file, key and line."""
from __future__ import annotations

import difflib
from typing import Any

from ..errors import TargetProfileError
from .keys import Key
from .toml_lines import TomlLines, dotted


class Validator:
    """Checks tables of one file against key tables; every error is one line with the key's line number."""

    def __init__(self, display: str, text_: str):
        self.display = display
        self.lines = TomlLines(text_)

    def fail(self, path: tuple, phrase: str) -> TargetProfileError:
        return TargetProfileError(
            f"{self.display}: key {dotted(path)} {phrase} (line {self.lines.line(path)})"
        )

    def table(self, data: Any, path: tuple) -> dict:
        if not isinstance(data, dict):
            raise self.fail(path, "must be a table")
        return data

    def check_keys(self, data: dict, spec: dict, path: tuple, extra: tuple[str, ...] = ()) -> None:
        allowed = list(spec) + list(extra)
        for k in data:
            if k not in allowed:
                guess = difflib.get_close_matches(k, allowed, n=1)
                hint = f"; did you mean {dotted(path + (guess[0],))}?" if guess else ""
                raise TargetProfileError(
                    f"{self.display}: unknown key {dotted(path + (k,))} "
                    f"(line {self.lines.line(path + (k,))}){hint}"
                )
        for k, rule in spec.items():
            if isinstance(rule, dict):
                if k not in data:
                    raise self.fail(path + (k,), "is missing (a required table)")
                continue
            if k not in data:
                if rule.required:
                    raise self.fail(path + (k,), "is missing")
                continue
            phrase = rule.check(data[k])
            if phrase:
                raise self.fail(path + (k,), phrase)


def numeric_paths(data: dict, spec: dict, path: tuple = ()) -> list[tuple]:
    """Paths of the numbers in ``data`` that ``spec`` marks as needing a source."""
    out = []
    for k, v in data.items():
        rule = spec.get(k) if isinstance(spec, dict) else None
        if isinstance(rule, dict) and isinstance(v, dict):
            out += numeric_paths(v, rule, path + (k,))
        elif isinstance(rule, Key) and rule.numeric:
            out.append(path + (k,))
    return out
