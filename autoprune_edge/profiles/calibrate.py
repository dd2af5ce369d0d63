"""``autoprune-edge calibrate``: refit a target profile's throughput, per-op-class efficiencies and
per-kernel overhead to measured latencies, and write the result as a new, validated profile TOML.

Measurements come from ``autoprune-edge measure`` run on the device (see measure.py: each record holds
the per-op kernel list of the .tflite, so no torch model is needed here). For ``host`` without a
measurements file, a microbenchmark of synthetic networks (microbench.py) is timed on this machine.

The fit: for each measured model ``m`` the profile predicts ``L_m(θ)`` with the same cost model as
``profile()`` (kernels.py); θ are the logs of ``compute.<p>.gmacs_per_core`` for every measured
precision, ``ops.<class>`` for every op class that takes at least 3% of some model's predicted time
(``conv1x1`` stays fixed: efficiencies are relative to it), ``memory.bandwidth_gbps`` when memory-bound
kernels take at least 3%, ``ops.fixed_overhead_us`` and, for int8, ``compute.int8.output_element_cost``. Levenberg-Marquardt minimises
``Σ_m (log L_m(θ) − log y_m)² + λ Σ_j (θ_j − θ_j⁰)²`` with a weak prior (λ = 1e-3) that keeps
parameters the data cannot identify where they were. This module imports no torch.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AutoPruneEdgeError
from ..targets import Target, resolve_target, shipped_target
from ..targets.schema import EFFICIENCY_CLASSES, efficiency_class, parse_target
from .kernels import KernelCost, estimate, kernel_bytes, kernel_ms
from .latency import layer_work, memory_seconds
from .measure import MeasurementsError, load_measurements
from .suite import host_microbenchmark, keep_fastest, measure_suite  # noqa: F401 - re-exported
from .toml_edit import drop_line, set_line

_KC_FIELDS = {f.name for f in dataclasses.fields(KernelCost)}
MIN_SHARE = 0.03


class CalibrationError(AutoPruneEdgeError):
    """Calibration cannot run (no usable measurements, no profile file to rewrite, ...)."""


@dataclass
class CalibrationResult:
    target: Target  # the refitted profile (in memory)
    fitted: dict[str, tuple[float, float]]  # dotted key -> (before, after)
    rows: list[dict]  # per measurement: model, precision, threads, measured_ms, before_ms, after_ms
    source: str  # where the measurements came from
    date: str
    statistic: str
    skipped: list[str] = field(default_factory=list)
    toml: str = ""  # the new profile text (validated)
    device: dict = field(default_factory=dict)  # the measurements' device record (cpu name, cpu_flags, ...)
    out: str | None = None  # where it was written
    cross_validated: bool = False  # held_out_error_pct was asked for (None then: too few measurements)
    held_out_error_pct: float | None = None  # mean |error| on measurements held out of the fit (k-fold)

    @property
    def n(self) -> int:
        return len(self.rows)

    def mape(self, which: str = "after") -> float:
        return 100.0 * sum(abs(r[f"{which}_ms"] - r["measured_ms"]) / r["measured_ms"] for r in self.rows) / max(1, len(self.rows))

    def summary(self) -> dict:
        return {"target": self.target.name, "source": self.source, "date": self.date, "statistic": self.statistic,
                "measurements": self.n, "mape_before_pct": round(self.mape("before"), 2),
                "mape_after_pct": round(self.mape("after"), 2),
                "fitted": {k: {"before": a, "after": b} for k, (a, b) in self.fitted.items()},
                "held_out_error_pct": None if self.held_out_error_pct is None else round(self.held_out_error_pct, 2),
                "rows": self.rows, "skipped": self.skipped, "out": self.out}


# --------------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------------


def _get(t: Target, key: str) -> float:
    parts = key.split(".")
    if parts[:2] == ["compute", "thread_speedup"]:  # compute.thread_speedup.<threads>
        return float(t.compute.thread_speedup[int(parts[2]) - 1])
    if parts[0] == "compute" and len(parts) == 2:  # compute.thread_sync_us, compute.parallel_half_work
        return float(getattr(t.compute, parts[1]))
    if parts[0] == "compute" and len(parts) == 4 and parts[2] == "ops":  # compute.<p>.ops.<class>
        return float(t.efficiency(parts[3], parts[1]))
    if parts[0] == "compute":
        return float(getattr(t.compute.get(parts[1]), parts[2]))
    return float(getattr(getattr(t, parts[0]), parts[1]))


def _set(t: Target, key: str, value: float) -> Target:
    parts = key.split(".")
    if parts[:2] == ["compute", "thread_speedup"]:
        ts = list(t.compute.thread_speedup)
        ts[int(parts[2]) - 1] = max(1.0, value)
        return dataclasses.replace(t, compute=dataclasses.replace(t.compute, thread_speedup=tuple(ts)))
    if parts[0] == "compute" and len(parts) == 2:
        return dataclasses.replace(t, compute=dataclasses.replace(t.compute, **{parts[1]: value}))
    if parts[0] == "compute" and len(parts) == 4 and parts[2] == "ops":
        def with_op(p):
            return tuple(sorted({**dict(p.ops), parts[3]: value}.items()))

        precs = tuple(dataclasses.replace(p, ops=with_op(p)) if p.name == parts[1] else p
                      for p in t.compute.precisions)
        return dataclasses.replace(t, compute=dataclasses.replace(t.compute, precisions=precs))
    if parts[0] == "compute":
        precs = tuple(dataclasses.replace(p, **{parts[2]: value}) if p.name == parts[1] else p
                      for p in t.compute.precisions)
        return dataclasses.replace(t, compute=dataclasses.replace(t.compute, precisions=precs))
    obj = getattr(t, parts[0])
    return dataclasses.replace(t, **{parts[0]: dataclasses.replace(obj, **{parts[1]: value})})


# parameters live in log space; these keys may be 0, so they are shifted
_SHIFT = {"ops.fixed_overhead_us": 0.05, "ops.pixel_overhead_ns": 0.05, "compute.int8.output_element_cost": 1.0,
          "compute.thread_sync_us": 0.05, "compute.parallel_half_work": 1e4}


def _to_theta(key: str, v: float) -> float:
    return math.log(v + _SHIFT.get(key, 0.0))


def _from_theta(key: str, x: float) -> float:
    v = math.exp(x) - _SHIFT.get(key, 0.0)
    if (key.startswith("ops.") or ".ops." in key) and key not in ("ops.fixed_overhead_us", "ops.pixel_overhead_ns"):
        v = min(max(v, 1e-3), 4.0)  # the schema's (0, 4]
    return max(v, 0.0)


# --------------------------------------------------------------------------------------------------
# measurements -> cases
# --------------------------------------------------------------------------------------------------


@dataclass
class _Case:
    name: str
    kernels: list[KernelCost]
    precision: str
    threads: int
    io_elements: int
    measured_ms: float


def _cases(target: Target, doc: dict, statistic: str) -> tuple[list[_Case], list[str]]:
    cases, skipped = [], []
    for m in doc["measurements"]:
        p = m["precision"]
        if p not in target.precisions:
            if p == "fp16" and "fp32" in target.precisions:
                p = "fp32"  # fp16-weight files run as fp32 arithmetic on CPUs without fp16 kernels
            else:
                skipped.append(f"{m['model']}: precision {m['precision']} is not one of {target.name}'s "
                               f"({', '.join(target.precisions)})")
                continue
        y = m.get(statistic)
        if not isinstance(y, (int, float)) or isinstance(y, bool) or not y > 0:
            raise MeasurementsError(f"measurement {m['model']} has no positive \"{statistic}\"")
        kernels = [KernelCost(**{k: (tuple(v) if k == "kernel" else v) for k, v in kd.items() if k in _KC_FIELDS})
                   for kd in m["kernels"]]
        cases.append(_Case(m["model"], kernels, p, int(m["threads"]), int(m.get("io_elements", 0)), float(y)))
    return cases, skipped


def _predict(t: Target, c: _Case) -> float:
    bpe = t.precision(c.precision).bytes_per_element
    return estimate(c.kernels, t, c.precision, c.threads, io_bytes=c.io_elements * bpe).total_ms


def _memory_bound(t: Target, k: KernelCost, precision: str, threads: int) -> bool:
    spec = t.precision(precision)
    work, _ = layer_work(spec, k)
    macs_per_s = spec.gmacs_per_core * 1e9 * t.thread_speedup(threads) * t.efficiency(k.op_class, precision)
    compute_s = (work + spec.output_element_cost * k.out_elements) / macs_per_s
    return memory_seconds(t, kernel_bytes(k, precision, spec.bytes_per_element)) > compute_s


def _class_shares(t: Target, cases: list[_Case]) -> dict[str, float]:
    """Largest share of predicted time each op class (and "memory", the memory-bound kernels) takes
    in any one model."""
    best: dict[str, float] = {}
    for c in cases:
        per = [kernel_ms(t, k, c.precision, c.threads)[0] for k in c.kernels]
        total = sum(per) or 1.0
        acc: dict[str, float] = {}
        for k, ms in zip(c.kernels, per):
            if k.op_class == "free":
                continue
            cls = efficiency_class(k.op_class)
            if _memory_bound(t, k, c.precision, c.threads):
                acc["memory"] = acc.get("memory", 0.0) + ms
            else:
                acc[cls] = acc.get(cls, 0.0) + ms
        for cls, ms in acc.items():
            best[cls] = max(best.get(cls, 0.0), ms / total)
    return best


def choose_parameters(target: Target, cases: list[_Case], *, per_precision: bool = False) -> list[str]:
    """Which numbers the measurements can identify. Op-class efficiencies go to ``[ops]`` when every
    precision of the target was measured, else to ``[compute.<p>.ops]`` of the measured ones only, so
    an fp32-only calibration leaves int8 as it was. ``per_precision`` gives every measured precision its
    own efficiencies even then: the calibration suite times each network in each precision, enough to
    tell int8's depthwise and pools (on a Zen 4: 1.1-1.2x and 10x fp32's time) from fp32's."""
    measured = sorted({c.precision for c in cases})
    keys = [f"compute.{p}.gmacs_per_core" for p in measured]
    if any(c.precision == "int8" for c in cases):
        keys.append("compute.int8.output_element_cost")
    shares = _class_shares(target, cases)
    present = [cls for cls in EFFICIENCY_CLASSES if shares.get(cls, 0.0) >= MIN_SHARE]
    anchor = "conv1x1" if "conv1x1" in present else max(present, key=lambda c: shares[c], default=None)
    if set(measured) == set(target.precisions) and not per_precision:
        keys += [f"ops.{cls}" for cls in present if cls != anchor]
    else:
        keys += [f"compute.{p}.ops.{cls}" for p in measured for cls in present if cls != anchor]
    if shares.get("memory", 0.0) >= MIN_SHARE:
        keys.append("memory.bandwidth_gbps")
        if target.memory.cache_bytes and target.memory.cache_bandwidth_gbps:
            keys.append("memory.cache_bandwidth_gbps")
    keys.append("ops.fixed_overhead_us")
    if "ops.pixel_overhead_ns" in dict(target.sources):  # the profile models it: refit it
        keys.append("ops.pixel_overhead_ns")
    multi = sorted({c.threads for c in cases if c.threads > 1})
    if multi and any(c.threads == 1 for c in cases):  # 1-thread runs anchor the rate; the rest fit the scaling
        keys += [f"compute.thread_speedup.{n}" for n in multi if n <= target.compute.cores]
        keys += ["compute.thread_sync_us", "compute.parallel_half_work"]
    return keys


