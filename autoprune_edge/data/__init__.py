"""Datasets behind one spec string: ``synthetic``, ``mnist:ROOT``, ``cifar10:ROOT``, ``folder:ROOT``.

Every dataset yields ``(image, label)`` with ``image`` a float tensor C x H x W already normalised with the
bundle's ``mean``/``std`` and ``label`` an int. Nothing is downloaded and nothing is written under ROOT.

Options may follow the root as a query string, e.g. ``cifar10:data/cifar?normalization=imagenet&augment=1``:

- ``synthetic[?train=512&val=256&classes=10]``
- ``mnist:ROOT[?augment=1]`` - ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (torchvision
  layout; augment: random shifts of up to 2 px)
- ``cifar10:ROOT[?normalization=cifar|imagenet&augment=1&trust_pickle=1]`` - either the ConvNetJS PNG sprites
  (cifar10_batch_0..49.png train, cifar10_batch_50.png test, cifar10_labels.json) or the torchvision
  pickles ROOT/cifar-10-batches-py/ (only with ``trust_pickle=1``: pickles can run code when loaded).
- ``folder:ROOT[?augment=1]`` - ROOT/train/<class>/*.png|jpg and ROOT/val/<class>/... (ImageNet stats).
- segmentation and detection (targets are masks or box dicts, ``DataBundle.task`` says which):
  ``synthetic-seg``, ``synthetic-det``, ``masks:ROOT``, ``yolo:ROOT``, ``coco:ROOT`` (task_sources.py).

A model that takes 3 channels can run on 1-channel data (MNIST): pass ``channels=3`` and each image is
repeated over 3 channels (the mean/std tuples are repeated too). Models are never modified for this.

Each source is one module that registers its loader (``registry.register_source``); this package imports
them in the order the sources are listed to the user. A new source is one module plus one import here.
"""
from __future__ import annotations

# The built-in sources register themselves on import; the order of these lines is the order of SCHEMES.
from . import synthetic  # noqa: I001 (registration order, not alphabetical)
from . import mnist
from . import cifar10
from . import folder
from . import task_sources
from .batches import calibration_batch, heldout_batch
from .bundle import DataBundle
from .cifar10 import CIFAR10_CLASSES, CifarImages
from .folder import IMAGE_SUFFIXES, FolderImages
from .images import ArrayImages, ImageDataset
from .load import load_data
from .mnist import read_idx
from .normalization import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    SYNTHETIC_MEAN,
    SYNTHETIC_STD,
)
from .registry import DataSource, LoadOptions, data_sources, register_source
from .synthetic import SyntheticGratings

#: Names of the built-in sources, in the order they are listed to the user.
SCHEMES = tuple(s.name for s in data_sources())

__all__ = [
    "DataBundle",
    "load_data",
    "calibration_batch",
    "heldout_batch",
    "read_idx",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "CIFAR10_CLASSES",
    "SCHEMES",
    "SYNTHETIC_MEAN",
    "SYNTHETIC_STD",
    "IMAGE_SUFFIXES",
    "ImageDataset",
    "ArrayImages",
    "SyntheticGratings",
    "CifarImages",
    "FolderImages",
    "DataSource",
    "LoadOptions",
    "data_sources",
    "register_source",
]
