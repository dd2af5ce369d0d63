"""``mnist:ROOT[?augment=1]``: the idx files of the torchvision layout, ROOT/MNIST/raw/{train,t10k}-*-ubyte[.gz]
(``augment``: training images shifted by up to SHIFT pixels each way)."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .bundle import DataBundle
from .images import ArrayImages
from .normalization import MNIST_MEAN, MNIST_STD
from .registry import LoadOptions, register_source
from .spec import check_channels, check_query, flag, root_dir, size_note

SHIFT = 2  # pixels each way: the shift range of the classic MNIST augmentation (digits are about 20 px in 28)

_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed) of unsigned bytes, as in the MNIST distribution."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: corrupt or truncated file ({e}); replace it with the original") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an idx file (bad magic number); expected an MNIST idx file")
    if raw[2] != 0x08:
        raise DataError(f"{path} holds idx type 0x{raw[2]:02x}; only unsigned-byte (0x08) idx files are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise DataError(f"{path} has a truncated idx header; replace it with the original file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        what = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: header declares {'x'.join(map(str, dims))} = {expected} bytes, "
            f"file has {len(raw) - header}; replace it with the original"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_mnist(root: Path) -> dict[str, Path]:
    dirs = [root / "MNIST" / "raw", root / "raw", root]
    found: dict[str, Path] = {}
    for key, names in _MNIST_FILES.items():
        for d in dirs:
            for name in names:
                for cand in (d / name, d / (name + ".gz")):
                    if cand.is_file() and key not in found:
                        found[key] = cand
        if key not in found:
            raise DataError(
                f"MNIST file {names[0]}[.gz] not found in {root / 'MNIST' / 'raw'} "
                f"(expected the torchvision layout ROOT/MNIST/raw/*-ubyte.gz)"
            )
    return found


@register_source("mnist")
def load_mnist(root_s: str | None, query: dict[str, str], opts: LoadOptions) -> DataBundle:
    assert root_s is not None  # parse_spec guarantees it for sources that need a root
    input_size, channels = opts.input_size, opts.channels
    check_query("mnist", query, ("augment",))
    augment = flag(query.get("augment"), opts.augment, "augment")
    root = root_dir("mnist", root_s, "ROOT/MNIST/raw/*-ubyte.gz")
    files = _find_mnist(root)
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        imgs, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3:
            raise DataError(f"{files[f'{split}_images']} should hold N x H x W images, has shape {imgs.shape}")
        if labels.ndim != 1:
            raise DataError(f"{files[f'{split}_labels']} should hold a list of labels, has shape {labels.shape}")
        if len(imgs) != len(labels):
            raise DataError(
                f"MNIST {split} set in {files[f'{split}_images'].parent} has {len(imgs)} images but "
                f"{len(labels)} labels; the idx files do not belong together"
            )
        if len(labels) and labels.max() > 9:
            raise DataError(f"{files[f'{split}_labels']} has label {labels.max()}; MNIST labels are 0..9")
    h, w = arrays["train_images"].shape[1:]
    if arrays["test_images"].shape[1:] != (h, w):
        raise DataError(f"MNIST train and test images in {root} have different sizes")
    size = (h, w) if input_size is None else (input_size, input_size)
    check_channels("mnist", channels, (1, 3))
    ch = 1 if channels is None else channels
    mean, std = MNIST_MEAN * ch, MNIST_STD * ch
    train = ArrayImages(arrays["train_images"], arrays["train_labels"].astype(np.int64), size, ch, mean, std,
                        shift=SHIFT)
    train.augment = augment
    val = ArrayImages(arrays["test_images"], arrays["test_labels"].astype(np.int64), size, ch, mean, std)
    desc = (
        f"MNIST handwritten digits from {root}: {len(train):,} train / {len(val):,} test images"
        + (f", shift augmentation (up to {SHIFT} px)" if augment else "") + size_note(h, size[0], ch, 1)
    )
    return DataBundle("mnist", train, val, (ch, *size), mean, std, [str(i) for i in range(10)], False, desc,
                      str(root), {"augment": augment})