# --------------------------------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------------------------------


def fit(target: Target | str, doc: dict, *, statistic: str = "median_ms", keys: list[str] | None = None,
        prior: float = 1e-3, source: str = "", iterations: int = 60) -> CalibrationResult:
    """Refit ``target`` to the measurements document ``doc`` (see measure.py). Returns the refitted
    profile (in memory) and a before/after table; :func:`render_toml` turns it into a file. A calibration
    suite's document (``measure --suite``) fits each precision's op-class efficiencies on their own."""
    t0 = resolve_target(target)
    cases, skipped = _cases(t0, doc, statistic)
    if not cases:
        raise CalibrationError(f"none of the measurements can calibrate {t0.name}: " + "; ".join(skipped[:3]))
    keys = keys or choose_parameters(t0, cases, per_precision=bool(doc.get("suite")))
    theta0 = np.array([_to_theta(k, _get(t0, k)) for k in keys])
    y = np.log([c.measured_ms for c in cases])

    def build(theta: np.ndarray) -> Target:
        t = t0
        for k, x in zip(keys, theta):
            t = _set(t, k, _from_theta(k, float(x)))
        return t

    def residuals(theta: np.ndarray) -> np.ndarray:
        t = build(theta)
        r = np.log([_predict(t, c) for c in cases]) - y
        return np.concatenate([r, math.sqrt(prior) * (theta - theta0)])

    theta, lam = theta0.copy(), 1e-2
    r = residuals(theta)
    cost = float(r @ r)
    for _ in range(iterations):
        J = np.empty((len(r), len(theta)))
        for j in range(len(theta)):
            d = np.zeros_like(theta)
            d[j] = 1e-4
            J[:, j] = (residuals(theta + d) - r) / 1e-4
        A, g = J.T @ J, J.T @ r
        improved = False
        for _ in range(8):
            step = -np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-9), g)
            step = np.clip(step, -1.0, 1.0)
            r_new = residuals(theta + step)
            c_new = float(r_new @ r_new)
            if c_new < cost:
                theta, r, cost, lam, improved = theta + step, r_new, c_new, max(lam / 3, 1e-7), True
                break
            lam *= 4
        if not improved or np.abs(step).max() < 1e-6:
            break

    t1 = build(theta)
    rows = []
    for c in cases:
        rows.append({"model": c.name, "precision": c.precision, "threads": c.threads,
                     "measured_ms": round(c.measured_ms, 5), "before_ms": round(_predict(t0, c), 5),
                     "after_ms": round(_predict(t1, c), 5)})
    fitted = {k: (_get(t0, k), _get(t1, k)) for k in keys}
    return CalibrationResult(target=t1, fitted=fitted, rows=rows, source=source,
                             date=_dt.date.today().isoformat(), statistic=statistic, skipped=skipped)


