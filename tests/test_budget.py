import pytest

from autoprune_edge.budget import parse_budget, parse_budgets
from autoprune_edge.errors import BudgetError


@pytest.mark.parametrize("text,kind,value", [
    ("100MFLOPs", "macs", 100e6), ("100M MACs", "macs", 100e6), ("0.1GFLOPs", "macs", 100e6),
    ("300mflops", "macs", 300e6), ("1.5Mparams", "params", 1.5e6), ("25ms", "latency_ms", 25.0),
    ("0.5s", "latency_ms", 500.0), ("512KB", "memory_bytes", 512 * 1024), ("2MB", "memory_bytes", 2 * 1024 ** 2),
    ("1e8FLOPs", "macs", 1e8),
])
def test_parse_ok(text, kind, value):
    b = parse_budget(text)
    assert b.kind == kind
    assert b.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["100MFLOP", "-5ms", "abc", "", "0ms", "100 bananas", "5XFLOPs"])
def test_parse_rejects(text):
    with pytest.raises(BudgetError) as e:
        parse_budget(text)
    assert "\n" not in str(e.value)


def test_flop_singular_hint():
    with pytest.raises(BudgetError, match="did you mean 100MFLOPs"):
        parse_budget("100MFLOP")


def test_several_and_duplicates():
    bs = parse_budgets(["100MFLOPs,25ms", "1Mparams"])
    assert [b.kind for b in bs] == ["macs", "latency_ms", "params"]
    with pytest.raises(BudgetError, match="more than one"):
        parse_budgets("100MFLOPs,200MFLOPs")


def test_size_flag():
    assert parse_budget("4MB", size=True).kind == "size_bytes"
