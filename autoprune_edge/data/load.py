"""``load_data``: one spec string in, one DataBundle out, whichever registered source the spec names."""
from __future__ import annotations

from .bundle import DataBundle
from .registry import LoadOptions
from .spec import check_size, parse_spec


def load_data(
    spec: str = "synthetic",
    *,
    input_size: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    synthetic_train: int = 512,
    synthetic_val: int = 256,
    synthetic_classes: int = 10,
    normalization: str | None = None,
    augment: bool = False,
    trust_pickle: bool = False,
) -> DataBundle:
    """Open the dataset named by ``spec`` (see the ``autoprune_edge.data`` docstring). Raises DataError on any problem.

    ``input_size``: side of the square images to produce (default: the dataset's own size; 224 for
    synthetic/folder). ``channels``: 1 or 3 (1-channel data is repeated for 3-channel models).
    ``normalization`` ("cifar"|"imagenet"), ``augment`` and ``trust_pickle`` apply to cifar10 (augment
    also to folder); the same options can be given in the spec's query string, which wins.
    """
    check_size(input_size)
    source, root, query = parse_spec(spec)
    options = LoadOptions(
        input_size=input_size,
        channels=channels,
        seed=seed,
        synthetic_train=synthetic_train,
        synthetic_val=synthetic_val,
        synthetic_classes=synthetic_classes,
        normalization=normalization,
        augment=augment,
        trust_pickle=trust_pickle,
    )
    return source.load(root, query, options)