FOLDS = 5


def held_out_error(target: Target, doc: dict, *, statistic: str, folds: int = FOLDS) -> float | None:
    """Mean absolute error (%) of :func:`fit` on measurements it did not see (``folds``-fold, fold = index mod
    ``folds``, so a suite's network kinds spread over the folds): what a calibrated profile may state as its
    ``latency_error_pct``. None with fewer than two measurements per fold."""
    ms = list(doc["measurements"])
    if len(ms) < 2 * folds:
        return None
    errors = []
    for k in range(folds):
        fitted = fit(target, {**doc, "measurements": [m for i, m in enumerate(ms) if i % folds != k]},
                     statistic=statistic).target
        cases, _ = _cases(fitted, {**doc, "measurements": ms[k::folds]}, statistic)
        errors += [abs(_predict(fitted, c) / c.measured_ms - 1) for c in cases]
    return 100.0 * sum(errors) / len(errors) if errors else None


# --------------------------------------------------------------------------------------------------
# TOML rewriting (keeps comments, order and every other number of the original file)
# --------------------------------------------------------------------------------------------------

def _fmt(key: str, v: float) -> str:
    if key.endswith("gmacs_per_core"):
        return f"{v:.4g}" if v < 1000 else f"{v:.1f}"
    return f"{v:.4f}".rstrip("0").rstrip(".")


