"""The calibration suite timed on a device: ``measure --suite`` and ``calibrate --target host``.

The fixed synthetic networks of microbench.py are written here as .tflite files and timed with LiteRT
(numpy + ai-edge-litert only, so it runs on a board), in interleaved rounds keeping each network's fastest
p10 (robust to background load). The result is a measurements document for ``calibrate``.
"""
from __future__ import annotations

import tempfile

from ..targets import Target
from .measure import measure_file, new_document
from .microbench import write_suite


def host_microbenchmark(target: Target, *, runs: int = 30, rounds: int = 2, quick: bool = False,
                        precisions: tuple[str, ...] = ("fp32", "int8")) -> dict:
    """Time the synthetic networks of microbench.py on this machine in each of ``precisions`` the target
    has; a measurements document. int8 is timed too: its speed over fp32 is what varies most between
    CPUs (no faster than fp32 on the AVX-512 Xeon the shipped host profile came from, 3-5x faster on a Zen 4's convolutions)."""
    return measure_suite(threads=(target.runtime.threads,), precisions=tuple(p for p in precisions if p in target.precisions),
                         runs=runs, rounds=rounds, quick=quick)


def measure_suite(*, threads: tuple[int, ...] = (1,), precisions: tuple[str, ...] = ("fp32",), runs: int = 30,
                  rounds: int = 2, quick: bool = False, progress=None) -> dict:
    """``measure --suite``: write the fixed microbenchmark networks and time them here (numpy + LiteRT
    only, so it runs on a board), at each thread count, in interleaved rounds keeping each network's lowest
    p10 (robust to background load). The document feeds ``calibrate --measurements``."""
    with tempfile.TemporaryDirectory(prefix="ape_microbench_") as d:
        paths = write_suite(d, precisions, quick=quick)
        best: dict[str, dict] = {}
        jobs = [(p, n) for n in threads for p in paths]
        for r in range(rounds):
            for i, (p, n) in enumerate(jobs):
                rec = measure_file(p, threads=n, runs=runs, warmup=3)
                if len(threads) > 1:
                    rec["model"] = f"{rec['model']}@{n}t"
                keep_fastest(best, [rec])
                if progress is not None:
                    progress(r * len(jobs) + i + 1, rounds * len(jobs))
    doc = new_document(list(best.values()))
    doc["suite"] = {"networks": len(paths), "threads": list(threads), "precisions": list(precisions),
                    "rounds": rounds, "runs": runs, "statistic": "p10_ms"}
    return doc


def keep_fastest(best: dict[str, dict], records: list[dict]) -> None:
    """Merge measurement records into ``best`` (by model name), keeping each model's lowest p10."""
    for rec in records:
        if rec["model"] not in best or rec["p10_ms"] < best[rec["model"]]["p10_ms"]:
            best[rec["model"]] = rec
