"""Drop-and-grow fine-tuning (regrow.py): which weights move, what stays fixed, resumption."""
from __future__ import annotations

import torch
from torch import nn

from autoprune_edge.regrow import MaskRegrowth, RegrowConfig


def _net() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    masks = {"0": torch.rand(6, 8) < 0.3, "2": torch.rand(3, 6) < 0.5}
    with torch.no_grad():
        for n, k in masks.items():
            net.get_submodule(n).weight.mul_(k)
    return net, masks


def _steps(net: nn.Module, rg: MaskRegrowth, n: int, lr: float = 0.1) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(16, 8, generator=g)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rg.after_step()


def test_swap_drops_smallest_survivors_and_grows_largest_dense_gradients() -> None:
    net, masks = _net()
    w = net.get_submodule("0").weight
    rg = MaskRegrowth(dict(net.named_modules()), masks, total_steps=100, cfg=RegrowConfig(every=1, fraction=0.5))
    before = rg.masks["0"].clone()
    n_move = int(rg.drop_fraction(1) * int(before.sum()))
    assert n_move >= 1
    with torch.no_grad():  # what the swap will judge: |w| of survivors, |dense grad| of pruned weights
        w_abs = w.abs().clone()
    rg.attach()
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(3))
    net(x).pow(2).mean().backward()
    dense_grad = rg._grads["0"].clone()
    assert torch.all(w.grad[~before] == 0)  # the gradient that reaches the optimizer is masked
    rg.after_step()  # no optimizer step: weights as judged
    after = rg.masks["0"]
    dropped, grown = before & ~after, after & ~before
    assert int(dropped.sum()) == int(grown.sum()) == n_move
    assert int(after.sum()) == int(before.sum())
    assert w_abs[dropped].max() <= w_abs[before & after].min()
    assert dense_grad[grown].min() >= dense_grad[~before & ~after].max()
    assert torch.all(w[grown] == 0) and torch.all(w[~after] == 0)


def test_counts_per_layer_fixed_and_pruned_weights_stay_zero_while_training() -> None:
    net, masks = _net()
    counts = {n: int(k.sum()) for n, k in masks.items()}
    rg = MaskRegrowth(dict(net.named_modules()), masks, total_steps=40, cfg=RegrowConfig(every=5)).attach()
    _steps(net, rg, 40)
    assert rg.moved > 0
    for n, k in rg.masks.items():
        assert int(k.sum()) == counts[n]
        assert torch.all(net.get_submodule(n).weight[~k] == 0)
        assert int((net.get_submodule(n).weight != 0).sum()) <= counts[n]
    assert any(not torch.equal(rg.masks[n], masks[n]) for n in masks)


def test_every_zero_keeps_the_mask() -> None:
    net, masks = _net()
    rg = MaskRegrowth(dict(net.named_modules()), masks, total_steps=20, cfg=RegrowConfig(every=0)).attach()
    _steps(net, rg, 20)
    assert rg.moved == 0
    assert all(torch.equal(rg.masks[n], masks[n]) for n in masks)


def test_no_updates_after_until() -> None:
    net, masks = _net()
    rg = MaskRegrowth(dict(net.named_modules()), masks, total_steps=20,
                      cfg=RegrowConfig(every=1, until=0.5)).attach()
    _steps(net, rg, 10)
    frozen = {n: k.clone() for n, k in rg.masks.items()}
    moved = rg.moved
    _steps(net, rg, 10)
    assert rg.moved == moved and all(torch.equal(rg.masks[n], frozen[n]) for n in frozen)


def test_state_round_trip_resumes_identically() -> None:
    net_a, masks = _net()
    rg_a = MaskRegrowth(dict(net_a.named_modules()), masks, total_steps=30, cfg=RegrowConfig(every=3)).attach()
    _steps(net_a, rg_a, 12)
    st = rg_a.state_dict()
    net_b, masks_b = _net()
    net_b.load_state_dict(net_a.state_dict())
    rg_b = MaskRegrowth(dict(net_b.named_modules()), masks_b, total_steps=30, cfg=RegrowConfig(every=3)).attach()
    rg_b.load_state_dict(st)
    assert rg_b.step == 12 and rg_b.moved == rg_a.moved
    assert all(torch.equal(rg_a.masks[n], rg_b.masks[n]) for n in masks)


def test_swap_in_a_channels_last_conv_picks_by_logical_position() -> None:
    """On CPUs and GPUs conv weights train in channels_last; the swap must judge and move the same weights
    as it would in NCHW (a flat view of the storage would scramble them or fail)."""
    picks = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        conv = nn.Conv2d(4, 6, 3)
        k = torch.rand(6, 4, 3, 3) < 0.3
        with torch.no_grad():
            conv.weight.mul_(k)
        net = nn.Sequential(conv).to(memory_format=fmt)
        rg = MaskRegrowth(dict(net.named_modules()), {"0": k}, total_steps=10,
                          cfg=RegrowConfig(every=1, fraction=0.5)).attach()
        x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(3)).contiguous(memory_format=fmt)
        net(x).pow(2).mean().backward()
        rg.after_step()
        assert rg.moved > 0 and int(rg.masks["0"].sum()) == int(k.sum())
        assert torch.all(conv.weight[~rg.masks["0"]] == 0)
        picks[fmt] = rg.masks["0"].clone()
    assert torch.equal(picks[torch.contiguous_format], picks[torch.channels_last])
