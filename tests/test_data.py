"""data.py on tiny fake datasets written to tmp dirs in the real on-disk formats (no /work/shared needed)."""
from __future__ import annotations

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from autoprune_edge.data import (
    CIFAR10_CLASSES,
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    calibration_batch,
    heldout_batch,
    load_data,
)
from autoprune_edge.errors import DataError

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------- helpers


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _mnist_images(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    imgs[:, 0, 0] = labels * 20  # the label is readable from pixel (0, 0)
    return imgs


@pytest.fixture
def mnist_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train_y = np.arange(20, dtype=np.uint8) % 10
    test_y = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.uint8)
    for prefix, y, seed in (("train", train_y, 0), ("t10k", test_y, 1)):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(_mnist_images(y, seed))))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(y)))
    return tmp_path


def _cifar_images(n: int, start: int) -> np.ndarray:
    """N x 32 x 32 x 3 uint8; image i has R = i, G = 255 - i and B = its pixel's column * 8."""
    imgs = np.zeros((n, 32, 32, 3), dtype=np.uint8)
    for k in range(n):
        i = start + k
        imgs[k, :, :, 0] = i
        imgs[k, :, :, 1] = 255 - i
        imgs[k, :, :, 2] = (np.arange(32) * 8)[None, :]
    return imgs


def _write_sprite(path, imgs: np.ndarray) -> None:
    Image.fromarray(imgs.reshape(len(imgs), 1024, 3), "RGB").save(path)


@pytest.fixture
def sprite_root(tmp_path):
    """Real ConvNetJS layout with fewer rows: train sprites 0 and 1 (3 rows each), test sprite 50 (2 rows)."""
    d = tmp_path / "cifar"
    d.mkdir()
    _write_sprite(d / "cifar10_batch_0.png", _cifar_images(3, 0))
    _write_sprite(d / "cifar10_batch_1.png", _cifar_images(3, 3))
    _write_sprite(d / "cifar10_batch_50.png", _cifar_images(2, 100))
    (d / "cifar10_labels.json").write_text(json.dumps({"labels": [6, 9, 9, 4, 1, 1, 3, 8]}))
    return d


