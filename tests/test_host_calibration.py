"""`host` calibrated on this CPU the first time it is loaded off the CPU its shipped profile was measured on."""
from __future__ import annotations

import dataclasses

import pytest

from autoprune_edge.cpu import cpu_name, speed_flags
from autoprune_edge.errors import TargetProfileError
from autoprune_edge.profiles import host_calibration as hc
from autoprune_edge.profiles.host import host_profile_note
from autoprune_edge.targets import load_target, shipped_target


@pytest.fixture()
def auto(monkeypatch, tmp_path):
    monkeypatch.setenv(hc.MODE_ENV, "auto")
    monkeypatch.setenv(hc.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _elsewhere(t):
    """`t` as if measured on another CPU."""
    return dataclasses.replace(t, device=dataclasses.replace(t.device, cpu="Some Other CPU", cpu_flags=("avx2",)))


def _shipped():
    return shipped_target("host")


def test_off_its_cpu_host_is_calibrated_once_and_cached(auto, monkeypatch):
    shipped = _elsewhere(_shipped())
    lines: list[str] = []
    first = hc.host_profile(shipped, quick=True, log=lines.append)
    assert first.name == "host" and first.device.cpu == cpu_name() and first.device.cpu_flags == speed_flags()
    assert first.path == str(hc.cached_path()) and str(auto) in first.path
    assert "calibrating the host profile for this CPU" in lines[0] and "Some Other CPU" in lines[0]
    assert lines[-1].startswith("host profile calibrated on 11 suite timings")  # 6 fp32 + 5 int8 (quick)
    # its numbers are the fit's, not the shipped ones, for fp32 and int8 alike
    assert first.precision("fp32").gmacs_per_core != shipped.precision("fp32").gmacs_per_core
    assert first.precision("int8").gmacs_per_core != shipped.precision("int8").gmacs_per_core
    assert host_profile_note(first) is None  # nothing left to warn about
    assert host_profile_note(shipped) is not None

    def no_second_run(*a, **k):
        raise AssertionError("calibrated again although a calibration of this CPU is cached")

    monkeypatch.setattr("autoprune_edge.profiles.calibrate.calibrate", no_second_run)
    again = hc.host_profile(shipped, log=lines.append)
    assert again.path == first.path and again.precision("fp32").gmacs_per_core == first.precision("fp32").gmacs_per_core


def test_load_target_host_uses_this_cpus_calibration(auto, monkeypatch):
    # the shipped file may or may not have been measured on this CPU; pretend it was not
    monkeypatch.setattr(hc, "measured_on_this_cpu", lambda t: t.path != _shipped().path)
    t = load_target("host")
    assert t.path == str(hc.cached_path()) and t.name == "host"
    assert load_target("raspberrypi4").path.endswith("raspberrypi4.toml")  # other targets are what they are


def test_shipped_mode_and_this_cpus_own_profile_skip_calibration(auto, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("calibrated")

    monkeypatch.setattr("autoprune_edge.profiles.calibrate.calibrate", forbidden)
    shipped = _shipped()
    here = dataclasses.replace(shipped, device=dataclasses.replace(shipped.device, cpu=cpu_name(),
                                                                    cpu_flags=speed_flags()))
    assert hc.host_profile(here) is here  # measured on this very CPU: nothing to do
    monkeypatch.setenv(hc.MODE_ENV, "shipped")
    assert hc.host_profile(_elsewhere(shipped)).device.cpu == "Some Other CPU"
    monkeypatch.setenv(hc.MODE_ENV, "sometimes")
    with pytest.raises(TargetProfileError, match="must be 'auto' or 'shipped'"):
        hc.host_profile(shipped)


def test_a_damaged_cache_is_recalibrated_and_a_failed_calibration_keeps_the_shipped_profile(auto, monkeypatch):
    shipped = _elsewhere(_shipped())
    path = hc.cached_path()
    path.parent.mkdir(parents=True)
    path.write_text("name = \"host\"\nthis is not toml\n")
    lines: list[str] = []
    t = hc.host_profile(shipped, quick=True, log=lines.append)
    assert "ignoring the cached host profile" in lines[0] and t.device.cpu == cpu_name()

    def broken(*a, **k):
        raise ImportError("no TFLite interpreter found; pip install ai-edge-litert")

    path.unlink()
    monkeypatch.setattr("autoprune_edge.profiles.calibrate.calibrate", broken)
    lines.clear()
    assert hc.host_profile(shipped, log=lines.append) is shipped
    assert "could not calibrate the host profile here (no TFLite interpreter" in lines[-1]


def test_the_card_note_names_the_calibration(auto):
    t = hc.host_profile(_elsewhere(_shipped()), quick=True)
    note = hc.calibration_note(t)
    assert note and cpu_name() in note and t.path in note
    assert hc.calibration_note(_shipped()) is None and hc.calibration_note(load_target("pixel-7")) is None


def test_calibrate_host_starts_from_the_shipped_file_and_runs_the_suite_once(auto, monkeypatch, tmp_path):
    from autoprune_edge.profiles import calibrate as cal

    runs = []
    real = cal.host_microbenchmark
    monkeypatch.setattr(cal, "host_microbenchmark", lambda *a, **k: runs.append(1) or real(*a, **k))
    monkeypatch.setattr(hc, "measured_on_this_cpu", lambda t: False)  # as on a CPU host.toml was not measured on
    res = cal.calibrate("host", None, out=tmp_path / "h.toml", quick=True)
    assert len(runs) == 1 and not hc.cached_path().exists()
    assert res.fitted["compute.fp32.gmacs_per_core"][0] == _shipped().precision("fp32").gmacs_per_core


def test_a_bad_host_profile_mode_is_a_one_line_error(monkeypatch, capsys):
    from autoprune_edge.cli import main

    monkeypatch.setenv(hc.MODE_ENV, "sometimes")
    assert main(["targets", "show", "host"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "autoprune-edge: error: AUTOPRUNE_EDGE_HOST_PROFILE='sometimes' must be 'auto' or 'shipped'"
