import copy

import pytest
import torch
from torch import nn

from autoprune_edge.budget import parse_budgets
from autoprune_edge.cost import GroupCostModel
from autoprune_edge.errors import BudgetUnreachableError
from autoprune_edge.graph import PruningGraph
from autoprune_edge.methods import channel_scores
from autoprune_edge.methods.selection import select
from autoprune_edge.profiles.counting import count_macs, count_params
from autoprune_edge.pruning import check_equivalence, prune
from autoprune_edge.targets import load_target
from toy_models import (ConcatDepthwiseNet, GhostNet, GhostSENet, GroupedNet, LayerNormNet, ResidualNet, SmallCNN,
                        randomize_bn)

NETS = [(SmallCNN, (1, 3, 16, 16)), (ResidualNet, (1, 3, 12, 12)), (ConcatDepthwiseNet, (1, 3, 8, 8)),
        (GroupedNet, (1, 3, 8, 8)), (LayerNormNet, (1, 3, 6, 6)), (GhostNet, (1, 3, 8, 8)),
        (GhostSENet, (1, 3, 8, 8))]


def _random_keep(graph, seed):
    g = torch.Generator().manual_seed(seed)
    keep = []
    for grp in graph.groups:
        n = int(torch.randint(grp.min_keep, grp.size + 1, (1,), generator=g)) // grp.round_to * grp.round_to
        scores = grp.protect(torch.rand(grp.size, generator=g))  # keeps every concat branch non-empty
        keep.append(grp.keep_top(scores, n))
    return keep


@pytest.mark.parametrize("cls,shape", NETS)
def test_cost_model_exact_and_compaction_equal(cls, shape):
    torch.manual_seed(0)
    model = randomize_bn(cls())
    x = torch.randn(shape)
    graph = PruningGraph(model, x)
    assert graph.groups, "toy nets must have prunable groups"
    cost = GroupCostModel(graph)
    assert float(cost.macs(graph.full_keep())) == count_macs(model, x).macs
    for seed in range(3):
        m2 = copy.deepcopy(model)
        g2 = PruningGraph(m2, x)
        keep = _random_keep(g2, seed)
        masked = g2.masked_copy(keep)
        g2.compact(keep)
        # the prediction is exact, from the group structure alone
        assert float(cost.macs(keep)) == count_macs(m2, x).macs
        assert float(cost.params(keep)) == count_params(m2)
        max_abs, rel = check_equivalence(masked, m2, torch.randn(4, *shape[1:]))
        assert rel < 1e-5, (max_abs, rel)


def test_masking_is_a_real_check():
    """Zeroing a produced channel after BN+sigmoid is not removal; consumer-side masking is."""
    model = randomize_bn(ConcatDepthwiseNet())
    x = torch.randn(1, 3, 8, 8)
    graph = PruningGraph(model, x)
    keep = _random_keep(graph, 1)
    masked = graph.masked_copy(keep)
    dense_out = model(torch.randn(2, 3, 8, 8))
    assert dense_out.shape == (2, 10)
    # masked differs from dense (something was removed) ...
    xs = torch.randn(2, 3, 8, 8)
    assert (masked(xs) - model(xs)).abs().max() > 1e-4
    graph.compact(keep)
    # ... and equals the compacted model
    assert (masked(xs) - model(xs)).abs().max() < 1e-5


def test_classifier_keeps_its_outputs():
    model = SmallCNN(n=7)
    graph = PruningGraph(model, torch.randn(1, 3, 16, 16))
    assert graph.output_layers == ["fc"]
    assert all("fc" not in g.member_modules("out") for g in graph.groups)


def test_gated_derivative_of_cost():
    graph = PruningGraph(SmallCNN(), torch.randn(1, 3, 16, 16))
    cost = GroupCostModel(graph)
    keep = [torch.ones(g.size, requires_grad=True) for g in graph.groups]
    cost.macs(keep).backward()
    assert all((k.grad > 0).all() for k in keep)