def _pixel(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo normalisation and return uint8-scale values."""
    m = torch.tensor(mean).view(-1, 1, 1)
    s = torch.tensor(std).view(-1, 1, 1)
    return (x * s + m) * 255


# --------------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_shaped():
    a = load_data("synthetic", input_size=32, seed=3, synthetic_train=40, synthetic_val=20)
    b = load_data("synthetic", input_size=32, seed=3, synthetic_train=40, synthetic_val=20)
    c = load_data("synthetic", input_size=32, seed=4, synthetic_train=40, synthetic_val=20)
    assert a.synthetic and a.name == "synthetic"
    assert (len(a.train), len(a.val)) == (40, 20)
    assert a.input_shape == (3, 32, 32) and len(a.mean) == len(a.std) == 3
    assert a.class_names == [f"class{k}" for k in range(10)] and a.num_classes == 10
    assert "NOT on real data" in a.description
    xa, ya = a.train[7]
    xb, yb = b.train[7]
    assert xa.shape == (3, 32, 32) and xa.dtype == torch.float32
    assert torch.equal(xa, xb) and ya == yb == 7
    assert not torch.equal(xa, c.train[7][0])
    assert not torch.equal(a.train[0][0], a.val[0][0])  # train and val are different images
    assert sorted(a.train[i][1] for i in range(40)) == sorted(list(range(10)) * 4)  # balanced
    assert torch.equal(calibration_batch(a, 8, seed=1), calibration_batch(b, 8, seed=1))
    assert not torch.equal(calibration_batch(a, 8, seed=1), calibration_batch(a, 8, seed=2))


def test_synthetic_size_channels_and_query():
    d = load_data("synthetic?train=12&val=6&classes=4", channels=1)
    assert d.input_shape == (1, 224, 224) and d.num_classes == 4
    assert (len(d.train), len(d.val)) == (12, 6)
    x, y = heldout_batch(d, 100, with_labels=True)
    assert x.shape == (6, 1, 224, 224) and y.tolist() == [0, 1, 2, 3, 0, 1]
    assert abs(float(x.mean())) < 1.0  # roughly normalised


def test_synthetic_classes_are_separable_by_simple_statistics():
    """A nearest-class-mean classifier on 8x8 pooled images beats chance by far: the task is learnable."""
    d = load_data("synthetic", input_size=32, synthetic_train=200, synthetic_val=100)
    xt, yt = calibration_batch(d, 200, with_labels=True)
    xv, yv = heldout_batch(d, 100, with_labels=True)
    pool = torch.nn.functional.adaptive_avg_pool2d
    ft, fv = pool(xt, 1).flatten(1), pool(xv, 1).flatten(1)
    centers = torch.stack([ft[yt == k].mean(0) for k in range(10)])
    acc = (torch.cdist(fv, centers).argmin(1) == yv).float().mean().item()
    assert acc > 0.5


# ------------------------------------------------------------------------------------------------- MNIST


def test_mnist_loads_fake_idx_gz(mnist_root):
    d = load_data(f"mnist:{mnist_root}")
    assert d.name == "mnist" and not d.synthetic
    assert (len(d.train), len(d.val)) == (20, 8)
    assert d.input_shape == (1, 28, 28) and d.mean == (0.1307,) and d.std == (0.3081,)
    assert d.class_names == [str(i) for i in range(10)]
    for ds in (d.train, d.val):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (1, 28, 28)
            assert round(float(_pixel(x, d.mean, d.std)[0, 0, 0])) == y * 20
    assert [d.val[i][1] for i in range(8)] == [3, 1, 4, 1, 5, 9, 2, 6]
    assert not any(p.suffix != ".gz" for p in (mnist_root / "MNIST" / "raw").iterdir())  # nothing extracted


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved down dy and right dx pixels, zeros where nothing moved in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[..., max(-dy, 0):h - max(dy, 0),
                                                                        max(-dx, 0):w - max(dx, 0)]
    return out


def test_mnist_augment_shifts_training_digits_only(mnist_root):
    d = load_data(f"mnist:{mnist_root}?augment=1")
    plain = load_data(f"mnist:{mnist_root}")
    assert d.train.augment and not d.val.augment and "shift augmentation" in d.description
    assert not plain.train.augment and d.options["augment"] and not plain.options["augment"]
    torch.manual_seed(0)
    seen = set()
    for i in (0, 3, 7) * 10:
        a, y = d.train[i]
        assert y == plain.train[i][1]
        a_px, p_px = _pixel(a, d.mean, d.std), _pixel(plain.train[i][0], d.mean, d.std)
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.allclose(a_px, _shifted(p_px, dy, dx), atol=1e-3)]
        assert len(match) == 1, "an augmented digit is its image shifted by at most 2 px, zero-filled"
        seen.add(match[0])
    assert len(seen) > 5  # 25 shifts are possible: random ones are drawn, (0, 0) among them is no exception
    assert torch.equal(d.val[1][0], plain.val[1][0])
    assert torch.equal(calibration_batch(d, 4, seed=0), calibration_batch(plain, 4, seed=0))  # never augmented
    with pytest.raises(DataError, match=r"augment='maybe' must be 1 or 0"):
        load_data(f"mnist:{mnist_root}?augment=maybe")


def test_mnist_resize_and_channel_repeat(mnist_root):
    d = load_data(f"mnist:{mnist_root}", input_size=32, channels=3)
    x, _ = d.train[0]
    assert d.input_shape == (3, 32, 32) and x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert d.mean == (0.1307,) * 3
    assert "repeated to 3 channels" in d.description


def test_mnist_uncompressed_files_are_accepted(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    y = np.array([7, 2], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(_mnist_images(y, 0)))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(y))
    d = load_data(f"mnist:{tmp_path}")
    assert [d.train[i][1] for i in range(2)] == [7, 2]


def test_mnist_errors(mnist_root, tmp_path):
    raw = mnist_root / "MNIST" / "raw"
    with pytest.raises(DataError, match="does not exist"):
        load_data(f"mnist:{tmp_path / 'nope'}")
    # truncated idx payload
    good = gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(good[:-100]))
    with pytest.raises(DataError, match="truncated"):
        load_data(f"mnist:{mnist_root}")
    # truncated gzip stream
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(good)[:50])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_data(f"mnist:{mnist_root}")
    # bad magic
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x12\x34" + good[2:]))
    with pytest.raises(DataError, match="not an idx file"):
        load_data(f"mnist:{mnist_root}")
    # label count mismatch
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(good))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(DataError, match="8 images but 5 labels"):
        load_data(f"mnist:{mnist_root}")
    # missing file
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_data(f"mnist:{mnist_root}")


# ---------------------------------------------------------------------------------------------- CIFAR-10


def test_cifar_sprites_load(sprite_root):
    d = load_data(f"cifar10:{sprite_root}")
    assert d.name == "cifar10" and d.class_names == CIFAR10_CLASSES
    assert (len(d.train), len(d.val)) == (6, 2)
    assert d.input_shape == (3, 32, 32) and d.mean == CIFAR_MEAN and d.std == CIFAR_STD
    assert [d.train[i][1] for i in range(6)] == [6, 9, 9, 4, 1, 1]
    assert [d.val[i][1] for i in range(2)] == [3, 8]
    for ds, start in ((d.train, 0), (d.val, 100)):
        for i in range(len(ds)):
            px = _pixel(ds[i][0], d.mean, d.std)
            assert torch.allclose(px[0], torch.full((32, 32), float(start + i)), atol=1e-3)
            assert torch.allclose(px[1], torch.full((32, 32), float(255 - start - i)), atol=1e-3)
            assert torch.allclose(px[2, 5], torch.arange(32.0) * 8, atol=1e-3)  # row-major pixels


def test_cifar_imagenet_normalisation_and_augment(sprite_root):
    d = load_data(f"cifar10:{sprite_root}?normalization=imagenet&augment=1")
    assert d.mean == IMAGENET_MEAN and d.std == IMAGENET_STD
    assert "ImageNet" in d.description and d.train.augment and not d.val.augment
    torch.manual_seed(0)
    outs = [d.train[0][0] for _ in range(12)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # random crops/flips
    # calibration batches switch augmentation off and are reproducible
    assert torch.equal(calibration_batch(d, 4, seed=0), calibration_batch(d, 4, seed=0))
    assert d.train.augment
    plain = load_data(f"cifar10:{sprite_root}", normalization="imagenet")
    x = plain.train[2][0]
    assert torch.allclose(_pixel(x, IMAGENET_MEAN, IMAGENET_STD)[0], torch.full((32, 32), 2.0), atol=1e-3)


def test_cifar_resize(sprite_root):
    d = load_data(f"cifar10:{sprite_root}", input_size=64)
    assert d.input_shape == (3, 64, 64) and d.val[0][0].shape == (3, 64, 64)


def test_cifar_sprite_errors(sprite_root, tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 data"):
        load_data(f"cifar10:{tmp_path}")
    labels = sprite_root / "cifar10_labels.json"
    labels.write_text(json.dumps({"labels": [1, 2, 3]}))
    with pytest.raises(DataError, match="has 3 labels but the sprites .* hold 6 train \\+ 2 test"):
        load_data(f"cifar10:{sprite_root}")
    labels.write_text(json.dumps({"labels": [0] * 8}))
    png = sprite_root / "cifar10_batch_1.png"
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cifar10_batch_1.png is corrupt or truncated"):
        load_data(f"cifar10:{sprite_root}")
    png.write_bytes(data)
    (sprite_root / "cifar10_batch_50.png").unlink()
    with pytest.raises(DataError, match="cifar10_batch_50.png not found"):
        load_data(f"cifar10:{sprite_root}")
    _write_sprite(sprite_root / "cifar10_batch_50.png", _cifar_images(2, 0))
    Image.new("RGB", (512, 2)).save(sprite_root / "cifar10_batch_0.png")
    with pytest.raises(DataError, match="1024 wide"):
        load_data(f"cifar10:{sprite_root}")


def _write_cifar_pickles(d, n=4):
    d.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        imgs = _cifar_images(n, 10 * i)
        obj = {b"batch_label": b"x", b"labels": [i % 10] * n, b"data": imgs.transpose(0, 3, 1, 2).reshape(n, 3072)}
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))


def test_cifar_pickles_need_trust_flag(tmp_path):
    _write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataError, match=r"trust_pickle=1"):
        load_data(f"cifar10:{tmp_path}")
    d = load_data(f"cifar10:{tmp_path}?trust_pickle=1")
    assert (len(d.train), len(d.val)) == (20, 4)
    assert [d.train[i][1] for i in (0, 4, 19)] == [0, 1, 4] and d.val[0][1] == 5
    px = _pixel(d.train[5][0], d.mean, d.std)
    assert torch.allclose(px[0], torch.full((32, 32), 11.0), atol=1e-3)
    assert torch.allclose(px[2, 3], torch.arange(32.0) * 8, atol=1e-3)


def test_cifar_trusted_pickle_still_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="data_batch_1"):
        load_data(f"cifar10:{tmp_path}", trust_pickle=True)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ folder


def _make_folder(root, classes=("cat", "dog"), per_class=3):
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                w, h = 40 + 10 * i, 30 + 5 * c
                ext = "png" if i % 2 == 0 else "jpg"
                Image.new("RGB", (w, h), (200 * c, 50, 100)).save(root / split / name / f"{i}.{ext}")


def test_folder_layout(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    d = load_data(f"folder:{tmp_path}", input_size=24)
    assert d.name == "folder" and d.class_names == ["cat", "dog"]
    assert (len(d.train), len(d.val)) == (6, 6)
    assert d.input_shape == (3, 24, 24) and d.mean == IMAGENET_MEAN
    x, y = d.train[4]
    assert x.shape == (3, 24, 24) and y == 1
    assert torch.allclose(_pixel(x, d.mean, d.std)[:, 12, 12], torch.tensor([200.0, 50.0, 100.0]), atol=1.0)
    assert heldout_batch(d, 10).shape == (6, 3, 24, 24)
    g = load_data(f"folder:{tmp_path}?augment=1", input_size=16, channels=1)
    assert g.input_shape == (1, 16, 16) and g.train.augment and g.train[0][0].shape == (1, 16, 16)


def test_folder_errors(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "val" / "dog").rename(tmp_path / "val" / "bird")
    with pytest.raises(DataError, match="only in train: dog; only in val: bird"):
        load_data(f"folder:{tmp_path}")
    (tmp_path / "val" / "bird").rename(tmp_path / "val" / "dog")
    (tmp_path / "train" / "fox").mkdir()
    with pytest.raises(DataError, match="fox has no images"):
        load_data(f"folder:{tmp_path}")
    (tmp_path / "train" / "fox").rmdir()
    bad = tmp_path / "val" / "dog" / "0.png"
    bad.write_bytes(b"not a png")
    d = load_data(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="cannot read image .*0.png"):
        d.val[3]
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no val/ directory"):
        load_data(f"folder:{empty}")


# ------------------------------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("imagenet:/x", "unknown data spec"),
        ("mnist", "needs a directory"),
        ("mnist:", "needs a directory"),
        ("synthetic?colour=1", "unknown option 'colour'"),
        ("synthetic?train=zero", "whole number"),
        ("cifar10:/definitely/not/here", "does not exist"),
    ],
)
def test_bad_specs(spec, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        load_data(spec)
    assert "\n" not in str(info.value)


def test_bad_cifar_options(sprite_root):
    with pytest.raises(DataError, match="normalization 'foo'"):
        load_data(f"cifar10:{sprite_root}?normalization=foo")
    with pytest.raises(DataError, match="1-channel|input channels"):
        load_data(f"cifar10:{sprite_root}", channels=1)


def test_synthetic_shapes_segmentation_task_is_deterministic_and_labelled():
    from autoprune_edge.data.synthetic_seg import SyntheticShapes

    ds = SyntheticShapes(8, size=32, num_classes=4, seed=3)
    x, m = ds[5]
    x2, m2 = SyntheticShapes(8, size=32, num_classes=4, seed=3)[5]
    assert x.shape == (3, 32, 32) and m.shape == (32, 32) and m.dtype == torch.int64
    assert torch.equal(x, x2) and torch.equal(m, m2)
    labels = torch.cat([ds[i][1].flatten() for i in range(8)]).unique().tolist()
    assert labels[0] == 0 and len(labels) >= 3 and max(labels) <= 3  # background plus shape classes
    # a shape's pixels carry its class colour: mean colour differs between classes
    xs, ms = zip(*(ds[i] for i in range(8)))
    xs, ms = torch.stack(xs), torch.stack(ms)
    means = [xs.permute(1, 0, 2, 3)[:, ms == k].mean(1) for k in labels[1:]]
    assert all((a - b).abs().max() > 0.5 for i, a in enumerate(means) for b in means[i + 1:])
