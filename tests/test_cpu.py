"""cpu.py reads /proc/cpuinfo of x86 and Arm machines alike."""
from __future__ import annotations

import dataclasses

import pytest

from autoprune_edge import cpu
from autoprune_edge.profiles.host import host_profile_note
from autoprune_edge.targets import load_target

X86 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9B14\n"
       "flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B14\n")
ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp crc32\nCPU part\t: 0xd0b\n\nHardware\t: BCM2835\nModel\t: Raspberry Pi 5\n"


@pytest.fixture
def fake(monkeypatch):
    def use(text: str) -> None:
        monkeypatch.setattr(cpu, "_cpuinfo", lambda: text)
    return use


def test_x86_signature(fake) -> None:
    fake(X86)
    assert cpu.cpu_name() == "AMD EPYC 9B14"
    assert {"avx2", "avx512_bf16"} <= cpu.cpu_flags() and "sse2" in cpu.cpu_flags()
    assert cpu.cpu_signature() == {"name": "AMD EPYC 9B14", "family_model": "25/17",
                                   "speed_flags": "avx2 fma avx512f avx512_vnni avx512_bf16"}


def test_arm_signature(fake) -> None:
    fake(ARM)
    assert cpu.cpu_name() == "BCM2835"
    assert cpu.cpu_signature() == {"name": "BCM2835", "family_model": "", "speed_flags": "asimd asimddp"}


def test_no_cpuinfo(fake) -> None:
    fake("")
    assert cpu.cpu_flags() == frozenset() and cpu.cpu_name()


def test_mismatch_names_what_differs(fake) -> None:
    fake(X86.replace(" avx512f avx512_vnni avx512_bf16", ""))  # an AVX2-only CPU
    why = cpu.mismatch("Xeon", ("avx2", "fma", "avx512f", "avx512_bf16"))
    assert why and "avx512 there, avx2 here" in why and "no avx512_bf16" in why
    assert cpu.mismatch("Zen 3", ("avx2", "fma")) is None
    assert cpu.mismatch("unrecorded", ()) is None


def test_mismatch_within_a_vector_class(fake) -> None:
    fake(X86)  # AVX-512 with VNNI and BF16
    assert cpu.mismatch("Xeon", ("avx2", "avx512f", "avx512_bf16")) is None  # more here than there is fine
    fake(X86.replace(" avx512_vnni", ""))
    assert "no avx512_vnni" in cpu.mismatch("Zen 4", ("avx2", "avx512f", "avx512_vnni"))


def test_host_note_names_another_cpu_of_the_same_class(fake) -> None:
    # the same vector class and extensions but another CPU: timings still differ (1.9x between an AVX-512 Xeon
    # and an AVX-512 Zen 5 on the same files), so `build --target host` says to calibrate
    host = load_target("host")
    fake(X86)
    xeon = dataclasses.replace(host, device=dataclasses.replace(host.device, cpu="Intel Xeon",
                                                                cpu_flags=("avx2", "fma", "avx512f", "avx512_bf16")))
    note = host_profile_note(xeon)
    assert note and "AMD EPYC 9B14" in note and "Intel Xeon" in note and "calibrate --target host" in note
    same = dataclasses.replace(xeon, device=dataclasses.replace(xeon.device, cpu="AMD EPYC 9B14"))
    assert host_profile_note(same) is None
    unrecorded = dataclasses.replace(xeon, device=dataclasses.replace(xeon.device, cpu_flags=()))
    assert host_profile_note(unrecorded) is None  # nothing recorded to compare with
