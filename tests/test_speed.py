"""The speed tilt: under a MACs budget, gates are pushed partly by the target's predicted latency."""
from __future__ import annotations

import pytest
import torch
import torchvision

from autoprune_edge.autoprune import AutoPruneConfig, structured_costs
from autoprune_edge.cli import main
from autoprune_edge.cost import GroupCostModel
from autoprune_edge.errors import ConfigError
from autoprune_edge.graph import PruningGraph
from autoprune_edge.profiles.counting import count_macs
from autoprune_edge.pruning import prune
from autoprune_edge.speed import bend, relative_latency
from autoprune_edge.targets import load_target


def test_bend_keeps_the_value_and_mixes_the_gradients():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    value = (x * torch.tensor([3.0, 1.0], dtype=torch.float64)).sum()  # d/dx = (3, 1), value 5
    toward = (x * torch.tensor([0.1, 0.4], dtype=torch.float64)).sum()  # d/dx = (0.1, 0.4)
    out = bend(value, toward, dense_value=10.0, weight=0.25)
    assert float(out.detach()) == 5.0
    (g,) = torch.autograd.grad(out, x)
    assert torch.allclose(g, 0.75 * torch.tensor([3.0, 1.0], dtype=torch.float64)
                          + 0.25 * 10.0 * torch.tensor([0.1, 0.4], dtype=torch.float64))
    assert bend(value, toward, 10.0, 0.0) is value


@pytest.fixture(scope="module")
def mbv2():
    model = torchvision.models.mobilenet_v2(width_mult=0.5).eval()
    graph = PruningGraph(model, torch.zeros(1, 3, 96, 96), round_to=8)
    return model, graph, GroupCostModel(graph)


def _push(cost, graph, fn):
    keep = [torch.ones(g.size, dtype=torch.float64, requires_grad=True) for g in graph.groups]
    fn(keep)["macs"].backward()
    per = [float(k.grad.sum()) for k in keep]
    total = sum(per)
    return {g.root: p / total for g, p in zip(graph.groups, per)}, float(fn(keep)["macs"].detach())


def test_the_tilt_moves_push_to_channels_that_are_slow_per_mac(mbv2):
    model, graph, cost = mbv2
    host = load_target("host")
    rel = relative_latency(cost, model, (1, 3, 96, 96), host, ("fp32", "int8"))
    full = [torch.ones(g.size, dtype=torch.float64) for g in graph.groups]
    assert float(rel(full)) == pytest.approx(1.0)
    plain, macs0 = _push(cost, graph, structured_costs(cost, {"macs"}))
    tilted, macs1 = _push(cost, graph, structured_costs(cost, {"macs"}, None, rel, 0.5))
    assert macs0 == macs1 == float(cost.macs(full))  # the controller sees the same MACs
    # the first inverted-residual block's expansion (depthwise at 48x48) against the last one's (3x3 pixels):
    # per MAC the depthwise-heavy early channels are slower, so their share of the push grows
    early, late = "features.2.conv.1.0", "features.16.conv.1.0"
    assert tilted[early] / plain[early] > 1.1 > 1.0 > tilted[late] / plain[late]


def test_prune_with_the_tilt_meets_the_macs_budget():
    from autoprune_edge.data import load_data

    torch.manual_seed(0)
    data = load_data("synthetic", input_size=32, synthetic_train=128, synthetic_val=32)
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    dense = count_macs(model, torch.randn(1, 3, 32, 32)).macs
    budget = dense * 0.5
    cfg = AutoPruneConfig(epochs=1, batch_size=32, speed_weight=0.5)
    r = prune(model, data, f"{budget / 1e6:.6f}MFLOPs", target="host", method="autoprune", autoprune=cfg,
              finetune_epochs=0, input_shape=(1, 3, 32, 32))
    assert r.macs_after <= budget
    assert any(n.startswith("speed tilt 0.5: each gate was pushed 50% by host's predicted latency") for n in r.notes)


def test_a_speed_weight_out_of_range_is_a_one_line_error(capsys, tmp_path):
    from autoprune_edge.data import load_data

    data = load_data("synthetic", input_size=32, synthetic_train=32, synthetic_val=8)
    with pytest.raises(ConfigError, match="speed weight must be between 0"):
        prune(torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10), data, "1MFLOPs", target="host",
              autoprune=AutoPruneConfig(epochs=1, speed_weight=1.5), input_shape=(1, 3, 32, 32))
    assert main(["build", "--model", "mobilenet_v2", "--data", "synthetic", "--budget", "100MFLOPs", "--target", "host",
                 "--speed-weight", "-1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "speed weight must be between 0" in err and "\n" not in err
    assert not any(tmp_path.iterdir())  # it failed before any work
