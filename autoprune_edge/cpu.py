"""What CPU this is: its name and the instruction-set extensions that change kernel speed.

Timings taken on one CPU do not carry to another with different vector units (XNNPACK's int8 kernels
on an AVX2-only Zen 3 run no faster than fp32; on an AVX-512 VNNI Zen 4 they run 2.3x faster), so
benchmarks record this beside their numbers and the training precision follows the bf16 flags.
"""
from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# The extensions that decide which XNNPACK / oneDNN kernels run (x86 and Arm spellings).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
               "asimd", "asimddp", "i8mm", "bf16", "sve")


@cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _field(*keys: str) -> str:
    for key in keys:
        for line in _cpuinfo().splitlines():
            if line.lower().startswith(key.lower()) and ":" in line:
                return line.split(":", 1)[1].strip()
    return ""


def cpu_name() -> str:
    """The model name the OS reports (e.g. "AMD EPYC 7B13"), else what platform knows."""
    return _field("model name", "Hardware", "Model", "cpu model") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """Every flag of the first CPU listed (x86 "flags", Arm "Features"); empty where /proc/cpuinfo is absent."""
    return frozenset(_field("flags", "features").split())


def speed_flags() -> tuple[str, ...]:
    """The SPEED_FLAGS this CPU has, in SPEED_FLAGS order (what a profile's ``[device] cpu_flags`` records)."""
    here = cpu_flags()
    return tuple(f for f in SPEED_FLAGS if f in here)


def is_this_cpu(name: str, flags: tuple[str, ...] | list[str]) -> bool:
    """Whether a CPU recorded as (`name`, speed `flags`) is this one as far as kernel speed goes."""
    return bool(flags) and name == cpu_name() and tuple(flags) == speed_flags()


def cpu_signature() -> dict[str, str]:
    """Name, family/model where reported, and the speed-relevant extensions present, for results files."""
    fam, model = _field("cpu family"), _field("model\t", "model ")
    return {"name": cpu_name(), "family_model": f"{fam}/{model}" if fam else "", "speed_flags": " ".join(speed_flags())}


def vector_class(flags: frozenset[str] | set[str] | tuple[str, ...]) -> str:
    """The widest SIMD family in `flags`: what decides which kernel family a runtime picks."""
    for cls, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("neon", "asimd")):
        if flag in flags:
            return cls
    return "other"


# Extensions whose absence changes int8 / bf16 kernel speed a lot within one vector class.
_DOT_PRODUCT = frozenset({"avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp", "i8mm"})


def mismatch(profile_cpu: str, profile_flags: tuple[str, ...]) -> str | None:
    """Why timings measured on (`profile_cpu`, `profile_flags`) may not hold on this CPU, or None: another
    vector class, or a dot-product extension the profile's CPU had and this one lacks."""
    here, there = cpu_flags(), frozenset(profile_flags)
    if not here or not there:
        return None  # nothing to compare
    lacking = sorted((there - here) & _DOT_PRODUCT)
    if vector_class(here) == vector_class(there) and not lacking:
        return None
    why = f"{vector_class(there)} there, {vector_class(here)} here" + (f", no {' '.join(lacking)} here" if lacking
                                                                      else "")
    return f"this CPU ({cpu_name()}) is not the one the profile was measured on ({profile_cpu}: {why})"


__all__ = ["SPEED_FLAGS", "cpu_flags", "cpu_name", "cpu_signature", "mismatch", "speed_flags", "vector_class"]
