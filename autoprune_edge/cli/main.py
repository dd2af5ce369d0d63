"""The entry point: parse, run one command, turn user errors into one line on stderr (exit 2)."""
from __future__ import annotations

import os
import sys

from .. import progress
from ..errors import AutoPruneEdgeError
from .parser import EXIT_USER_ERROR, build_parser


def glue_negative_values(argv: list[str]) -> list[str]:
    """`--budget -5ms` would read -5ms as an option; pass it on as a value so the budget parser rejects it."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--budget":
            nxt = next(it, None)
            if nxt is not None and nxt.startswith("-") and not nxt.startswith("--"):
                out.append(f"--budget={nxt}")
                continue
            out.append(a)
            if nxt is not None:
                out.append(nxt)
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(glue_negative_values(argv))
    progress.set_quiet(bool(getattr(args, "json", False)))
    try:
        return int(args.func(args) or 0)
    except AutoPruneEdgeError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"autoprune-edge: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("autoprune-edge: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
