"""Target profiles: the shipped TOML files load, and malformed files fail with one-line errors."""
from __future__ import annotations

import re
from importlib import resources

import pytest

from autoprune_edge.errors import TargetProfileError, UnknownTargetError
from autoprune_edge.targets import Target, available_targets, list_targets, load_target

SHIPPED = ("host", "raspberrypi4")


def _rpi_text() -> str:
    return (resources.files("autoprune_edge.targets") / "raspberrypi4.toml").read_text(encoding="utf-8")


def _line_of(text: str, pattern: str) -> int:
    for i, line in enumerate(text.splitlines(), start=1):
        if re.match(pattern, line):
            return i
    raise AssertionError(f"pattern {pattern!r} not in file")


def _write(tmp_path, text: str, name: str = "device.toml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads(name):
    t = load_target(name)
    assert isinstance(t, Target)
    assert t.name == name
    assert "fp32" in t.precisions
    fp32 = t.precision("fp32")
    assert fp32.gmacs_per_core > 0 and fp32.out_tile >= 1
    assert t.compute.thread_speedup[0] == 1.0
    assert len(t.compute.thread_speedup) == t.compute.cores
    assert t.channel_multiple >= 1
    # every number has a source
    assert t.source("compute.fp32.gmacs_per_core")
    assert t.source("memory.bandwidth_gbps")
    assert t.source("ops.conv1x1")
    hash(t)  # frozen and hashable: usable as a cache key for latency tables


def test_list_targets_and_available():
    names = [t.name for t in list_targets()]
    assert names == sorted(names)
    for n in SHIPPED:
        assert n in names
    assert available_targets() == names


def test_raspberrypi4_profile_contents():
    t = load_target("raspberrypi4")
    assert t.compute.cores == 4 and t.runtime.threads == 4
    assert t.memory.ram_bytes == 4 * 2**30
    assert t.channel_multiple == 8
    assert t.precisions == ("fp32", "int8")
    roles = {(r.model, r.precision): r.role for r in t.references}
    assert roles[("mobilenet_v2", "fp32")] == "fit"
    assert roles[("mobilenet_v1", "fp32")] == "holdout"
    assert roles[("mobilenet_v3_small", "fp32")] == "holdout"
    assert [b.kind for b in t.budgets] == ["memory_bytes"]
    assert t.budgets[0].value == 2**30


def test_host_profile_channel_multiples():
    t = load_target("host")  # fp32 pads to 32 on this host, int8 to 16 (host_tiles.md)
    assert t.channel_multiple_for() == 32
    assert t.channel_multiple_for("fp32") == 32
    assert t.channel_multiple_for("int8") == 16


def test_load_by_path(tmp_path):
    p = _write(tmp_path, _rpi_text().replace('name = "raspberrypi4"', 'name = "my-pi"'), "my-pi.toml")
    t = load_target(str(p))
    assert t.name == "my-pi"
    assert t.path == str(p)
    assert t == load_target(p)


def test_unknown_target_lists_available():
    with pytest.raises(UnknownTargetError) as e:
        load_target("raspberrypi9")
    msg = str(e.value)
    assert "raspberrypi9" in msg
    for n in SHIPPED:
        assert n in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(TargetProfileError, match="no such file"):
        load_target(str(tmp_path / "nope.toml"))


def test_toml_syntax_error_has_line(tmp_path):
    text = _rpi_text()
    lines = text.splitlines()
    n = _line_of(text, r"^bandwidth_gbps")
    lines[n - 1] = "bandwidth_gbps = = 4.0"
    p = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(TargetProfileError) as e:
        load_target(str(p))
    msg = str(e.value)
    assert msg.startswith(str(p))
    assert "invalid TOML" in msg
    assert f"line {n}" in msg


def test_missing_required_key_names_key_and_table_line(tmp_path):
    text = _rpi_text()
    header = _line_of(text, r"^\[compute\.fp32\]")
    text = re.sub(r"(\[compute\.fp32\]\n)gmacs_per_core = [0-9.]+\n", r"\1", text)
    p = _write(tmp_path, text)
    with pytest.raises(TargetProfileError) as e:
        load_target(str(p))
    msg = str(e.value)
    assert "compute.fp32.gmacs_per_core" in msg
    assert "missing" in msg
    assert f"(line {header})" in msg


def test_negative_number_names_key_and_its_line(tmp_path):
    text = _rpi_text().replace("bandwidth_gbps = 4.0", "bandwidth_gbps = -4.0")
    n = _line_of(text, r"^bandwidth_gbps = -4.0")
    p = _write(tmp_path, text)
    with pytest.raises(TargetProfileError) as e:
        load_target(str(p))
    assert str(e.value) == f"{p}: key memory.bandwidth_gbps must be a positive number (line {n})"


def test_wrong_type_integer_key(tmp_path):
    p = _write(tmp_path, _rpi_text().replace("cores = 4", "cores = 4.5"))
    with pytest.raises(TargetProfileError, match=r"compute\.cores must be a positive integer \(line \d+\)"):
        load_target(str(p))


def test_bad_cpu_flags_names_key_and_its_line(tmp_path):
    text = re.sub(r"(?m)^(cpu = .*)$", lambda m: m.group(1) + '\ncpu_flags = "asimd"', _rpi_text(), count=1)
    p = _write(tmp_path, text)
    with pytest.raises(TargetProfileError, match=r"device\.cpu_flags must be a list of strings \(line \d+\)"):
        load_target(str(p))


def test_unknown_key_is_reported_with_suggestion(tmp_path):
    text = re.sub(r"(?m)^gmacs_per_core = ", "gmac_per_core = ", _rpi_text(), count=1)
    n = _line_of(text, r"^gmac_per_core")
    p = _write(tmp_path, text)
    with pytest.raises(TargetProfileError) as e:
        load_target(str(p))
    msg = str(e.value)
    assert f"unknown key compute.fp32.gmac_per_core (line {n})" in msg
    assert "did you mean compute.fp32.gmacs_per_core" in msg


def test_unknown_top_level_table(tmp_path):
    p = _write(tmp_path, _rpi_text() + "\n[memroy]\nx = 1\n")
    with pytest.raises(TargetProfileError, match="unknown key memroy"):
        load_target(str(p))


def test_number_without_source_is_rejected(tmp_path):
    text = _rpi_text()
    text = re.sub(r'^"memory\.bandwidth_gbps" = .*\n', "", text, flags=re.M)
    p = _write(tmp_path, text)
    with pytest.raises(TargetProfileError, match=r"memory\.bandwidth_gbps has no source"):
        load_target(str(p))


def test_source_for_missing_key_is_rejected(tmp_path):
    text = _rpi_text().replace('"memory.ram_bytes" =', '"memory.ram_byte" =')
    p = _write(tmp_path, text)
    with pytest.raises(TargetProfileError, match=r"sources\.memory\.ram_byte names no key"):
        load_target(str(p))


def test_thread_speedup_must_match_cores(tmp_path):
    text = _rpi_text()
    assert "thread_speedup = [1.0, 1.591, 1.863, 1.928]" in text
    p = _write(tmp_path, text.replace("thread_speedup = [1.0, 1.591, 1.863, 1.928]", "thread_speedup = [1.0, 1.9]"))
    with pytest.raises(TargetProfileError, match=r"compute\.thread_speedup must have one entry per thread count"):
        load_target(str(p))


def test_precision_table_required_for_each_precision(tmp_path):
    p = _write(tmp_path, _rpi_text().replace('precisions = ["fp32", "int8"]', 'precisions = ["fp32", "int8", "fp16"]'))
    with pytest.raises(TargetProfileError, match=r"compute\.fp16 is missing"):
        load_target(str(p))


def test_bad_budget_string(tmp_path):
    p = _write(tmp_path, _rpi_text().replace('memory = "1GB"', 'memory = "25ms"'))
    with pytest.raises(TargetProfileError, match=r"budgets\.memory must be a memory_bytes budget"):
        load_target(str(p))


def test_reference_with_unsupported_precision(tmp_path):
    text = _rpi_text().replace('precision = "int8"\nthreads = 4\nlatency_ms = 29.0', 'precision = "fp16"\nthreads = 4\nlatency_ms = 29.0')
    p = _write(tmp_path, text)
    with pytest.raises(TargetProfileError, match=r"references\[\d+\]\.precision must be one of the target's precisions"):
        load_target(str(p))


def test_packaged_name_must_match_file(tmp_path):
    from autoprune_edge.targets.schema import load_target_file

    p = _write(tmp_path, _rpi_text(), "pi.toml")
    with pytest.raises(TargetProfileError, match="must equal the file name 'pi'"):
        load_target_file(p, display="pi.toml", expect_name="pi")


def test_unsupported_precision_error():
    with pytest.raises(TargetProfileError, match="does not support precision 'fp16'"):
        load_target("host").precision("fp16")


def test_per_precision_ops_table(tmp_path):
    """[compute.<p>.ops] overrides [ops] for that precision only; bad keys and values are one-line errors."""
    text = re.sub(r"\[compute.fp32.ops\]\ndepthwise = [0-9.]+\n", "", _rpi_text())  # the shipped fp32 override
    assert "[compute.fp32]" in text and "\n[sources]\n" in text and "[compute.fp32.ops]" not in text
    text = text.replace("\n[sources]\n", '\n[sources]\n"compute.fp32.ops" = "test"\n')
    p = _write(tmp_path, text + '\n[compute.fp32.ops]\ndepthwise = 0.5\n', "ok.toml")
    t = load_target(str(p))
    assert t.efficiency("depthwise", "fp32") == 0.5
    assert t.efficiency("depthwise") == t.ops.depthwise
    for p_ in t.precisions:
        if p_ != "fp32":
            assert t.efficiency("depthwise", p_) == t.ops.depthwise
    bad = _write(tmp_path, text + '\n[compute.fp32.ops]\ndepthwise = 9\n', "bad.toml")
    with pytest.raises(TargetProfileError, match=r"compute\.fp32\.ops\.depthwise must be a number in \(0, 4\]"):
        load_target(str(bad))
    typo = _write(tmp_path, text + '\n[compute.fp32.ops]\ndepthwize = 0.5\n', "typo.toml")
    with pytest.raises(TargetProfileError, match=r"unknown key compute\.fp32\.ops\.depthwize.*did you mean"):
        load_target(str(typo))
