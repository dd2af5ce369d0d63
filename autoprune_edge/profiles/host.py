"""Measure .tflite latency on this machine with the LiteRT interpreter.

Deliberately depends on numpy and a TFLite interpreter only (no torch, no autoprune_edge imports that
pull torch in), so it can be copied to and run on a Raspberry Pi or similar board:

    python -m autoprune_edge.profiles.host model_fp32.tflite [runs]
"""
from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..cpu import cpu_name, is_this_cpu, mismatch


def _interpreter_module():
    # lazy: the interpreter is a heavy optional dependency, and which one a board has is only known here
    try:
        from ai_edge_litert import interpreter as mod
    except ImportError:
        try:  # older boards: the stand-alone runtime
            from tflite_runtime import interpreter as mod  # type: ignore[no-redef]
        except ImportError as e:
            raise ImportError("no TFLite interpreter found; pip install ai-edge-litert") from e
    return mod


@dataclass
class Measurement:
    median_ms: float
    p10_ms: float
    p90_ms: float
    threads: int
    runs: int
    mean_ms: float = 0.0
    min_ms: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _p10(ms: np.ndarray) -> float:
    return float(np.percentile(ms, 10))


def _random_input(shape: list[int], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    return rng.standard_normal(shape).astype(dtype)


class LiveInterpreter:
    """One loaded .tflite on fixed random input, kept alive so that its invokes can be timed in blocks."""

    def __init__(self, path: Path, *, threads: int = 1, seed: int = 0, delegate: str | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TFLite file {path} does not exist")
        mod = _interpreter_module()
        delegates = {"experimental_delegates": [mod.load_delegate(delegate)]} if delegate else {}
        self._it = mod.Interpreter(model_path=str(path), num_threads=int(threads), **delegates)
        self._it.allocate_tensors()
        rng = np.random.default_rng(seed)
        for d in self._it.get_input_details():
            shape = [max(int(v), 1) for v in d["shape"]]
            self._it.set_tensor(d["index"], _random_input(shape, d["dtype"], rng))

    def times_ms(self, runs: int, *, warmup: int = 0) -> np.ndarray:
        """``invoke()`` alone (perf_counter) of ``runs`` calls after ``warmup`` untimed ones, in ms."""
        invoke, clock = self._it.invoke, time.perf_counter
        for _ in range(warmup):
            invoke()
        times = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            t0 = clock()
            invoke()
            times[i] = clock() - t0
        return times * 1e3


def measure_tflite(path: Path, *, threads: int = 1, runs: int = 50, warmup: int = 10, seed: int = 0,
                   delegate: str | None = None) -> Measurement:
    """Time ``invoke()`` alone over ``runs`` calls after ``warmup`` calls, on random input.

    ``delegate``: path of an external delegate library to load (e.g. ``libedgetpu.so.1`` for a Coral
    Edge TPU); by default the interpreter's own kernels with XNNPACK run.
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    ms = LiveInterpreter(path, threads=threads, seed=seed, delegate=delegate).times_ms(runs, warmup=warmup)
    return Measurement(
        median_ms=float(np.median(ms)),
        p10_ms=_p10(ms),
        p90_ms=float(np.percentile(ms, 90)),
        threads=int(threads),
        runs=int(runs),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
    )


def timing_tflite(model, input_shape: tuple[int, ...], out_dir: Path) -> Path:
    """The product's fp32 .tflite of ``model`` (for timing only: no parity, no metadata)."""
    import torch  # lazy: `measure` runs on boards with numpy + ai-edge-litert only

    from ..converters.onnx_export import export_onnx  # lazy: converters import this module
    from ..converters.tflite import onnx_to_tflite

    onnx = export_onnx(copy.deepcopy(model).cpu().eval(), torch.zeros(input_shape), out_dir / "m.onnx")
    return Path(onnx_to_tflite(onnx, out_dir, precisions=["fp32"])["fp32"])


class LatencyProbe:
    """A `landing.Probe` for this machine, steady through the slow phases of a shared VM and read on the scale
    of a file timed alone.

    A reading is a ratio times an anchor. The ratio: the dense reference and the candidate stay loaded and are
    timed in alternating blocks of ``block`` invokes (``skip`` untimed first ones each: the block's own weights
    back in cache, as in an app that runs one model frame after frame); the ratio of the two files' p10 over all
    blocks. A slow phase slows both files alike, so the ratio holds where a bare timing swings by tens of per
    cent: measured here on one pruned MobileNetV2 with the other core busy (6 repeats each), the ratio from 6
    fresh-interpreter visits of 40 invokes spread 0.461-0.498, from 15 alternating blocks of 20 0.478-0.490
    (timing the two files invoke by invoke instead reads 9 % slower: each evicts the other's weights).

    The anchor: the median of every *visit* of the reference this build has made (``visits`` on entry, before
    training, and ``side_visits`` beside each candidate), a visit being what `measure_tflite` and the
    benchmarks time: a fresh interpreter, p10 of 40 invokes after 5. The blocks themselves read the reference
    about 2 % slower than visits do (the other file's weights evicted): a probe anchored on them read a candidate
    +2.1 % over visits of the same files made right after it (median of 4 probes; ratio -0.6 %, anchor +2.0 %;
    benchmarks/results/probe_vs_visits_diag.md), and the landing put builds further under their budget than it
    meant to; anchored on visits it read -1.4 % (median of 5; ratio +0.3 %, anchor -1.7 %; probe_vs_visits.md),
    within the VM's drift over a minute.
    Use as a context manager: it converts and loads the reference on entry and deletes its files on exit."""

    def __init__(self, reference, input_shape: tuple[int, ...], *, threads: int = 1, block: int = 20,
                 blocks: int = 24, skip: int = 3, visits: int = 6, side_visits: int = 2,
                 visit_runs: int = 40, visit_warmup: int = 5) -> None:
        self.reference, self.input_shape = reference, input_shape
        self.threads, self.block, self.blocks, self.skip = threads, block, blocks, skip
        self.visits, self.side_visits, self.visit_runs, self.visit_warmup = visits, side_visits, visit_runs, visit_warmup
        self.ref_visit_ms: list[float] = []  # p10 of each visit of the reference so far

    @property
    def anchor_ms(self) -> float:
        """Readings are proportional to this; landing.land re-scales earlier readings as it moves."""
        return float(np.median(self.ref_visit_ms)) if self.ref_visit_ms else float("nan")

    def __enter__(self) -> LatencyProbe:
        self._dir = tempfile.TemporaryDirectory(prefix="ape_probe_")
        self._ref_path = timing_tflite(self.reference, self.input_shape, Path(self._dir.name))
        self._ref = self._load(self._ref_path)
        self._visit_reference(self.visits)
        return self

    def __exit__(self, *exc) -> None:
        self._ref = None
        self._dir.cleanup()

    def _load(self, path: Path) -> LiveInterpreter:
        live = LiveInterpreter(path, threads=self.threads)
        live.times_ms(0, warmup=self.skip)  # XNNPACK packs weights on the first invokes
        return live

    def _visit_reference(self, n: int) -> None:
        self.ref_visit_ms += [measure_tflite(self._ref_path, threads=self.threads, runs=self.visit_runs,
                                             warmup=self.visit_warmup).p10_ms for _ in range(n)]

    def __call__(self, model) -> float:
        with tempfile.TemporaryDirectory(prefix="ape_probe_", dir=self._dir.name) as d:
            cand = self._load(timing_tflite(model, self.input_shape, Path(d)))
            ref_ms, cand_ms = [], []
            for _ in range(self.blocks):
                ref_ms.append(self._ref.times_ms(self.block, warmup=self.skip))
                cand_ms.append(cand.times_ms(self.block, warmup=self.skip))
            del cand
        ref_p10, cand_p10 = (_p10(np.concatenate(t)) for t in (ref_ms, cand_ms))
        self._visit_reference(self.side_visits)
        return cand_p10 / ref_p10 * self.anchor_ms


def measures_here(target) -> bool:
    """Whether timing a file on this machine times it on `target`: the `host` profile, or a profile that
    `calibrate` fitted on this CPU (same name and speed extensions, a LiteRT runtime), whatever its file
    is called. A latency budget against such a target lands on measured latency (landing.py)."""
    if target.name == "host":
        return True
    return is_this_cpu(target.device.cpu, target.device.cpu_flags) and "litert" in target.runtime.name.lower()


def host_profile_note(target) -> str | None:
    """For the `host` target: a one-line warning when this machine's CPU is not the one its profile was
    measured on (int8 kernels alone run 1x to 2.3x faster than fp32 depending on AVX-512 VNNI, and two
    AVX-512 CPUs of different makers ran the same files 1.9x apart)."""
    if target.name != "host":
        return None
    why = mismatch(target.device.cpu, target.device.cpu_flags)
    if why is None and target.device.cpu_flags and target.device.cpu != cpu_name():
        # same vector class and extensions, another CPU: the shipped profile (an AVX-512 Xeon's fit) was 89 % off
        # on an AVX-512 Zen 5 (benchmarks/results/host_fidelity_zen5.md), though it ranked models as well
        why = f"this CPU ({cpu_name()}) is not the one recorded as measured ({target.device.cpu})"
    if why is None:
        return None
    return (f"the host profile may not fit this machine: {why}; its latency predictions can be further off than "
            f"its stated {target.latency_error_pct or '?'} %: `autoprune-edge calibrate --target host --out "
            "host.toml` fits one here in seconds (then --target host.toml)")


def measure_all_threads(path: Path, runs: int = 50, *, warmup: int = 10) -> dict[int, Measurement]:
    """Latency with 1 thread and with all cores (``os.cpu_count()``)."""
    counts = sorted({1, max(os.cpu_count() or 1, 1)})
    return {n: measure_tflite(path, threads=n, runs=runs, warmup=warmup) for n in counts}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m autoprune_edge.profiles.host MODEL.tflite [RUNS]", file=sys.stderr)
        return 2
    runs = int(argv[1]) if len(argv) > 1 else 50
    for n, m in measure_all_threads(Path(argv[0]), runs=runs).items():
        print(f"{argv[0]}: {n} thread(s): median {m.median_ms:.3f} ms (p10 {m.p10_ms:.3f}, p90 {m.p90_ms:.3f}, {m.runs} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
