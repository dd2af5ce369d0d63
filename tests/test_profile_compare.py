"""compare(): one row per target, device fit and budgets; plot_compare writes a PNG; the CLI command."""
from __future__ import annotations

import json

import pytest
from torch import nn

from autoprune_edge.cli import main
from autoprune_edge.errors import AutoPruneEdgeError
from autoprune_edge.profiles.compare import CompareRow, compare, plot_compare

PNG = b"\x89PNG\r\n\x1a\n"


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_compare_rows_budgets_and_default_precisions():
    rows = compare(tiny(), (1, 3, 64, 64), ["host", "coral-edgetpu", "esp32-s3"], budgets="1ms,2MB")
    assert [r.target for r in rows] == ["host", "coral-edgetpu", "esp32-s3"]
    assert [r.precision for r in rows] == ["fp32", "int8", "int8"]  # each target's default
    assert all(isinstance(r, CompareRow) and r.latency_ms > 0 and r.fits_device for r in rows)
    host, coral, mcu = rows
    assert coral.accelerator == "Edge TPU" and host.accelerator == ""
    assert host.within_budget and len(host.budget_checks) == 2
    assert mcu.within_budget is False  # an MCU takes far more than 1 ms
    assert not mcu.ok and host.ok
    assert any(not c.ok and c.kind == "latency_ms" for c in mcu.budget_checks)
    d = host.to_dict()
    assert d["ok"] is True and d["budget_checks"][0]["budget"] == "1ms"


def test_compare_precision_fallback_note_and_no_budget():
    rows = compare(tiny(), (1, 3, 32, 32), ["raspberrypi4", "iphone-15"], precision="int8")
    assert rows[0].precision == "int8" and rows[0].note == ""
    assert rows[1].precision == "fp16" and "has no int8" in rows[1].note
    assert all(r.within_budget is None and r.budget_checks == [] for r in rows)


def test_compare_errors():
    with pytest.raises(AutoPruneEdgeError, match="no target"):
        compare(tiny(), (1, 3, 32, 32), [])
    with pytest.raises(AutoPruneEdgeError):
        compare(tiny(), (1, 3, 32, 32), ["host"], budgets="12 parsecs")


def test_plot_compare_writes_png(tmp_path):
    rows = compare(tiny(), (1, 3, 32, 32), ["host", "raspberrypi4", "esp32-s3"], budgets=["5ms"])
    path = plot_compare(rows, tmp_path / "sub" / "cmp.png")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    with pytest.raises(AutoPruneEdgeError):
        plot_compare([], tmp_path / "empty.png")


def test_compare_cli_table_json_and_plot(tmp_path, capsys):
    png = tmp_path / "c.png"
    rc = main(["compare", "toy_models:SmallCNN", "--targets", "host,esp32-s3,coral-edgetpu", "--input-shape", "1,3,16,16",
               "--budget", "2ms", "--plot", str(png), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in out["targets"]] == ["host", "esp32-s3", "coral-edgetpu"]
    assert out["plot"] == str(png) and png.read_bytes()[:8] == PNG
    assert {"latency_ms", "peak_memory_bytes", "model_bytes", "fits_device", "within_budget", "warnings"} <= set(out["targets"][0])
    rc = main(["compare", "toy_models:SmallCNN", "--targets", "host,esp32-s3", "--input-shape", "1,3,16,16", "--budget", "1ms"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "host" in text and "esp32-s3" in text and "within" in text


def test_compare_cli_unknown_target_is_one_line_error(capsys):
    assert main(["compare", "toy_models:SmallCNN", "--targets", "host,nosuchboard", "--input-shape", "1,3,16,16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown target 'nosuchboard'" in err and "\n" not in err
