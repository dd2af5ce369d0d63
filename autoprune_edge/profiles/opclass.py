"""Op classes of the cost model (torch-free, shared by the torch tracer and the .tflite reader)."""
from __future__ import annotations

OP_CLASSES = ("conv3x3", "conv1x1", "depthwise", "grouped", "fc", "pool", "elementwise", "norm", "act", "free")
CONV_CLASSES = ("conv3x3", "conv1x1", "depthwise", "grouped")


def conv_op_class(cin: int, cout: int, kernel: tuple[int, ...] | int, groups: int) -> str:
    """Op class of a convolution from its channel counts, kernel size and groups."""
    ks = (kernel,) if isinstance(kernel, int) else tuple(kernel)
    if groups > 1 and groups == cin and cout % cin == 0:
        return "depthwise"
    if groups > 1:
        return "grouped"
    if all(k == 1 for k in ks):
        return "conv1x1"
    return "conv3x3"