def test_select_lands_under_budget_with_rounding():
    torch.manual_seed(0)
    model = randomize_bn(ResidualNet(w=32))
    x = torch.randn(1, 3, 12, 12)
    graph = PruningGraph(model, x, round_to=8)
    cost = GroupCostModel(graph)
    dense = count_macs(model, x).macs
    budgets = parse_budgets(f"{dense * 0.5 / 1e6:.4f}MFLOPs")

    def ev(keep):
        return {"macs": float(cost.macs(keep)), "params": float(cost.params(keep))}

    keep = select(graph, channel_scores(graph, "l1"), budgets, ev)
    assert all(int(k.sum()) % 8 == 0 for k in keep)
    graph.compact(keep)
    achieved = count_macs(model, x).macs
    assert achieved <= budgets[0].value
    assert achieved >= 0.8 * budgets[0].value  # close to the budget, not far under it


def test_unaligned_groups_keep_tile_multiples_or_everything():
    """A 40-wide group at round_to 16 keeps 16 or 32 channels (or all 40), never 24 or 37: an unaligned
    count runs as the next tile on the device, so it would cost MACs budget and buy no time."""
    torch.manual_seed(0)
    model = randomize_bn(ResidualNet(w=40))
    x = torch.randn(1, 3, 12, 12)
    graph = PruningGraph(model, x, round_to=16)
    wide = [g for g in graph.groups if g.size == 40]
    assert wide and all(g.round_to == 16 and g.min_keep == 16 for g in wide)
    cost = GroupCostModel(graph)

    def ev(keep):
        return {"macs": float(cost.macs(keep)), "params": float(cost.params(keep))}

    dense = count_macs(model, x).macs
    for frac in (0.4, 0.7, 0.9):
        keep = select(graph, channel_scores(graph, "l1"), parse_budgets(f"{dense * frac / 1e6:.4f}MFLOPs"), ev)
        kept = {int(k.sum()) for g, k in zip(graph.groups, keep) if g.size == 40}
        assert kept <= {16, 32, 40}, (frac, kept)


def test_narrow_tile_lets_a_one_tile_group_halve():
    """The host's XNNPACK pads fp32 to 32 channels but to 16 when there are at most 16: at round_to 32 a
    32-wide group may keep 16 (else it could not be pruned at all), a 40-wide one 16 or 32, a 16-wide one
    nothing less."""
    assert load_target("host").narrow_channels() == 16 and load_target("raspberrypi4").narrow_channels() == 0
    x = torch.randn(1, 3, 12, 12)
    for w, allowed in ((32, (16, 32)), (40, (16, 32, 40))):
        graph = PruningGraph(randomize_bn(ResidualNet(w=w)), x, round_to=32, narrow=16)
        wide = [g for g in graph.groups if g.size == w]
        assert wide and all(g.counts == allowed and g.floor_count(31) == 16 for g in wide), [g.counts for g in wide]
        assert all(g.next_count(16) == 32 and g.next_count(w) is None for g in wide)
    assert not [g for g in PruningGraph(randomize_bn(ResidualNet(w=32)), x, round_to=32).groups if g.size == 32]
    assert not [g for g in PruningGraph(randomize_bn(ResidualNet(w=16)), x, round_to=32, narrow=16).groups
                if g.size == 16]  # below the narrow tile nothing is saved on the device: left whole


def test_prune_api_noop_and_unreachable():
    model = SmallCNN()
    r = prune(model, None, "1GFLOPs", method="l1", input_shape=(1, 3, 16, 16), finetune_epochs=0)
    assert r.macs_after == r.macs_before and r.notes and "already meets" in r.notes[0]
    with pytest.raises(BudgetUnreachableError, match="cannot be reached"):
        prune(SmallCNN(), None, "1kFLOPs", method="l1", input_shape=(1, 3, 16, 16), finetune_epochs=0)


