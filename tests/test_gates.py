"""AutoPrune gate math on hand-computed values, recoverability, gated == compacted, budget landing."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from autoprune_edge.autoprune import AutoPruneConfig, train_gates
from autoprune_edge.budget import parse_budgets
from autoprune_edge.gates import ChannelGates, GateConfig, HardGate, MaskedWeight, WeightGates, ste_derivative
from autoprune_edge.graph import PruningGraph
from autoprune_edge.layers import ChannelScatter
from autoprune_edge.profiles.counting import count_macs
from autoprune_edge.pruning import prune
from autoprune_edge.zoo.cifar_resnet import CifarResNet
from toy_models import (ConcatDepthwiseNet, GhostSENet, GroupedNet, LayerNormNet, ResidualNet, SmallCNN,
                        randomize_bn)


def test_ste_derivatives():
    m = torch.tensor([-2.0, 0.0, 1.5])
    assert torch.equal(ste_derivative(m, "identity"), torch.ones(3))
    assert torch.allclose(ste_derivative(m, "leaky", alpha=0.1), torch.tensor([0.1, 0.1, 1.0]))
    assert torch.allclose(ste_derivative(m, "sigmoid"), torch.sigmoid(m))
    assert torch.allclose(ste_derivative(m, "softplus"), torch.log1p(torch.exp(m)))


def test_masked_weight_elementwise_matches_hand_computation():
    w = torch.tensor([[0.5, -2.0], [3.0, -0.25]], requires_grad=True)
    m = torch.tensor([[0.3, -0.1], [0.0, 2.0]], requires_grad=True)
    w_eff = MaskedWeight.apply(w, m, None, "identity", 0.1)
    assert torch.equal(w_eff.detach(), torch.tensor([[0.5, 0.0], [0.0, -0.25]]))  # h(0) = 0: threshold is strict
    g = torch.tensor([[1.0, 2.0], [-3.0, 4.0]])
    w_eff.backward(g)
    # dL/dW = G * h(M)
    assert torch.equal(w.grad, torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    # dL/dM = G * sgn(W) * g(M), identity g: [[1*1, 2*-1], [-3*1, 4*-1]]
    assert torch.equal(m.grad, torch.tensor([[1.0, -2.0], [-3.0, -4.0]]))


def test_masked_weight_softplus_and_channel_dim():
    w = torch.tensor([[1.0, -1.0, 2.0], [-3.0, 4.0, -5.0]], requires_grad=True)  # (out=2, in=3)
    m = torch.tensor([0.5, -0.5, 1.0], requires_grad=True)  # one gate per input column
    w_eff = MaskedWeight.apply(w, m, 1, "softplus", 0.1)
    assert torch.equal(w_eff.detach(), torch.tensor([[1.0, 0.0, 2.0], [-3.0, 0.0, -5.0]]))
    g = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    w_eff.backward(g)
    signed = torch.tensor([1 * 1 + 2 * -1, 1 * -1 + 2 * 1, 1 * 1 + 2 * -1], dtype=torch.float)  # sum over rows
    assert torch.allclose(m.grad, signed * F.softplus(m.detach()))
    assert torch.equal(w.grad, torch.tensor([[1.0, 0.0, 1.0], [2.0, 0.0, 2.0]]))


def test_hard_gate_ste():
    m = torch.tensor([-1.0, 2.0], requires_grad=True)
    h = HardGate.apply(m, "leaky", 0.25)
    assert torch.equal(h.detach(), torch.tensor([0.0, 1.0]))
    h.sum().backward()
    assert torch.equal(m.grad, torch.tensor([0.25, 1.0]))


@pytest.mark.parametrize("cls,shape", [(SmallCNN, (1, 3, 16, 16)), (ResidualNet, (1, 3, 12, 12)),
                                       (ConcatDepthwiseNet, (1, 3, 8, 8)), (GroupedNet, (1, 3, 8, 8)),
                                       (LayerNormNet, (1, 3, 6, 6)), (GhostSENet, (1, 3, 8, 8))])
def test_gated_model_equals_compacted(cls, shape):
    torch.manual_seed(0)
    model = randomize_bn(cls())
    graph = PruningGraph(model, torch.randn(shape))
    gates = ChannelGates(graph, GateConfig(init=0.1))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for grp, m in zip(graph.groups, gates.m):
            s = grp.protect(torch.rand(grp.size, generator=g))
            n = grp.min_keep + (grp.size - grp.min_keep) // 2 // grp.round_to * grp.round_to  # about half
            m.copy_(torch.where(grp.keep_top(s, n), 0.1, -0.1))
    keep = gates.keep()
    assert any(not bool(k.all()) for k in keep)
    x = torch.randn(5, *shape[1:])
    gates.attach()
    with torch.no_grad():
        gated = model(x)
    gates.detach()
    with torch.no_grad():
        dense = model(x)
    assert (gated - dense).abs().max() > 1e-4  # the gates do something
    graph.compact(keep)
    with torch.no_grad():
        compact = model(x)
    assert (gated - compact).abs().max() <= 1e-5 * max(1.0, float(gated.abs().max()))


def test_recoverability_weight_returns_with_old_value():
    """Close a gate, train: its weight is frozen (not decayed, no momentum); reopen: it is back unchanged."""
    torch.manual_seed(0)
    model = SmallCNN(w=4)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    gates = WeightGates(model, GateConfig(init=0.5, ste="softplus"))
    gates.attach()
    named = dict(model.named_modules())
    w0 = named["features.3"].parametrizations.weight.original.detach().clone()
    with torch.no_grad():
        gates.m[1][0, 0, 0, 0] = -0.01  # close one weight of features.3
    ds = torch.utils.data.TensorDataset(x, y)
    # reopen_below=None: far under this budget the projection would reopen the gate at once
    cfg = AutoPruneConfig(epochs=3, lr=0.1, lr_gates=1e-4, batch_size=8, lambda_init=1e-9, weight_decay=0.1,
                          reopen_below=None)
    big = parse_budgets("1Gparams")
    train_gates(model, gates, ds, big, lambda keep: {"params": sum(k.sum() for k in keep)}, cfg)
    w1 = named["features.3"].parametrizations.weight.original.detach()
    assert w1[0, 0, 0, 0] == w0[0, 0, 0, 0]  # frozen while pruned
    assert (w1 - w0).abs().max() > 0  # the open weights did train
    # the closed gate still received gradient (identity/leaky/softplus STEs never stop it) ...
    assert gates.m[1][0, 0, 0, 0] != -0.01
    with torch.no_grad():  # ... and when it reopens, the old weight is used again
        gates.m[1][0, 0, 0, 0] = 0.5
        w_eff = named["features.3"].weight
    assert w_eff[0, 0, 0, 0] == w0[0, 0, 0, 0]
    gates.detach(bake=False)


def test_budget_landing_small_cnn():
    """Trained gates + the final selection end within 2% below the MACs budget, never above."""
    from autoprune_edge.data import load_data

    torch.manual_seed(0)
    data = load_data("synthetic", input_size=12, synthetic_train=256, synthetic_val=64)
    model = ResidualNet(w=48)
    dense = count_macs(model, torch.randn(1, 3, 12, 12)).macs
    budget = dense * 0.45
    cfg = AutoPruneConfig(epochs=3, batch_size=32, lr_gates=0.02)
    r = prune(model, data, f"{budget / 1e6:.6f}MFLOPs", method="autoprune", autoprune=cfg, finetune_epochs=0,
              round_to=1)
    assert budget * 0.98 <= r.macs_after <= budget
    assert r.gate_log and "lambda_macs" in r.gate_log[-1]
    # the controller drove the hard-masked model to the budget during training, not only the final trim
    assert abs(r.gate_log[-1]["macs"] - budget) / budget < 0.25


def test_two_budgets_hold():
    from autoprune_edge.data import load_data

    data = load_data("synthetic", input_size=12, synthetic_train=128, synthetic_val=32)
    model = ResidualNet(w=32)
    c = count_macs(model, torch.randn(1, 3, 12, 12))
    cfg = AutoPruneConfig(epochs=2, batch_size=32)
    r = prune(model, data, [f"{c.macs * 0.6 / 1e6:.5f}MFLOPs", f"{c.params * 0.35 / 1e6:.5f}Mparams"],
              method="autoprune", autoprune=cfg, finetune_epochs=0, round_to=1)
    assert r.macs_after <= c.macs * 0.6 and r.params_after <= c.params * 0.35


def test_unstructured_budget_counts_nonzero_weights():
    from autoprune_edge.data import load_data

    data = load_data("synthetic", input_size=8, synthetic_train=128, synthetic_val=32)
    model = SmallCNN(w=8)
    cfg = AutoPruneConfig(epochs=1, batch_size=32)
    r = prune(model, data, "1kparams", method="autoprune", autoprune=cfg, finetune_epochs=1,
              granularity="unstructured")
    nz = sum(int((m.weight != 0).sum()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    gated = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    other = sum(p.numel() for p in model.parameters()) - gated
    assert nz == r.nonzero_after and r.params_after <= 1000
    assert nz + other == r.params_after  # the budget counts every non-gated parameter too


def test_unstructured_regrowth_moves_weights_and_keeps_every_layer_count():
    """With regrowth the fine-tuned mask differs from the selected one, layer by layer the same size."""
    from autoprune_edge.data import load_data
    from autoprune_edge.regrow import RegrowConfig

    data = load_data("synthetic", input_size=8, synthetic_train=128, synthetic_val=32)
    convs = lambda m: {n: x.weight for n, x in m.named_modules() if isinstance(x, (torch.nn.Conv2d, torch.nn.Linear))}  # noqa: E731
    runs = {}
    for regrow in (None, RegrowConfig(every=2)):
        torch.manual_seed(0)
        model = SmallCNN(w=8)
        r = prune(model, data, "1kparams", method="autoprune", granularity="unstructured", finetune_epochs=2,
                  autoprune=AutoPruneConfig(epochs=1, batch_size=32, regrow=regrow))
        assert r.params_after <= 1000
        runs[regrow is None] = (r, {n: w != 0 for n, w in convs(model).items()})
    (plain, plain_nz), (moved, moved_nz) = runs[True], runs[False]
    assert any("regrowth moved" in n for n in moved.notes) and not any("regrowth" in n for n in plain.notes)
    assert plain.nonzero_after == moved.nonzero_after  # the selection, hence the counts, is the same
    for n in plain_nz:
        assert int(moved_nz[n].sum()) <= int(plain_nz[n].sum())  # a grown weight can stay 0, none is extra
    assert any(not torch.equal(plain_nz[n], moved_nz[n]) for n in plain_nz)


def test_distillation_settings_reach_fine_tuning(monkeypatch):
    """prune(distill=True) fine-tunes against the dense teacher with the given alpha and temperature."""
    from autoprune_edge import pruning
    from autoprune_edge.data import load_data
    from autoprune_edge.errors import ConfigError

    seen = {}

    def fake_train(model, dataset, cfg, *, teacher=None, **kw):
        seen.update(alpha=cfg.kd_alpha, T=cfg.kd_temperature, teacher=teacher)
        return []

    monkeypatch.setattr(pruning, "train", fake_train)
    data = load_data("synthetic", input_size=8, synthetic_train=64, synthetic_val=16)
    model = SmallCNN(w=8)
    macs = count_macs(model, torch.zeros(1, 3, 8, 8)).macs
    prune(model, data, f"{int(macs * 0.7)}MACs", method="l1", epochs=0, finetune_epochs=1, distill=True,
          distill_alpha=0.7, distill_temperature=1.5)
    assert seen["alpha"] == 0.7 and seen["T"] == 1.5 and isinstance(seen["teacher"], torch.nn.Module)
    prune(SmallCNN(w=8), data, f"{int(macs * 0.7)}MACs", method="l1", epochs=0, finetune_epochs=1)
    assert seen["alpha"] == 0.0 and seen["teacher"] is None
    with pytest.raises(ConfigError, match="0 < alpha <= 1"):
        prune(SmallCNN(w=8), data, f"{int(macs * 0.7)}MACs", method="l1", epochs=0, distill=True, distill_alpha=0)


def test_unstructured_distillation_reaches_masked_fine_tuning(monkeypatch):
    from autoprune_edge import unstructured
    from autoprune_edge.data import load_data

    seen = {}

    def fake_train(model, dataset, cfg, *, teacher=None, **kw):
        seen.update(alpha=cfg.kd_alpha, T=cfg.kd_temperature, teacher=teacher)
        return []

    monkeypatch.setattr(unstructured, "train", fake_train)
    data = load_data("synthetic", input_size=8, synthetic_train=64, synthetic_val=16)
    model = SmallCNN(w=8)
    prune(model, data, "1kparams", method="autoprune", autoprune=AutoPruneConfig(epochs=0.5, batch_size=32),
          granularity="unstructured", finetune_epochs=1, distill=True, distill_alpha=0.6, distill_temperature=3.0)
    assert seen["alpha"] == 0.6 and seen["T"] == 3.0 and isinstance(seen["teacher"], torch.nn.Module)
    # the teacher is the dense model, not the pruned one
    nz = lambda m: sum(int((x.weight != 0).sum()) for x in m.modules() if isinstance(x, torch.nn.Conv2d))  # noqa: E731
    assert nz(seen["teacher"]) > nz(model)


@pytest.mark.parametrize("exponent,coupling", [(0.0, 0.0), (0.5, 0.0), (1.0, 0.5), (0.5, 1.0)])
def test_penalty_push_follows_cost_and_coupling(exponent, coupling):
    """The penalty's gradient on gate i becomes proportional to c_i**exponent / k_i**coupling (c_i: its
    marginal cost, k_i: how many layers it masks), with the same total as the plain cost gradient; plain
    cost weighting (1, 0) leaves the cost gradient untouched."""
    from autoprune_edge.autoprune import penalty_push, scaled_keep, structured_costs
    from autoprune_edge.cost import GroupCostModel

    model = ResidualNet(w=8).eval()
    graph = PruningGraph(model, torch.randn(1, 3, 12, 12))
    gates = ChannelGates(graph, GateConfig())
    budgets = parse_budgets("0.1MFLOPs")
    cost_fn = structured_costs(GroupCostModel(graph), {"macs"})

    def push_grads(push):
        keep = [torch.ones_like(m, requires_grad=True) for m in gates.m]
        cost_fn(scaled_keep(keep, push))["macs"].backward()
        return torch.cat([k.grad for k in keep])

    fan = torch.cat([torch.full_like(m, float(k)) for m, k in zip(gates.m, gates.coupling())]).detach()
    assert fan.max() == 3 and fan.min() == 1  # the stream is read by both blocks and the head
    assert penalty_push(gates, cost_fn, budgets, 1.0, 0.0) is None
    plain = push_grads(None)
    assert plain.max() > 2 * plain.min() > 0  # the residual stream costs more per channel than the interiors
    shaped = push_grads(penalty_push(gates, cost_fn, budgets, exponent, coupling))
    want = plain ** exponent / fan ** coupling
    want = want * plain.sum() / want.sum()  # sum(c * f) stays sum(c)
    assert torch.allclose(shaped, want, rtol=1e-4)


def test_linear_latency_model_is_exact_dense_and_ranks_by_device_cost():
    """The latency penalty: exact at the dense model, lower when channels go, differentiable."""
    from autoprune_edge.cost import GroupCostModel
    from autoprune_edge.profiles.profile import profile

    torch.manual_seed(0)
    model = ResidualNet(w=32).eval()
    graph = PruningGraph(model, torch.randn(1, 3, 12, 12))
    cost = GroupCostModel(graph)
    from autoprune_edge.profiles.latency import kernel_fixed_ms
    from autoprune_edge.targets import load_target

    dense = profile(model, (1, 3, 12, 12), "raspberrypi4")
    fixed = kernel_fixed_ms(load_target("raspberrypi4"), dense.threads)  # dispatch + sync: no channel removes it
    assert fixed > 0
    lat = cost.latency_model({lp.name: lp.latency_ms for lp in dense.layers}, dense.latency_ms, fixed)
    full = [torch.ones(g.size, requires_grad=True) for g in graph.groups]
    value = lat(full)
    assert float(value.detach()) == pytest.approx(dense.latency_ms, rel=1e-9)
    value.backward()
    assert all(float(k.grad.min()) >= 0 for k in full) and any(float(k.grad.max()) > 0 for k in full)
    half = [torch.cat([torch.ones(g.size - g.size // 2), torch.zeros(g.size // 2)]) for g in graph.groups]
    trial = graph.copy()
    trial.compact([k.bool() for k in half])
    exact = profile(trial.model, (1, 3, 12, 12), "raspberrypi4").latency_ms
    # a first-order model: per-op overheads and tile padding make the exact prediction fall more slowly
    assert float(lat(half)) < dense.latency_ms and exact < dense.latency_ms
    assert float(lat(half)) == pytest.approx(exact, rel=0.25)


def test_latency_budget_steers_gate_training():
    from autoprune_edge.data import load_data
    from autoprune_edge.profiles.profile import profile

    torch.manual_seed(0)
    data = load_data("synthetic", input_size=12, synthetic_train=128, synthetic_val=32)
    model = ResidualNet(w=32)
    dense_ms = profile(model, (1, 3, 12, 12), "raspberrypi4").latency_ms
    budget = 0.6 * dense_ms
    r = prune(model, data, f"{budget:.6f}ms", target="raspberrypi4", method="autoprune",
              autoprune=AutoPruneConfig(epochs=2, batch_size=32), finetune_epochs=0, round_to=1)
    assert "lambda_latency_ms" in r.gate_log[-1]
    assert r.gate_log[-1]["latency_ms"] <= budget * 1.05  # the controller drove the linearised latency down
    assert profile(r.model, (1, 3, 12, 12), "raspberrypi4").latency_ms <= budget


def test_prune_batch_size_applies_to_gate_training():
    from autoprune_edge.data import load_data

    data = load_data("synthetic", input_size=8, synthetic_train=128, synthetic_val=32)
    c = count_macs(SmallCNN(w=8), torch.randn(1, 3, 8, 8)).macs
    r = prune(SmallCNN(w=8), data, f"{c * 0.7 / 1e6:.6f}MFLOPs", epochs=1, batch_size=16, finetune_epochs=0,
              round_to=1, evaluate_accuracy=False)
    assert r.gate_log[-1]["step"] == 128 // 16  # not 128 // 64, AutoPruneConfig's own default


def test_option_a_shortcut_feeds_the_gates_while_every_channel_is_open():
    """Eq. 7 sums over every consumer of a channel, the option-A shortcut (ChannelScatter) included, from
    the first step: before, the shortcut skipped its masking while no channel was closed, so its term was
    missing until the first gate closed and then appeared abruptly."""
    torch.manual_seed(0)
    graph = PruningGraph(CifarResNet(num_blocks=1), torch.randn(1, 3, 32, 32))
    gates = ChannelGates(graph)
    gates.attach()
    try:
        scatters = [m for m in graph.model.modules() if isinstance(m, ChannelScatter)]
        assert scatters and all(parametrize.is_parametrized(s, "in_scale") for s in scatters)
        assert all(bool((m > 0).all()) for m in gates.m)  # every gate open
        with parametrize.cached():  # the masked in_scale the forward pass used is the tensor read below
            loss = graph.model.train()(torch.randn(4, 3, 32, 32)).square().mean()
            scales = [s.in_scale for s in scatters]
            for t in scales:
                t.retain_grad()
            loss.backward()
        assert all(t.grad is not None and float(t.grad.abs().sum()) > 0 for t in scales)
    finally:
        gates.detach()


def test_option_a_shortcut_keeps_bf16_and_channels_last():
    """A gated (fp32, requires-grad) in_scale must not promote a bf16 activation to fp32: the residual add
    would then run the rest of the stage in fp32 with a cast per layer (measured ~10 % of a ResNet-56 step)."""
    sc = ChannelScatter(16, 32, stride=2)
    sc.in_scale = torch.tensor([1.0, 0.0] * 8, requires_grad=True)
    x = torch.randn(2, 16, 8, 8).to(torch.bfloat16).to(memory_format=torch.channels_last)
    y = sc(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y[:, 8:24].float(), (x[:, :, ::2, ::2].float() * sc.in_scale.detach().view(1, -1, 1, 1)))
    y.float().sum().backward()
    assert sc.in_scale.grad is not None and sc.in_scale.grad.dtype == torch.float32
