"""Ops whose channel mapping Torch-Pruning cannot compute: the graph builds, the groups through them stay
dense (with a reason naming the op), everything else prunes, and compaction equals masking."""
import copy
import inspect
import subprocess
import sys

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import graph as tp_graph
from torch_pruning.dependency import index_mapping, shape_infer
from toy_models import randomize_bn

from autoprune_edge.graph import PruningGraph, apply_history
from autoprune_edge.profiles.counting import count_macs
from autoprune_edge.pruning import check_equivalence, prune
from autoprune_edge.tracing import SafeDependencyGraph


def _cbr(cin, cout, k=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class ShuffleNet(nn.Module):
    """A ShuffleNetV2 unit: chunk -> branch -> concat -> channel shuffle (view/transpose/view)."""

    def __init__(self, w=8, n=5):
        super().__init__()
        self.stem = _cbr(3, 2 * w, 3)
        self.branch = nn.Sequential(_cbr(w, w), _cbr(w, w, 3, groups=w), _cbr(w, w))
        self.b = _cbr(2 * w, 2 * w, 3)
        self.mid1 = _cbr(2 * w, 3 * w)
        self.mid2 = _cbr(3 * w, 2 * w)
        self.head = nn.Linear(2 * w, n)

    def forward(self, x):
        x = self.stem(x)
        x1, x2 = x.chunk(2, dim=1)
        x = torch.cat([x1, self.branch(x2)], 1)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        x = self.mid2(self.mid1(self.b(x)))
        return self.head(x.mean((2, 3)))


class WindowNet(nn.Module):
    """Swin-style: channels-last window partition/reverse (channels kept whole) around an attention whose
    qkv reshape folds channels into heads."""

    def __init__(self, c=8, n=5, ws=2, heads=2):
        super().__init__()
        self.c, self.ws, self.heads = c, ws, heads
        self.embed = nn.Conv2d(3, c, 2, stride=2)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.fc1 = nn.Linear(c, 2 * c)
        self.fc2 = nn.Linear(2 * c, c)
        self.head = nn.Linear(c, n)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)  # B H W C
        B, H, W, C = x.shape
        ws, d = self.ws, self.c // self.heads
        t = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
        q, k, v = self.qkv(t).reshape(t.shape[0], ws * ws, 3, self.heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        a = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(t.shape[0], ws * ws, self.c)
        t = t + self.proj(a)
        t = t + self.fc2(torch.relu(self.fc1(t)))
        x = t.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        return self.head(x.mean((1, 2)))


class PartialResidual(nn.Module):
    """ReXNet-style block: the residual is added to only the first `w` of the block's 2w output channels.
    `mode` is how the model writes it: in place (`x[:, :w] += s`), out of place (`cat([x[:, :w] + s,
    x[:, w:]])`), or (`fill`) an in-place write into some channels without a residual (`x[:, :w] = 0`);
    `spatial` writes in place into part of every channel, which is a channel identity."""

    def __init__(self, mode, w=8, n=5):
        super().__init__()
        self.mode, self.w = mode, w
        self.stem = _cbr(3, w, 3)
        self.exp = _cbr(w, 3 * w)
        self.pwl = nn.Sequential(nn.Conv2d(3 * w, 2 * w, 1, bias=False), nn.BatchNorm2d(2 * w))
        self.mid = _cbr(2 * w, 2 * w, 3)
        self.head = nn.Linear(2 * w, n)

    def forward(self, x):
        s = self.stem(x)
        x = self.pwl(self.exp(s))
        if self.mode == "inplace":
            x[:, 0:self.w] += s
        elif self.mode == "cat":
            x = torch.cat([x[:, 0:self.w] + s, x[:, self.w:]], 1)
        elif self.mode == "fill":
            x[:, :self.w] = 0
        else:
            x[:, :, :2] *= 2
        return self.head(self.mid(x).mean((2, 3)))


def _keep(graph, seed):
    g = torch.Generator().manual_seed(seed)
    keep = []
    for grp in graph.groups:
        n = int(torch.randint(grp.min_keep, grp.size, (1,), generator=g))  # always remove something
        k = torch.zeros(grp.size, dtype=torch.bool)
        k[torch.argsort(grp.protect(torch.rand(grp.size, generator=g)), descending=True)[:n]] = True
        keep.append(k)
    return keep


def _check_equal(model, shape, seeds=(0, 1)):
    x = torch.randn(shape)
    for seed in seeds:
        m2 = copy.deepcopy(model)
        graph = PruningGraph(m2, x)
        keep = _keep(graph, seed)
        masked = graph.masked_copy(keep)
        history = graph.compact(keep)
        _, rel = check_equivalence(masked, m2, torch.randn(3, *shape[1:]))
        assert rel < 1e-5, (seed, rel)
        again = apply_history(copy.deepcopy(model).eval(), x, history)
        _, rel = check_equivalence(m2, again, torch.randn(2, *shape[1:]))
        assert rel < 1e-6, rel


def test_channel_shuffle_left_dense_rest_prunes():
    torch.manual_seed(0)
    model = randomize_bn(ShuffleNet())
    graph = PruningGraph(model, torch.randn(1, 3, 8, 8))
    dense = dict(graph.left_dense)
    # the stem (through chunk -> concat -> shuffle) and the branch output both reach the shuffle; the
    # chunk's sizes are constants of the forward code, so the stem is reported at the chunk
    assert {"stem.0", "branch.2.0"} <= set(dense), graph.left_dense
    assert all("left dense" in why for why in dense.values()), dense
    assert "model chunk" in dense["stem.0"] and "split" in dense["stem.0"], dense  # names the op and why
    pruned = {m for g in graph.groups for m in g.member_modules("out")}
    assert {"branch.0.0", "branch.1.0", "b.0", "mid1.0", "mid2.0"} <= pruned, pruned
    assert not pruned & {"stem.0", "branch.2.0"}
    _check_equal(model, (1, 3, 8, 8))


class CrossStageNet(nn.Module):
    """timm's CSPNet cross stage: split the expanded channels with a constant size, run one half, concat."""

    def __init__(self, c=8, n=5):
        super().__init__()
        self.c = c
        self.expand = _cbr(3, 2 * c, 3)
        self.inner = nn.Sequential(_cbr(c, c), _cbr(c, c, 3))
        self.mix = _cbr(2 * c, 3 * c)
        self.head = nn.Linear(3 * c, n)

    def forward(self, x):
        xs, xb = self.expand(x).split(self.c, dim=1)
        x = self.mix(torch.cat([xs, self.inner(xb)], 1))
        return self.head(x.mean((2, 3)))


def test_split_with_constant_sizes_is_left_dense_and_compacts():
    # split(self.c) would cut a pruned tensor at the old offset: the expand group must stay whole
    torch.manual_seed(0)
    model = randomize_bn(CrossStageNet())
    graph = PruningGraph(model, torch.randn(1, 3, 8, 8))
    dense = dict(graph.left_dense)
    assert "expand.0" in dense and "model split" in dense["expand.0"], graph.left_dense
    pruned = {m for g in graph.groups for m in g.member_modules("out")}
    assert {"inner.0.0", "mix.0"} <= pruned, pruned
    _check_equal(model, (1, 3, 8, 8))


def test_window_partition_prunes_and_head_fold_left_dense():
    torch.manual_seed(0)
    model = WindowNet().eval()
    graph = PruningGraph(model, torch.randn(1, 3, 8, 8))
    dense = dict(graph.left_dense)
    assert "qkv" in dense and "reshape" in dense["qkv"], graph.left_dense
    # the channels-last stream goes through the window partition/reverse reshapes and stays prunable
    stream = next(g for g in graph.groups if "embed" in g.member_modules("out"))
    assert any(g.member_modules("out") == ["fc1"] for g in graph.groups)
    assert {"qkv", "fc1", "head"} <= set(stream.member_modules("in"))
    assert {"proj", "fc2"} <= set(stream.member_modules("out"))
    _check_equal(model, (1, 3, 8, 8))


@pytest.mark.parametrize("mode,dense_roots,why", [
    ("inplace", {"stem.0", "pwl.0"}, "an in-place write into part of the channels (slice assignment) (model add_"),
    ("cat", {"stem.0", "pwl.0"}, "a slice that takes part of the channels (model __getitem__; channels "),
    ("fill", {"pwl.0"}, "an in-place write into part of the channels (slice assignment) (model __setitem__"),
    ("spatial", set(), None),
])
def test_partial_channel_writes_left_dense_rest_prunes(mode, dense_roots, why):
    """The slice bounds are constants in the model's code, so they cannot follow pruning: the groups whose
    channels reach them stay dense and are reported; everything else prunes and compacts exactly."""
    torch.manual_seed(0)
    model = randomize_bn(PartialResidual(mode)).eval()
    shape = (1, 3, 8, 8)
    graph = PruningGraph(model, torch.randn(shape))
    dense = dict(graph.left_dense)
    assert set(dense) == dense_roots, graph.left_dense
    assert all(why in reason and reason.endswith("left dense") for reason in dense.values()), dense
    pruned = {m for g in graph.groups for m in g.member_modules("out")}
    assert {"exp.0", "mid.0"} | ({"stem.0", "pwl.0"} - dense_roots) <= pruned, pruned
    assert not pruned & dense_roots
    _check_equal(model, shape)

    macs = count_macs(model, torch.randn(shape)).macs
    r = prune(copy.deepcopy(model), None, [f"{int(macs * 0.8)}MACs"], method="l1", epochs=0, input_shape=shape,
              finetune_epochs=0)
    assert r.macs_after <= macs * 0.8 and r.equivalence_rel < 1e-5, (r.macs_after, r.equivalence_rel)
    assert sum(why in n for n in r.notes) == len(dense_roots) if why else not r.notes, r.notes


class HalvesNet(nn.Module):
    """A stem whose channels are split in two halves, one conv on each: Torch-Pruning maps the split's
    offsets, SafeDependencyGraph leaves it opaque (the sizes are constants of the model's code)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(4, 2, 1)
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x1, x2 = torch.split(self.stem(x), [4, 4], dim=1)
        return self.a(x1) + self.b(x2)


_UPSTREAM_GROUP = """
import sys, torch, torch_pruning as tp
from torch import nn
{model}
model, x = HalvesNet().eval(), torch.randn(1, 3, 4, 4)
dg = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
group = dg.get_pruning_group(model.stem, tp.prune_conv_out_channels, [5])
assert "autoprune_edge" not in sys.modules
print(sorted((dg._module2name[d.target.module], d.handler.__name__, sorted(int(i) for i in idxs))
             for d, idxs in group if d.target.module in dg._module2name))
"""


def _group_of(dg, model):
    group = dg.get_pruning_group(model.stem, tp.prune_conv_out_channels, [5])
    return sorted((dg._module2name[d.target.module], d.handler.__name__, sorted(int(i) for i in idxs))
                  for d, idxs in group if d.target.module in dg._module2name)


def test_torch_pruning_stays_upstream_outside_our_graphs():
    """Our graph changes Torch-Pruning only inside its own objects: after one is built and used, Torch-Pruning's
    module functions are its own, and a plain DependencyGraph in the same process gives the groups that a
    process which never imported autoprune_edge gives."""
    model, x = HalvesNet().eval(), torch.randn(1, 3, 4, 4)
    ours = SafeDependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    assert ours.opaque, "the split of the stem's channels is opaque to our graph"
    assert [name for name, _, _ in _group_of(ours, model)] == ["stem"]

    for module, name in ((shape_infer, "init_shape_information"), (index_mapping, "update_index_mapping")):
        fn = getattr(module, name)
        assert (fn.__module__, fn.__qualname__) == (module.__name__, name) and not hasattr(fn, "__wrapped__"), fn
    assert (tp_graph.shape_infer, tp_graph.index_mapping) == (shape_infer, index_mapping)

    plain = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    got = _group_of(plain, model)
    mappings = [m for node in plain.module2node.values() for dep in node.dependencies for m in dep.index_mapping
                if m is not None]
    assert mappings and all(type(m).__module__ == index_mapping.__name__ for m in mappings), mappings
    script = _UPSTREAM_GROUP.format(model=inspect.getsource(HalvesNet))
    upstream = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert repr(got) == upstream.strip(), (got, upstream)
    assert len(got) == 2, got  # the split mapping reached one of the halves' convs