def test_prune_api_rejects_unknown_ramp_shape():
    from autoprune_edge.autoprune import AutoPruneConfig
    from autoprune_edge.data import load_data
    from autoprune_edge.errors import ConfigError

    data = load_data("synthetic", input_size=16, synthetic_train=8, synthetic_val=8)
    with pytest.raises(ConfigError, match="unknown ramp shape 'cosine'; use linear, geometric or cubic"):
        prune(SmallCNN(), data, "1MFLOPs", method="autoprune", epochs=1, finetune_epochs=0,
              autoprune=AutoPruneConfig(ramp_shape="cosine"))


def test_prune_api_two_budgets():
    model = randomize_bn(ResidualNet(w=32))
    dense = count_macs(model, torch.randn(1, 3, 12, 12))
    r = prune(model, None, [f"{dense.macs * 0.6 / 1e6:.4f}MFLOPs", f"{dense.params * 0.4 / 1e6:.5f}Mparams"],
              method="l1", input_shape=(1, 3, 12, 12), finetune_epochs=0)
    assert r.macs_after <= dense.macs * 0.6 and r.params_after <= dense.params * 0.4
    assert r.equivalence_rel < 1e-5


def test_grouped_conv_channels_are_tied_and_layernorm_groups_stay_dense():
    torch.manual_seed(0)
    graph = PruningGraph(randomize_bn(GroupedNet()), torch.randn(1, 3, 8, 8))
    tied = [g for g in graph.groups if g.ties > 1]
    assert tied and all(g.ties == 4 and g.round_to % 4 == 0 for g in tied)
    keep = tied[0].keep_top(torch.rand(tied[0].size), 8)
    assert keep.view(4, -1).all(0).sum() == 2 and (keep.view(4, -1).any(0) == keep.view(4, -1).all(0)).all()

    graph = PruningGraph(LayerNormNet(), torch.randn(1, 3, 6, 6))
    assert [why for _, why in graph.left_dense] == ["normalised across channels by LayerNorm norm"]
    assert [g.root for g in graph.groups] == ["up"]  # the MLP's hidden width is still prunable


def test_ghost_copies_are_rerooted_not_left_dense():
    # Torch-Pruning roots the SE and residual groups at layers whose channels j and j + C/2 are a conv
    # channel and its depthwise copy; re-rooted at the cheap convs they are prunable channel by channel.
    graph = PruningGraph(randomize_bn(GhostSENet()), torch.randn(1, 3, 8, 8))
    assert graph.left_dense == []
    assert sorted((g.root, g.size) for g in graph.groups) == [("c1.0", 6), ("c2.0", 5), ("reduce", 4),
                                                             ("short.0", 8)]


def test_cost_model_counts_exactly_beyond_float32():
    # 2**24 + 1 MACs are not representable in float32; budgets are checked against exact counts
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4097, 1, bias=False), torch.nn.ReLU(),
                                torch.nn.Conv2d(4097, 2, 1, bias=False))
    x = torch.randn(1, 1, 64, 64)
    graph = PruningGraph(model, x)
    cost = GroupCostModel(graph)
    assert float(cost.macs(graph.full_keep())) == count_macs(model, x).macs



class _SharedHead(nn.Module):
    """One head conv applied to two pyramid levels (as FPN detectors share theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        a = self.stem(x)
        b = self.down(a)
        return [self.out(self.head(a)), self.out(self.head(b))]


def test_cost_model_counts_every_call_of_a_shared_layer():
    from autoprune_edge.cost import GroupCostModel

    model = _SharedHead()
    example = torch.zeros(1, 3, 16, 16)
    graph = PruningGraph(model, example)
    cost = GroupCostModel(graph)
    keep = [torch.ones(g.size) for g in graph.groups]
    for k in keep:
        k[: k.numel() // 2] = 0  # remove half of every group
    predicted = float(cost.macs(keep))
    graph.compact([k.bool() for k in keep])
    assert predicted == pytest.approx(count_macs(graph.model, example).macs, rel=1e-9)
