"""The projection keeps the hard mask on the controller's target: closes when over, reopens when far under."""
from types import SimpleNamespace

import pytest
import torch

from autoprune_edge.budget import Budget
from autoprune_edge.projection import CLOSED, REOPENED, project_to_target

COST = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], dtype=torch.float64)  # per gate


def _setup(values: list[float], target: float):
    m = torch.tensor(values, requires_grad=True)
    gates = SimpleNamespace(m=[m], ungated={})
    budget = Budget("params", target, f"{target}params")
    ctrl = SimpleNamespace(budgets=[budget], target=lambda b, step: target)
    return gates, ctrl, (lambda keep: {"params": (keep[0].double() * COST).sum()})


def _cost(gates) -> float:
    return float(((gates.m[0] > 0).double() * COST).sum())


def test_over_target_closes_the_lowest_open_gates():
    gates, ctrl, cost_fn = _setup([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.5], target=20.0)  # all open: 36
    project_to_target(gates, cost_fn, ctrl, step=1)
    m = gates.m[0].detach()
    assert _cost(gates) <= 20.0
    # closed in value order 0.1 (2), 0.2 (4), 0.3 (6), 0.5 (8) -> 16 left; 0.1..0.3 alone leave 24 > 20
    assert torch.equal(m <= 0, torch.tensor([False, True, False, True, False, True, False, True]))
    assert float(m[1]) == pytest.approx(CLOSED)


def test_far_under_target_reopens_the_highest_closed_gates_and_forgets_their_momentum():
    gates, ctrl, cost_fn = _setup([0.9, -0.5, -0.01, -0.2, -0.02, -0.3, -0.4, -0.6], target=12.0)  # open: 1
    opt = torch.optim.SGD(gates.m, lr=0.1, momentum=0.9)
    gates.m[0].grad = torch.ones(8)
    opt.step()  # every gate moves down by 0.1 and carries momentum
    project_to_target(gates, cost_fn, ctrl, step=1, optimizer=opt)
    m = gates.m[0].detach()
    # highest closed first: -0.11 (gate 2, cost 3) -> 4, -0.12 (gate 4, cost 5) -> 9, then -0.3 (gate 3,
    # cost 4) would make 13 > 12: stop
    assert torch.equal(m > 0, torch.tensor([True, False, True, False, True, False, False, False]))
    assert float(m[2]) == pytest.approx(REOPENED) and float(m[4]) == pytest.approx(REOPENED)
    assert _cost(gates) <= 12.0
    buf = opt.state[gates.m[0]]["momentum_buffer"]
    assert float(buf[2]) == 0 and float(buf[4]) == 0 and float(buf[3]) != 0


def test_near_target_or_reopening_disabled_leaves_the_mask_alone():
    values = [0.9, 0.8, -0.1, -0.2, 0.5, 0.4, -0.3, -0.4]  # open: 1 + 2 + 5 + 6 = 14
    for target, reopen in ((14.2, 0.02), (30.0, None)):
        gates, ctrl, cost_fn = _setup(values, target=target)
        project_to_target(gates, cost_fn, ctrl, step=1, reopen_below=reopen)
        assert gates.m[0].detach().tolist() == torch.tensor(values).tolist()


def test_reopening_never_opens_a_tied_block_that_does_not_fit():
    # six gates closed in the same step all sit at CLOSED; reopening all of them would overshoot
    values = [0.9, CLOSED, CLOSED, CLOSED, CLOSED, CLOSED, CLOSED, -0.5]
    gates, ctrl, cost_fn = _setup(values, target=20.0)  # open: 1; the tied block costs 2+..+7 = 27
    project_to_target(gates, cost_fn, ctrl, step=1)
    assert _cost(gates) <= 20.0
    assert gates.m[0].detach().tolist() == pytest.approx(values)  # the block did not fit: nothing reopened


def _reference(values: torch.Tensor, cost: torch.Tensor, target: float) -> torch.Tensor:
    """The open mask after projection, by brute force over every cut: over the target, close the fewest
    lowest open gates (a tie closes together) that fit; far under it, reopen the longest run of the highest
    closed gates (a tied block as a whole) that still fits."""
    open_ = values > 0

    def fits(mask):
        return float((mask.double() * cost).sum()) <= target
    if not fits(open_):
        for v in values[open_].sort().values:
            if fits(open_ & (values > v)):
                return open_ & (values > v)
    closed = values[~open_].sort(descending=True).values
    best = open_.clone()
    for j in range(closed.numel()):
        if j + 1 < closed.numel() and closed[j + 1] == closed[j]:
            continue  # inside a tied block: only its end is a cut
        if not fits(open_ | (values >= closed[j])):
            break
        best = open_ | (values >= closed[j])
    return best


@pytest.mark.parametrize("target_factor,cost_of", [
    (1.03, "flat"), (1.2, "flat"), (3.0, "flat"), (40.0, "flat"), (1.5, "cheap closed"),
    (0.97, "flat"), (0.9, "flat"), (0.5, "flat"), (0.9, "cheap low open")])
def test_projection_matches_a_full_sort_whether_few_or_many_gates_move(target_factor, cost_of):
    # 3,000 gates, 300 open, the closed ones partly tied at CLOSED. A small shortfall or overshoot takes the
    # shortcut through the few most extreme gates; where those cannot be the answer (cheap gates, a large
    # shortfall, a tied block) the search widens them, up to sorting all
    g = torch.Generator().manual_seed(0)
    n = 3000
    values = -torch.rand(n, generator=g)
    values[torch.randperm(n, generator=g)[:500]] = CLOSED
    values[torch.randperm(n, generator=g)[:300]] = torch.rand(300, generator=g) + 0.01
    cost = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    if cost_of == "cheap closed":
        cost[values <= 0] *= 0.1
    elif cost_of == "cheap low open":
        cost[values > 0] = values[values > 0].double() ** 3
    now = float(((values > 0).double() * cost).sum())
    target = now * target_factor
    m = values.clone().requires_grad_(True)
    gates = SimpleNamespace(m=[m], ungated={})
    ctrl = SimpleNamespace(budgets=[Budget("params", target, f"{target}params")], target=lambda b, step: target)
    project_to_target(gates, lambda keep: {"params": (keep[0].double() * cost).sum()}, ctrl, step=1)
    got = gates.m[0].detach() > 0
    assert torch.equal(got, _reference(values, cost, target))
    assert int(got.sum()) != 300  # something moved