def render_toml(original: Target, result: CalibrationResult, name: str | None = None) -> str:
    """The original profile file with the fitted numbers and their sources replaced; validated."""
    if not original.path or not Path(original.path).is_file():
        raise CalibrationError(f"target {original.name} was not loaded from a file; cannot write a calibrated copy")
    text = Path(original.path).read_text(encoding="utf-8")
    lines = text.splitlines()
    while lines and lines[0].startswith(("# calibrated from ", "# Fitted: ", "# Measured on ")):  # an earlier header
        lines.pop(0)
    how = (f"calibrated from {result.n} measurements on {result.date} ({result.source}; statistic "
           f"{result.statistic}) by autoprune-edge calibrate: least-squares fit on log latency")
    speedups = {k: v for k, (_, v) in result.fitted.items() if k.startswith("compute.thread_speedup.")}
    if speedups:
        ts = list(original.compute.thread_speedup)
        for k, v in speedups.items():
            ts[int(k.rsplit(".", 1)[1]) - 1] = v
        ts = [max(ts[:i + 1]) for i in range(len(ts))]  # the schema wants a non-decreasing list
        set_line(lines, "compute", "thread_speedup", "[" + ", ".join(f"{x:.3f}" for x in ts) + "]")
        set_line(lines, "sources", "compute.thread_speedup", '"' + f"{how} (was {list(original.compute.thread_speedup)})"
                  + '"', quote_key=True)
    for key, (before, after) in result.fitted.items():
        if key in speedups:
            continue
        parts = key.split(".")
        table, leaf = ".".join(parts[:-1]), parts[-1]
        literal = _fmt(key, after)
        if "." not in literal and "e" not in literal:
            literal += ".0"  # keep TOML floats floats
        set_line(lines, table, leaf, literal)
        set_line(lines, "sources", key, '"' + f"{how} (was {before:.4g})" + '"', quote_key=True)
    if result.device.get("cpu_flags") is not None:  # the profile now describes the measured CPU
        set_line(lines, "device", "cpu", json.dumps(str(result.device.get("cpu") or original.device.cpu)))
        set_line(lines, "device", "cpu_flags", json.dumps([str(f) for f in result.device["cpu_flags"]]))
    if result.cross_validated:  # the original's error described the original's fit, not this one
        for key in ("latency_error_pct", "latency_error_inputs"):
            drop_line(lines, "", key)
            drop_line(lines, "sources", key)
        if result.held_out_error_pct is not None:
            set_line(lines, "", "latency_error_pct", f"{max(result.held_out_error_pct, 0.1):.1f}")
            set_line(lines, "sources", "latency_error_pct", json.dumps(
                f"autoprune-edge calibrate on {result.date}: mean absolute error on measurements held out of the fit "
                f"({FOLDS}-fold cross-validation over {result.n} measurements: {result.source})"), quote_key=True)
    if name and name != original.name:
        for i, line in enumerate(lines):
            if re.match(r"^\s*name\s*=", line):
                lines[i] = f'name = "{name}"'
                break
    header = [f"# {how}.", f"# Fitted: {', '.join(result.fitted)}; MAPE on those measurements "
              f"{result.mape('before'):.1f}% -> {result.mape('after'):.1f}%."]
    if result.device.get("cpu_flags") is not None:  # the original's comments and description name its own CPU
        header.append(f"# Measured on {result.device.get('cpu') or '?'} ({' '.join(result.device['cpu_flags'])}); "
                      "the comments and description below are the original profile's.")
    new = "\n".join(header + lines) + "\n"
    parse_target(new, f"calibrated {original.name}")  # raises TargetProfileError if we broke it
    return new


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise CalibrationError(f"cannot write {path}: {e.strerror}") from None


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------


