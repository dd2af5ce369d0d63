"""`--target host` means this machine: a profile calibrated on this CPU, made once and kept.

The shipped ``host.toml`` was fitted on one build machine. On other CPUs its predictions were far off
although they ranked models well (89 % unscaled on an AVX-512 Zen 5, benchmarks/results/
host_fidelity_zen5.md), and int8's speed over fp32 differs most of all between CPUs. The calibration
suite fixes that in seconds, so :func:`host_profile` does it the first time ``host`` is loaded on a CPU
the shipped profile was not measured on, and caches the result per CPU (name, family/model, speed
extensions, runtime version). Set ``AUTOPRUNE_EDGE_HOST_PROFILE=shipped`` to use the shipped file as
it is (the test suite does, for repeatable numbers), and ``AUTOPRUNE_EDGE_CACHE`` to move the cache.

Torch-free, like the rest of calibration (it runs through ``targets.load_target``).
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from ..cpu import cpu_name, cpu_signature, is_this_cpu, speed_flags
from ..errors import TargetProfileError
from ..targets import Target
from ..targets.schema import load_target_file
from . import calibrate as calibration
from .measure import runtime_version

MODE_ENV = "AUTOPRUNE_EDGE_HOST_PROFILE"  # "auto" (default) or "shipped"
CACHE_ENV = "AUTOPRUNE_EDGE_CACHE"


def cache_dir() -> Path:
    """Where calibrated host profiles are kept: $AUTOPRUNE_EDGE_CACHE, else the user's cache directory."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autoprune-edge"


def cache_key() -> str:
    """This CPU and runtime as a short stable key: a calibration holds for exactly these."""
    sig = cpu_signature()
    text = "|".join((sig["name"], sig["family_model"], sig["speed_flags"], runtime_version()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_path() -> Path:
    # named host.toml so that the calibrated profile keeps the name `host` (calibrate names a file by its stem)
    return cache_dir() / "host-profiles" / cache_key() / "host.toml"


def measured_on_this_cpu(target: Target) -> bool:
    """Whether `target` records this CPU (its name and every speed extension) as the one it was measured on."""
    return is_this_cpu(target.device.cpu, target.device.cpu_flags)


def auto_enabled() -> bool:
    mode = os.environ.get(MODE_ENV, "auto").strip().lower()
    if mode not in ("auto", "shipped"):
        raise TargetProfileError(f"{MODE_ENV}={mode!r} must be 'auto' or 'shipped'")
    return mode == "auto"


def host_profile(shipped: Target, *, quick: bool = False, log=None) -> Target:
    """The profile `host` stands for on this machine: the shipped one where it was measured on this CPU
    (or auto-calibration is off), else this CPU's cached calibration, else a new one made now (≈5 s)
    and cached. Never fails a build over calibration: where the suite cannot run, the shipped profile
    is returned (with a line through ``log``) and its CPU note still warns."""
    if not auto_enabled() or measured_on_this_cpu(shipped):
        return shipped
    say = log or (lambda message: None)
    path = cached_path()
    if path.is_file():
        try:
            cached = load_target_file(path, expect_name="host")
            if measured_on_this_cpu(cached):
                return cached
        except Exception as e:  # noqa: BLE001 - a damaged cache file is recalibrated, not fatal
            say(f"ignoring the cached host profile {path} ({str(e).splitlines()[0][:200]}); calibrating again")
    say(f"calibrating the host profile for this CPU ({cpu_name()}, {' '.join(speed_flags())}): the shipped one "
        f"was measured on {shipped.device.cpu}; ≈5 s, once, kept in {path.parent}")
    t0 = time.perf_counter()
    try:
        # keeps the shipped profile's error: a suite-calibrated host profile's, measured on 247 real models
        res = calibration.calibrate(shipped, None, out=path, quick=quick, cross_validate=False)
    except Exception as e:  # noqa: BLE001 - no LiteRT, a read-only cache...: the shipped profile still predicts
        say(f"could not calibrate the host profile here ({str(e).splitlines()[0][:200]}); using the shipped one")
        return shipped
    say(f"host profile calibrated on {res.n} suite timings in {time.perf_counter() - t0:.1f} s "
        f"(error on them {res.mape('before'):.0f} % -> {res.mape('after'):.0f} %)")
    return load_target_file(path, expect_name="host")


def calibration_note(target: Target) -> str | None:
    """For the card: where `host`'s numbers came from when they are this machine's own calibration."""
    if target.name != "host" or not target.path or not Path(target.path).is_relative_to(cache_dir()):
        return None
    return (f"host latency predictions come from the profile calibrated on this CPU ({target.device.cpu}, "
            f"{' '.join(target.device.cpu_flags)}), kept in {target.path}; delete it to calibrate again")
