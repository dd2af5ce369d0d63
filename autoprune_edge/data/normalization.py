"""Per-channel pixel statistics the sources normalise with, kept in one place so loaders and callers agree."""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_GREY_MEAN = (0.449,)  # ImageNet statistics of the luminance channel, for grayscale folders
IMAGENET_GREY_STD = (0.226,)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
SYNTHETIC_MEAN = 0.35  # measured pixel statistics of the generated images (3 channels / grey)
SYNTHETIC_STD = {3: 0.25, 1: 0.17}
