"""`autoprune-edge` command line: a thin layer over the Python API.

User errors (AutoPruneEdgeError) print one line on stderr and exit 2; anything else is a bug and keeps
its traceback. `--json` prints one machine-readable summary on stdout and silences progress output.

    main.py      entry point: parse, run, turn user errors into one line
    parser.py    the argparse tree (torch-free: `measure` runs on a board)
    ship.py      build, prune, convert
    examine.py   profile, compare, targets
    board.py     measure, calibrate (numpy + LiteRT only)
    output.py    --json or human output, shared argument readers
"""
from .main import EXIT_USER_ERROR, main
from .parser import build_parser

__all__ = ["EXIT_USER_ERROR", "build_parser", "main"]
