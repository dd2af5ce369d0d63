"""The selection's speed exchange: never less score mass, never over (or far under) the budget, faster when it moves."""
import pytest
import torch
import torchvision

import autoprune_edge.speed as speed_mod
from autoprune_edge.budget import parse_budgets, within
from autoprune_edge.cli.parser import build_parser
from autoprune_edge.cost import GroupCostModel
from autoprune_edge.graph import PruningGraph
from autoprune_edge.methods import channel_scores
from autoprune_edge.methods.selection import exchange, select
from autoprune_edge.profiles.counting import count_macs
from autoprune_edge.profiles.profile import profile
from autoprune_edge.pruner import Pruner
from autoprune_edge.pruning import prune
from autoprune_edge.targets import load_target

SHAPE = (1, 3, 32, 32)


def _mbv2(width=0.25):
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2(width_mult=width, num_classes=10).eval()


@pytest.fixture(scope="module")
def case():
    model = _mbv2()
    graph = PruningGraph(model, torch.zeros(SHAPE), round_to=16)
    cost = GroupCostModel(graph)
    budgets = parse_budgets(f"{count_macs(model, torch.zeros(SHAPE)).macs * 0.5 / 1e6:.4f}MFLOPs")

    def evaluate(keep):
        return {"macs": float(cost.macs(keep)), "params": float(cost.params(keep))}

    return graph, budgets, evaluate


def _mass(graph, scores, keep):
    total = 0.0
    for g, s, k in zip(graph.groups, scores, keep):
        s = g.protect(s)[k]
        total += float(s[torch.isfinite(s)].sum())
    return total


def test_exchange_never_loses_score_or_budget_and_finds_faster_selections(case):
    graph, budgets, evaluate = case
    faster = 0
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        scores = [torch.rand(g.size, generator=gen) for g in graph.groups]
        weights = torch.rand(len(graph.groups), generator=gen) * 3 + 0.1  # a made-up device: ms per kept fraction

        def speed(masks):
            return sum(float(w) * float(m.float().mean()) for w, m in zip(weights, masks))

        keep = select(graph, scores, budgets, evaluate)
        new = exchange(graph, scores, keep, budgets, evaluate, speed)
        before, after = evaluate(keep), evaluate(new)
        assert all(within(b, after[b.kind]) for b in budgets), seed
        assert after["macs"] >= 0.98 * before["macs"], seed  # rearranged, not handed back
        assert _mass(graph, scores, new) >= _mass(graph, scores, keep) - 1e-6, seed
        assert speed(new) <= speed(keep) + 1e-12, seed
        faster += speed(new) < speed(keep) - 1e-9
        if seed == 0:  # the evaluation cap bounds the work: at 0 no round starts
            capped = exchange(graph, scores, keep, budgets, evaluate, speed, max_evaluations=0)
            assert all(torch.equal(a, b) for a, b in zip(capped, keep))
    assert faster >= 2  # it does move on most of these made-up devices


def test_exchange_without_a_speed_difference_changes_only_to_raise_score(case):
    graph, budgets, evaluate = case
    scores = [torch.rand(g.size, generator=torch.Generator().manual_seed(7)) for g in graph.groups]
    keep = select(graph, scores, budgets, evaluate)
    new = exchange(graph, scores, keep, budgets, evaluate, lambda masks: 1.0)
    if any(not torch.equal(a, b) for a, b in zip(keep, new)):
        assert _mass(graph, scores, new) > _mass(graph, scores, keep)
    else:
        assert _mass(graph, scores, new) == _mass(graph, scores, keep)


@pytest.mark.parametrize("confirmed", [True, False])
def test_faster_selection_ships_only_what_the_full_profile_confirms(case, monkeypatch, confirmed):
    """The exchange ranks moves with a linear latency model; the compacted models' full profiles decide."""
    graph, budgets, evaluate = case
    target = load_target("host")
    scores = channel_scores(graph, "l1")
    keep = select(graph, scores, budgets, evaluate)
    proposal = [k.clone() for k in keep]
    grown = next(i for i, k in enumerate(proposal) if not bool(k.all()))
    proposal[grown] = torch.ones_like(proposal[grown])  # any different selection
    monkeypatch.setattr(speed_mod, "exchange", lambda *a, **k: proposal)
    calls = []
    real = speed_mod.profile

    class Profiled:
        def __init__(self, ms):
            self.latency_ms = ms

    def fake_profile(model, shape, tgt, precision=None):
        if model is graph.model:  # the dense model, for the linear latency the exchange ranks moves with
            return real(model, shape, tgt, precision=precision)
        calls.append(precision)
        first = len(calls) <= len(target.precisions)  # the selection's own masks are profiled first
        return Profiled(1.0 if first else (0.9 if confirmed else 1.1))

    monkeypatch.setattr(speed_mod, "profile", fake_profile)
    got, info = speed_mod.faster_selection(graph, GroupCostModel(graph), scores, keep, budgets, evaluate, target, SHAPE)
    assert info is not None and info.kept is confirmed
    assert len(calls) == 2 * len(target.precisions)
    assert all(torch.equal(a, b) for a, b in zip(got, proposal if confirmed else keep))
    assert ("not kept" in info.text()) is not confirmed


def test_prune_exchanges_for_the_target_unless_told_not_to():
    shape = (1, 3, 64, 64)
    dense = count_macs(_mbv2(0.5), torch.zeros(shape)).macs
    budget = f"{dense * 0.5 / 1e6:.4f}MFLOPs"
    on = prune(_mbv2(0.5), None, budget, target="host", method="l1", input_shape=shape, finetune_epochs=0,
               evaluate_accuracy=False)
    off = prune(_mbv2(0.5), None, budget, target="host", method="l1", input_shape=shape, finetune_epochs=0,
                evaluate_accuracy=False, speed_exchange=False)
    assert not [n for n in off.notes if "exchange" in n]
    note = [n for n in on.notes if "exchange" in n]
    assert len(note) == 1 and note[0].startswith("channels exchanged"), note
    assert on.widths_after != off.widths_after
    assert 0.98 * off.macs_after <= on.macs_after <= dense * 0.5
    host = load_target("host")
    assert sum(profile(on.model, shape, host, precision=p).latency_ms / profile(off.model, shape, host, precision=p)
               .latency_ms for p in host.precisions) < len(host.precisions)


def test_cli_flag():
    p = build_parser()
    args = ["build", "--model", "lenet5", "--target", "host", "--budget", "1MFLOPs"]
    assert p.parse_args(args).speed_exchange is True
    assert p.parse_args([*args, "--no-speed-exchange"]).speed_exchange is False


def test_pruner_reports_its_exchange():
    """The loop-agnostic Pruner (and so the segment/detect loop) exchanges too, and says so in its report."""
    x = torch.zeros(1, 3, 64, 64)
    budget = f"{count_macs(_mbv2(0.5), x).macs * 0.5 / 1e6:.4f}MFLOPs"
    on = Pruner(_mbv2(0.5), x, budget, total_steps=1, target="host")
    on.compact()
    off = Pruner(_mbv2(0.5), x, budget, total_steps=1, target="host", speed_exchange=False)
    off.compact()
    assert off.report.exchange is None
    ex = on.report.exchange
    assert ex is not None and ex.kept and set(ex.before_ms) == {"fp32", "int8"}
    assert sum(ex.after_ms[p] / ex.before_ms[p] for p in ex.before_ms) < 2
    assert on.report.macs_after != off.report.macs_after
