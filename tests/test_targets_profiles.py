"""The shipped device profiles: each loads, validates, documents its numbers and its references; the
accelerator / MCU schema extensions reject malformed input with one-line errors."""
from __future__ import annotations

import re
from importlib import resources

import pytest

from autoprune_edge.errors import TargetProfileError
from autoprune_edge.targets import KNOWN_OPS, available_targets, load_target
from autoprune_edge.targets.schema import parse_target

EXPECTED = {"host", "raspberrypi4", "raspberrypi5", "jetson-nano", "jetson-orin-nano", "pixel-7", "iphone-15",
            "coral-edgetpu", "esp32-s3"}


def _text(name: str) -> str:
    return (resources.files("autoprune_edge.targets") / f"{name}.toml").read_text(encoding="utf-8")


def test_every_expected_profile_ships():
    assert EXPECTED <= set(available_targets())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_loads_with_sources_and_references(name):
    t = load_target(name)
    assert t.name == name
    assert t.default_precision == t.precisions[0]
    for p in t.precisions:
        spec = t.precision(p)
        assert spec.gmacs_per_core > 0
        assert t.source(f"compute.{p}.gmacs_per_core")
    assert t.source("memory.ram_bytes") and t.source("ops.fixed_overhead_us")
    assert t.references, f"{name} lists no reference latencies"
    assert any(r.role == "fit" for r in t.references)
    for r in t.references:
        assert r.source.strip()
        assert r.expected_ms > 0
        if r.scale != 1.0:
            assert r.device  # a carried-over number names the device it was measured on
    hash(t)


def test_device_specific_contents():
    coral = load_target("coral-edgetpu")
    assert coral.precisions == ("int8",) and coral.default_formats == ("tflite-int8",)
    acc = coral.accelerator
    assert acc is not None and acc.fallback == "rest" and acc.max_nonunit_dims == 3
    assert "TRANSPOSE" in acc.unsupported_ops
    assert 7.0 * 2**20 < acc.param_cache_bytes < 7.5 * 2**20  # ≈7.2 MiB usable for parameters

    iphone = load_target("iphone-15")
    assert "coreml" in iphone.default_formats and iphone.precisions == ("fp16",)
    assert iphone.accelerator is not None and iphone.accelerator.fallback == "op"

    mcu = load_target("esp32-s3")
    assert mcu.precisions == ("int8",)
    assert mcu.memory.ram_bytes <= 1 << 20 and not mcu.memory.weights_in_ram
    assert mcu.memory.runtime_overhead_bytes > 0

    for name in ("jetson-nano", "jetson-orin-nano", "iphone-15"):
        assert load_target(name).runtime.fuse_all_activations
    assert not load_target("raspberrypi4").runtime.fuse_all_activations


def test_memory_from_unverified_sources_is_labelled():
    # numbers taken from memory carry the [R] label in their source, as research/anchors.md does
    nano = load_target("jetson-nano")
    fit = [r for r in nano.references if r.role == "fit"]
    assert fit and all("[R]" in r.source for r in fit)


def _with_accelerator(extra: str) -> str:
    text = _text("raspberrypi4")
    return text.replace("[budgets]", extra + "\n[budgets]", 1)


ACC = """[accelerator]
name = "NPU"
precisions = ["int8"]
unsupported_ops = ["TRANSPOSE"]
fallback_gmacs = 3.0
"""


def test_accelerator_table_parses_and_needs_sources():
    text = _with_accelerator(ACC)
    with pytest.raises(TargetProfileError, match=r"accelerator\.fallback_gmacs has no source"):
        parse_target(text, "npu.toml")
    t = parse_target(text + '\n"accelerator" = "test"\n', "npu.toml")  # appended inside [sources]
    assert t.accelerator.name == "NPU" and t.accelerator.runs("int8") and not t.accelerator.runs("fp32")


def test_unknown_unsupported_op_is_a_one_line_error_with_suggestion():
    text = _with_accelerator(ACC.replace('"TRANSPOSE"', '"TRANSPOS"')) + '\n"accelerator" = "test"\n'
    with pytest.raises(TargetProfileError) as e:
        parse_target(text, "npu.toml")
    msg = str(e.value)
    assert "unknown op 'TRANSPOS'" in msg and "did you mean TRANSPOSE" in msg and "\n" not in msg
    assert re.search(r"\(line \d+\)", msg)


def test_accelerator_precision_must_be_a_target_precision():
    text = _with_accelerator(ACC.replace('precisions = ["int8"]', 'precisions = ["fp16"]')) + '\n"accelerator" = "t"\n'
    with pytest.raises(TargetProfileError, match=r"accelerator\.precisions has 'fp16', which is not in precisions"):
        parse_target(text, "npu.toml")


def test_bad_fallback_mode_and_bad_bool():
    text = _with_accelerator(ACC + 'fallback = "sometimes"\n') + '\n"accelerator" = "t"\n'
    with pytest.raises(TargetProfileError, match=r"accelerator\.fallback must be one of op, rest"):
        parse_target(text, "npu.toml")
    text = _text("raspberrypi4").replace("bandwidth_gbps = 4.0", "bandwidth_gbps = 4.0\nweights_in_ram = 1")
    with pytest.raises(TargetProfileError, match=r"memory\.weights_in_ram must be true or false"):
        parse_target(text, "x.toml")


def test_reference_scale_needs_device():
    text = _text("raspberrypi4").replace('latency_ms = 41.0\n', 'latency_ms = 41.0\nscale = 0.5\n', 1)
    with pytest.raises(TargetProfileError, match=r"references\[0\]\.scale needs device"):
        parse_target(text, "x.toml")


def test_known_ops_cover_every_unsupported_op_shipped():
    for name in EXPECTED:
        acc = load_target(name).accelerator
        if acc is not None:
            assert set(acc.unsupported_ops) <= set(KNOWN_OPS)
