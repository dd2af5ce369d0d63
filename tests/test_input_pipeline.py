"""The input pipeline: batches (order and augmentation) depend on (seed, epoch) only, not on workers."""
import torch
from torch.utils.data import Dataset, TensorDataset

from autoprune_edge.distributed import World
from autoprune_edge.input_pipeline import (CachedSamples, PipelineConfig, cacheable, epoch_batches, epoch_loader,
                                           make_loader)
from autoprune_edge.train import TrainConfig, train
from toy_models import SmallCNN


class Jittered(Dataset):
    """A sample plus torch-random 'augmentation' noise, as CifarImages/FolderImages draw it."""

    def __init__(self, n=40, augment=True):
        self.x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 6, 6).contiguous()
        self.y = torch.arange(n) % 10
        self.augment = augment
        self.reads = 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.reads += 1
        noise = torch.rand(3, 6, 6) if self.augment else 0.0
        return self.x[i] + noise, int(self.y[i])


def _epochs(workers, epochs=(0, 1), w=World()):
    loader, order = epoch_loader(Jittered(), 8, seed=5, w=w, cfg=PipelineConfig(workers=workers, persistent=True))
    out = []
    for e in epochs:
        order.set_epoch(e)
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


def test_batches_do_not_depend_on_worker_count():
    zero, two = _epochs(0), _epochs(2)
    for a, b in zip(zero, two):
        assert len(a) == len(b) == 5
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    # a new epoch is a new order and new augmentation
    assert not torch.equal(zero[0][0][1], zero[1][0][1]) or not torch.equal(zero[0][0][0], zero[1][0][0])


def test_in_process_batches_equal_the_loader_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    direct = list(epoch_batches(Jittered(), 8, seed=5, epoch=1))
    assert torch.equal(torch.get_rng_state(), state)
    for (xa, ya), (xb, yb) in zip(direct, _epochs(0, epochs=(1,))[0]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_training_loader_leaves_the_global_rng_alone():
    """The model's own randomness (dropout) draws from the global RNG; reading an epoch must not shift it (a
    DataLoader without its own generator draws a seed from it on every epoch)."""
    loader, batches = epoch_loader(Jittered(), 8, seed=5, cfg=PipelineConfig(workers=0))
    state = torch.get_rng_state()
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        assert len(list(loader)) > 0
    assert torch.equal(torch.get_rng_state(), state)


def test_two_ranks_share_what_one_rank_reads():
    one = _epochs(0, epochs=(0,))[0]
    halves = [_epochs(0, epochs=(0,), w=World(r, 2))[0] for r in range(2)]
    for b, (x, y) in enumerate(one):
        assert torch.equal(torch.cat([halves[0][b][1], halves[1][b][1]]), y)
        assert torch.equal(torch.cat([halves[0][b][0], halves[1][b][0]]), x)


def test_make_loader_keeps_torch_s_seeded_order_for_any_worker_count():
    ds = Jittered(augment=False)
    ref = [y for _, y in torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True,
                                                     generator=torch.Generator().manual_seed(3))]
    for workers in (0, 2):
        got = [y for _, y in make_loader(ds, 8, shuffle=True, seed=3, cfg=PipelineConfig(workers=workers))]
        assert all(torch.equal(a, b) for a, b in zip(ref, got)) and len(ref) == len(got)


def test_cache_only_for_datasets_that_do_not_augment():
    assert not cacheable(Jittered(augment=True), 1 << 30)
    assert cacheable(Jittered(augment=False), 1 << 30)
    assert not cacheable(Jittered(augment=False), 100)  # does not fit
    assert not cacheable(TensorDataset(torch.zeros(4, 2), torch.zeros(4)), 1 << 30)  # says nothing: not cached
    ds = Jittered(augment=False)
    view = CachedSamples(ds)
    for _ in range(3):
        for i in range(len(view)):
            view[i]
    assert ds.reads == len(ds)


def test_training_result_does_not_depend_on_workers_or_cache():
    results = []
    for workers, cache in ((0, 0), (2, 0), (0, 1 << 30)):
        torch.manual_seed(0)
        model = SmallCNN(w=4)
        ds = Jittered(n=48, augment=not cache)
        if cache:  # same images, but deterministic: compare the cached against the uncached read
            ds.augment = False
        train(model, ds, TrainConfig(epochs=2, batch_size=8, bn_recalibration_batches=2),
              pipeline=PipelineConfig(workers=workers, cache_bytes=cache))
        results.append((workers, cache, model.state_dict()))
    a, b = results[0][2], results[1][2]
    assert all(torch.equal(a[k], b[k]) for k in a), "2 workers changed the result"
    torch.manual_seed(0)
    plain = SmallCNN(w=4)
    train(plain, Jittered(n=48, augment=False), TrainConfig(epochs=2, batch_size=8, bn_recalibration_batches=2),
          pipeline=PipelineConfig(workers=0, cache_bytes=0))
    c, p = results[2][2], plain.state_dict()
    assert all(torch.equal(c[k], p[k]) for k in c), "the memory cache changed the result"
