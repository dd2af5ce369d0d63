"""measure (torch-free, on a real converted .tflite) and calibrate (round trip, host microbenchmark,
error handling)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from autoprune_edge.cli import main
from autoprune_edge.errors import AutoPruneEdgeError
from autoprune_edge.cpu import cpu_name, cpu_signature
from autoprune_edge.profiles.calibrate import calibrate, fit, render_toml
from autoprune_edge.profiles.host import host_profile_note, measures_here
from autoprune_edge.profiles.kernels import estimate
from autoprune_edge.profiles.measure import (
    MeasurementsError,
    load_measurements,
    new_document,
)
from autoprune_edge.profiles.microbench import suite, write_suite
from autoprune_edge.profiles.tflite_ops import precision_of, read_kernels
from autoprune_edge.targets import load_target
from autoprune_edge.targets.schema import parse_target

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory) -> Path:
    """SmallCNN converted for real: torch -> ONNX -> onnx2tf (≈8 s on an idle machine)."""
    import torch
    from toy_models import SmallCNN

    from autoprune_edge.converters.onnx_export import export_onnx
    from autoprune_edge.converters.tflite import onnx_to_tflite

    d = tmp_path_factory.mktemp("small_tflite")
    onnx = export_onnx(SmallCNN().eval(), torch.zeros(1, 3, 32, 32), d / "small.onnx")
    return onnx_to_tflite(onnx, d, precisions=("fp32",))["fp32"]


def test_measure_cli_records_what_calibrate_needs(small_tflite, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["measure", str(small_tflite), "--runs", "5", "--warmup", "1", "--out", str(out)]) == 0
    doc = load_measurements(out)
    m = doc["measurements"][0]
    assert m["model"] == small_tflite.name and m["precision"] == "fp32" and m["threads"] == 1
    assert 0 < m["p10_ms"] <= m["median_ms"] <= m["p90_ms"]
    ops = [k["op"] for k in m["kernels"]]
    assert ops.count("CONV_2D") == 3 and "FULLY_CONNECTED" in ops
    assert m["macs"] == sum(k["macs"] for k in m["kernels"]) > 0
    assert doc["device"]["cpu_count"] >= 1 and "litert" in doc["device"]["runtime"]
    # --append adds to the same file
    assert main(["measure", str(small_tflite), "--runs", "2", "--warmup", "0", "--out", str(out), "--append"]) == 0
    assert len(load_measurements(out)["measurements"]) == 2
    # the kernels read from the file predict about what profile() predicts for the torch model
    from toy_models import SmallCNN

    from autoprune_edge.profiles.profile import profile

    kernels, summary = read_kernels(small_tflite)
    host = load_target("host")
    from_file = estimate(kernels, host, "fp32", 1).total_ms
    from_torch = profile(SmallCNN(), (1, 3, 32, 32), host).latency_ms
    assert from_file == pytest.approx(from_torch, rel=0.35)


def test_measure_imports_no_torch(small_tflite, tmp_path):
    out = tmp_path / "r.json"
    code = (
        "import sys\n"
        "from autoprune_edge.cli import main\n"
        f"rc = main(['measure', {str(small_tflite)!r}, '--runs', '2', '--warmup', '0', '--out', {str(out)!r}, '--json'])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'measure imported torch'\n"
        "from autoprune_edge.profiles.calibrate import fit\n"
        "from autoprune_edge.profiles.measure import load_measurements\n"
        "fit('host', load_measurements(sys.argv[1]))\n"
        "assert 'torch' not in sys.modules, 'calibrate imported torch'\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["measurements"][0]["precision"] == "fp32"


def _synthetic_doc(tmp_path: Path, truth, threads: tuple[int, ...] = (1,)) -> dict:
    """Measurements of the microbenchmark networks as ``truth`` (a Target) would run them."""
    records = []
    for p in write_suite(tmp_path / "mb", ("fp32",)):
        kernels, summary = read_kernels(p)
        for n in threads:
            ms = estimate(kernels, truth, "fp32", n, io_bytes=summary["io_elements"] * 4).total_ms
            records.append({"model": f"{p.name}@{n}t", "precision": "fp32", "threads": n, "median_ms": ms,
                            "p10_ms": ms, "macs": summary["macs"], "io_elements": summary["io_elements"],
                            "kernels": [dataclasses.asdict(k) for k in kernels]})
    return new_document(records, device={"cpu": "synthetic"})


def test_suite_at_two_thread_counts_fits_the_thread_scaling(tmp_path):
    pi = load_target("raspberrypi4")
    compute = dataclasses.replace(pi.compute, thread_speedup=(1.0, 1.8, 2.4, 2.9), thread_sync_us=20.0,
                                  parallel_half_work=5e6)
    truth = dataclasses.replace(pi, compute=compute)
    res = fit(pi, _synthetic_doc(tmp_path, truth, threads=(1, 4)), source="synthetic")
    assert res.fitted["compute.thread_speedup.4"][1] == pytest.approx(2.9, rel=0.05)
    assert res.fitted["compute.thread_sync_us"][1] == pytest.approx(20.0, rel=0.15)
    assert res.fitted["compute.parallel_half_work"][1] == pytest.approx(5e6, rel=0.25)
    assert res.mape("after") < 1.0
    text = render_toml(pi, res, name="my-pi")
    t = parse_target(text, "my-pi")
    assert t.compute.thread_speedup[3] == pytest.approx(2.9, rel=0.05) and t.compute.thread_sync_us > 10


def test_measure_suite_cli(tmp_path, capsys):
    out = tmp_path / "suite.json"
    assert main(["measure", "--suite", "--threads", "1,2", "--rounds", "1", "--runs", "2", "--out", str(out),
                 "--json"]) == 0
    doc = load_measurements(out)
    n = len(suite())
    assert doc["suite"]["networks"] == n and doc["suite"]["threads"] == [1, 2]
    assert len(doc["measurements"]) == 2 * n
    assert {m["threads"] for m in doc["measurements"]} == {1, 2}
    assert all(m["p10_ms"] > 0 and m["kernels"] for m in doc["measurements"])
    capsys.readouterr()
    # calibrate takes it as it is (the suite's statistic is p10) and fits the 2-thread scaling too
    prof = tmp_path / "h.toml"
    assert main(["calibrate", "--target", "host", "--measurements", str(out), "--out", str(prof), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["statistic"] == "p10_ms" and "compute.thread_speedup.2" in summary["fitted"]
    load_target(str(prof))


@pytest.mark.parametrize("argv, msg", [
    (["measure", "--suite", "x.tflite"], "drop the .tflite arguments"),
    (["measure", "--suite", "--threads", "0"], "--threads '0'"),
    (["measure", "--suite", "--precision", "fp16"], "--precision 'fp16'"),
    (["measure"], "needs .tflite files, or --suite"),
    (["measure", "x.tflite", "--threads", "1,4"], "one thread count"),
])
def test_measure_suite_bad_input(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _with_fp32_ops(t, **eff):
    """``t`` with these fp32 op-class efficiencies ([compute.fp32.ops] overrides [ops])."""
    precs = tuple(dataclasses.replace(p, ops=tuple(sorted({**dict(p.ops), **eff}.items()))) if p.name == "fp32" else p
                  for p in t.compute.precisions)
    return dataclasses.replace(t, compute=dataclasses.replace(t.compute, precisions=precs))


def test_calibration_recovers_known_efficiencies(tmp_path):
    host = load_target("host")
    truth = _with_fp32_ops(host, depthwise=0.5, pool=0.7)
    spec = dataclasses.replace(truth.compute.precisions[0], gmacs_per_core=38.0)
    truth = dataclasses.replace(truth, compute=dataclasses.replace(truth.compute, precisions=(spec,) + truth.compute.precisions[1:]))
    res = fit(host, _synthetic_doc(tmp_path, truth), source="synthetic")
    # host has fp32 and int8; only fp32 was measured, so the efficiencies are fp32's own
    assert res.fitted["compute.fp32.ops.depthwise"][1] == pytest.approx(0.5, rel=0.03)
    assert res.fitted["compute.fp32.ops.pool"][1] == pytest.approx(0.7, rel=0.03)
    assert res.fitted["compute.fp32.gmacs_per_core"][1] == pytest.approx(38.0, rel=0.03)
    assert res.mape("after") < 1.0 < res.mape("before")
    assert res.target.efficiency("depthwise", "fp32") == pytest.approx(0.5, rel=0.03)
    assert res.target.efficiency("depthwise", "int8") == host.efficiency("depthwise", "int8")


def test_calibrate_cli_writes_a_valid_profile(tmp_path, capsys):
    host = load_target("host")
    truth = _with_fp32_ops(host, depthwise=0.18)
    meas = tmp_path / "m.json"
    meas.write_text(json.dumps(_synthetic_doc(tmp_path, truth)))
    out = tmp_path / "my-host.toml"
    assert main(["calibrate", "--target", "host", "--measurements", str(meas), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measurements"] == len(suite()) and summary["out"] == str(out)
    t = load_target(str(out))  # validated by the loader
    assert t.name == "my-host"
    assert t.efficiency("depthwise", "fp32") == pytest.approx(0.18, rel=0.05)
    assert t.source("compute.fp32.ops.depthwise").startswith(f"calibrated from {len(suite())} measurements on ")
    assert t.source("runtime.threads") == host.source("runtime.threads")  # everything else kept
    data = tomllib.loads(out.read_text())
    assert data["compute"]["int8"] == tomllib.loads(Path(host.path).read_text())["compute"]["int8"]
    assert data["ops"] == tomllib.loads(Path(host.path).read_text())["ops"] | {
        "fixed_overhead_us": data["ops"]["fixed_overhead_us"], "pixel_overhead_ns": data["ops"]["pixel_overhead_ns"]}
    # an fp32-only calibration leaves int8 predictions where they were
    from autoprune_edge.profiles.latency import conv_latency_ms

    assert conv_latency_ms(t, 96, 96, 3, 96, 56, "int8") == pytest.approx(
        conv_latency_ms(host, 96, 96, 3, 96, 56, "int8"), rel=0.2)
    assert conv_latency_ms(t, 96, 96, 3, 96, 56, "fp32") > 1.5 * conv_latency_ms(host, 96, 96, 3, 96, 56, "fp32")


def test_host_microbenchmark_calibration(tmp_path):
    out = tmp_path / "host.toml"
    res = calibrate("host", None, out=out, quick=True)
    # fp32 and int8 (host has both): the quick set's 6 networks, and in int8 the 5 with a conv (the
    # element-wise-only ones run on the interpreter's own int8 kernels: see microbench.write_suite)
    assert res.n == 11 and res.statistic == "p10_ms" and "microbenchmark" in res.source
    assert sorted(r["precision"] for r in res.rows) == ["fp32"] * 6 + ["int8"] * 5
    # the suite tells each precision's efficiencies apart (int8 depthwise is no faster than fp32's on some CPUs)
    assert {"compute.int8.gmacs_per_core", "compute.fp32.gmacs_per_core", "compute.fp32.ops.depthwise",
            "compute.int8.ops.depthwise"} <= set(res.fitted)
    assert load_target(str(out)).name == "host"
    assert res.mape("after") < res.mape("before") or res.mape("before") < 15
    # the profile now says which CPU it describes, so `build --target host.toml` here has nothing to warn about
    t = load_target(str(out))
    assert t.device.cpu == cpu_name() and t.device.cpu_flags == tuple(cpu_signature()["speed_flags"].split())
    assert host_profile_note(t) is None
    head = out.read_text().splitlines()[:3]  # the copied description names the original's CPU: the header says so
    assert head[2] == f"# Measured on {cpu_name()} ({cpu_signature()['speed_flags']}); the comments and " \
        "description below are the original profile's."
    calibrate(str(out), None, out=out, quick=True)  # recalibrating the copy replaces its header, not stacks it
    assert sum(line.startswith("# Measured on ") for line in out.read_text().splitlines()) == 1


def test_a_profile_calibrated_here_is_measured_here_whatever_its_name(tmp_path):
    # the default --out is host-calibrated.toml: its builds must still land latency budgets on measurements here
    calibrate("host", None, out=tmp_path / "host-calibrated.toml", quick=True)
    mine = load_target(str(tmp_path / "host-calibrated.toml"))
    assert mine.name == "host-calibrated" and measures_here(mine)
    assert measures_here(load_target("host"))
    assert not measures_here(load_target("raspberrypi4")) and not measures_here(load_target("pixel-7"))
    other_cpu = dataclasses.replace(mine, device=dataclasses.replace(mine.device, cpu="Some Other CPU"))
    fewer_flags = dataclasses.replace(mine, device=dataclasses.replace(mine.device, cpu_flags=mine.device.cpu_flags[:1]))
    assert not measures_here(other_cpu) and not measures_here(fewer_flags)


def test_bad_measurements_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    for content, expect in [("{not json", "not valid JSON"), ('{"format": "other"}', "not an autoprune-edge measurements file"),
                            (json.dumps({"format": "autoprune-edge-measurements", "version": 1, "measurements": [{"model": "x"}]}),
                             'has no "precision"')]:
        bad.write_text(content)
        assert main(["calibrate", "--target", "host", "--measurements", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("autoprune-edge: error:") and expect in err and "\n" not in err
    assert main(["calibrate", "--target", "host", "--measurements", str(tmp_path / "missing.json")]) == 2
    assert "no such measurements file" in capsys.readouterr().err
    with pytest.raises(MeasurementsError):
        load_measurements(tmp_path / "missing.json")


def test_calibrating_a_device_needs_measurements(capsys):
    assert main(["calibrate", "--target", "coral-edgetpu"]) == 2
    assert "needs --measurements" in capsys.readouterr().err


def test_measurements_of_an_unsupported_precision_are_skipped(tmp_path):
    doc = _synthetic_doc(tmp_path, load_target("host"))
    for m in doc["measurements"]:
        m["precision"] = "int8"
    with pytest.raises(AutoPruneEdgeError, match="none of the measurements can calibrate jetson-nano"):
        fit("jetson-nano", doc)


def test_an_int8_network_without_a_conv_is_int8():
    # a pool or add network of int8 activations was recorded as fp32 before, so calibrate fitted int8 timings to fp32
    assert precision_of([("QUANTIZE", ["FLOAT32"]), ("AVERAGE_POOL_2D", ["INT8"]), ("ADD", ["INT8", "INT8"])]) == "int8"
    assert precision_of([("AVERAGE_POOL_2D", ["FLOAT32"]), ("ADD", ["FLOAT32", "FLOAT32"])]) == "fp32"
    assert precision_of([("QUANTIZE", ["FLOAT32"]), ("DEQUANTIZE", ["INT8"])]) == "fp32"
    assert precision_of([("DEQUANTIZE", ["FLOAT16"]), ("CONV_2D", ["FLOAT32"])]) == "fp16"


def test_measure_missing_file_is_one_line_error(tmp_path, capsys):
    assert main(["measure", str(tmp_path / "nope.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such .tflite file" in err and "\n" not in err


def test_calibrated_profile_states_its_own_held_out_error(tmp_path):
    """A calibrated profile's ±error is its own fit's error on measurements held out of that fit, not the
    original profile's (which described another fit); with too few measurements it states none (±?)."""
    pi = load_target("raspberrypi4")
    truth = dataclasses.replace(pi, compute=dataclasses.replace(pi.compute, thread_sync_us=12.0))
    doc = _synthetic_doc(tmp_path, truth)
    for i, m in enumerate(doc["measurements"]):  # a device that the cost model cannot describe exactly
        m["median_ms"] *= (1.25, 0.8, 1.1, 0.9, 1.0, 1.3, 0.75)[i % 7]
    res = calibrate(pi, doc, out=tmp_path / "pi-cal.toml")
    assert res.cross_validated and res.held_out_error_pct is not None
    # held-out error is larger than the error on the fitted measurements themselves, and of the noise's size
    assert res.mape("after") < res.held_out_error_pct < 40
    t = load_target(str(tmp_path / "pi-cal.toml"))
    assert t.latency_error_pct == pytest.approx(res.held_out_error_pct, abs=0.05)
    assert t.latency_error_inputs is None and "held out of the fit" in t.source("latency_error_pct")
    # the same measurements without the check keep the original's statement (host auto-calibration does this)
    kept = calibrate(pi, doc, out=tmp_path / "pi-kept.toml", cross_validate=False)
    assert kept.held_out_error_pct is None
    assert load_target(str(tmp_path / "pi-kept.toml")).latency_error_pct == pi.latency_error_pct
    # 8 measurements: too few to hold any out, so no error is claimed
    few = calibrate(pi, {**doc, "measurements": doc["measurements"][:8]}, out=tmp_path / "pi-few.toml")
    assert few.cross_validated and few.held_out_error_pct is None
    assert load_target(str(tmp_path / "pi-few.toml")).latency_error_pct is None