def calibrate(target: Target | str, measurements: str | Path | dict | None = None, out: str | Path | None = None,
              *, statistic: str | None = None, quick: bool = False, write: bool = True,
              cross_validate: bool = True) -> CalibrationResult:
    """Refit ``target`` to a measurements file (or, for ``host`` with none, to a microbenchmark run
    here) and write the calibrated profile to ``out`` (default ``<name>-calibrated.toml``). ``"host"`` starts
    from the shipped file, not from this CPU's cached calibration (which would run the suite twice).

    With ``cross_validate`` the new profile's ``latency_error_pct`` is its error on measurements held out
    of the fit (:func:`held_out_error`; none, hence ``±?``, with fewer than 10 measurements) instead of the
    original's, which described another fit."""
    is_host = isinstance(target, str) and target.strip().lower() == "host"
    t = shipped_target("host") if is_host else resolve_target(target)
    if measurements is None:
        if t.name != "host":
            raise CalibrationError(f"calibrating {t.name} needs --measurements: run 'autoprune-edge measure "
                                   "MODEL.tflite --out results.json' on the device; only 'host' can be "
                                   "calibrated by a microbenchmark on this machine")
        doc = host_microbenchmark(t, quick=quick)
        source = f"microbenchmark of {len(doc['measurements'])} synthetic networks on this host ({doc['device'].get('cpu', '?')})"
        statistic = statistic or "p10_ms"
    elif isinstance(measurements, dict):
        doc, source = measurements, "measurements given in memory"
    else:
        doc = load_measurements(measurements)
        dev = doc.get("device", {})
        source = f"{Path(measurements).name}, device {dev.get('cpu', '?')} / {dev.get('runtime', '?')}"
    if doc.get("suite"):  # measure --suite keeps each network's fastest round: fit that
        statistic = statistic or doc["suite"].get("statistic", "p10_ms")
    result = fit(t, doc, statistic=statistic or "median_ms", source=source)
    result.device = dict(doc.get("device") or {})
    if cross_validate:
        result.cross_validated = True
        result.held_out_error_pct = held_out_error(t, doc, statistic=result.statistic)
    out_path = Path(out) if out is not None else Path(f"{t.name}-calibrated.toml")
    stem = out_path.stem
    name = t.name if stem == t.name or not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", stem) else stem
    result.toml = render_toml(t, result, name=name)
    if write:
        _write_atomic(out_path, result.toml)
        result.out = str(out_path)
    return result
