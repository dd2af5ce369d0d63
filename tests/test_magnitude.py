"""Gradual magnitude pruning (magnitude.py): the unstructured baseline `--method l1 --granularity unstructured`."""
from __future__ import annotations

import torch
from torch import nn

from autoprune_edge.data import load_data
from autoprune_edge.magnitude import GradualConfig, GradualMagnitude, cubic_count, top_weights
from autoprune_edge.pruning import prune
from toy_models import SmallCNN


def _layers(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: x.weight for n, x in m.named_modules() if isinstance(x, (nn.Conv2d, nn.Linear))}


def test_cubic_count_runs_from_dense_to_final_cutting_fastest_first():
    counts = [cubic_count(1000, 10, t / 10) for t in range(11)]
    assert counts[0] == 1000 and counts[-1] == 10 and cubic_count(1000, 10, 2.0) == 10
    cuts = [a - b for a, b in zip(counts, counts[1:])]
    assert all(c >= 0 for c in cuts) and cuts[0] > cuts[-1]


def test_top_weights_is_one_global_ranking():
    a, b = torch.tensor([[0.1, 5.0], [0.3, 0.2]]), torch.tensor([4.0, 0.05, 3.0])
    ka, kb = top_weights([a, b], 3)
    assert ka.tolist() == [[False, True], [False, False]] and kb.tolist() == [True, False, True]


def test_schedule_masks_gradients_keeps_zeros_and_ends_on_the_budgeted_mask():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    named, names = dict(net.named_modules()), ["0", "2"]
    final = lambda scores: top_weights(scores, 7)  # noqa: E731  (a stand-in for the budgeted selection)
    hook = GradualMagnitude(named, names, total_steps=40, final_keep=final, final_count=7,
                            cfg=GradualConfig(every=4, ramp=0.5)).attach()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    seen = []
    for step in range(1, 41):
        loss = net(torch.randn(16, 8, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        before = [k.clone() for k in hook.masks]
        for i, n in enumerate(names):  # the gradient that reaches the optimizer is masked
            assert torch.all(named[n].weight.grad[~before[i]] == 0)
        opt.step()
        hook.after_step()
        kept = sum(int(k.sum()) for k in hook.masks)
        seen.append(kept)
        for i, n in enumerate(names):
            assert torch.all(named[n].weight[~hook.masks[i]] == 0)
        if step < 20 and step % 4 == 0:
            assert kept == cubic_count(48 + 18, 7, step / 20)
    assert seen[19] == 7 and seen[-1] == 7 and hook.done
    assert all(a >= b for a, b in zip(seen, seen[1:]))
    hook.detach()
    # resume: a fresh hook takes the state and holds the same mask
    other = GradualMagnitude(named, names, total_steps=40, final_keep=final, final_count=7)
    other.load_state_dict(hook.state_dict())
    assert other.done and all(torch.equal(a, b) for a, b in zip(other.masks, hook.masks))


def test_prune_l1_unstructured_trains_to_the_budget():
    data = load_data("synthetic", input_size=8, synthetic_train=128, synthetic_val=32)
    torch.manual_seed(0)
    model = SmallCNN(w=8)
    gated = sum(w.numel() for w in _layers(model).values())
    other = sum(p.numel() for p in model.parameters()) - gated
    r = prune(model, data, "1kparams", method="l1", granularity="unstructured", epochs=2, finetune_epochs=1,
              batch_size=32)
    nz = sum(int((w != 0).sum()) for w in _layers(model).values())
    assert r.method == "l1" and r.nonzero_after == nz and nz + other == r.params_after <= 1000
    assert r.params_after >= 980  # the budget is used, not undershot by the schedule
    assert r.accuracy_pruned is not None and r.accuracy_after is not None


def test_prune_l1_unstructured_without_epochs_is_one_shot_magnitude():
    data = load_data("synthetic", input_size=8, synthetic_train=64, synthetic_val=16)
    torch.manual_seed(0)
    model = SmallCNN(w=8)
    dense = {n: w.detach().abs().clone() for n, w in _layers(model).items()}
    prune(model, data, "1kparams", method="l1", granularity="unstructured", epochs=0, finetune_epochs=0)
    kept = torch.cat([dense[n][w != 0] for n, w in _layers(model).items()])
    dropped = torch.cat([dense[n][w == 0] for n, w in _layers(model).items()])
    assert kept.numel() > 0 and kept.min() >= dropped.max()  # the largest |w| survive, whatever the layer
