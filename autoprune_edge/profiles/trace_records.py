"""What one traced forward pass records: its layers (ops) and the activation tensors between them.

Plain data shared by the tracer (layers.py), kernel fusion (fusion.py) and the cost model (profile.py).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LayerInfo:
    """One op of the forward pass (a leaf module call, or a functional aten op outside leaves)."""

    index: int
    name: str  # qualified module name, or "<container>.aten_op#n" for functional ops
    kind: str  # module class name ("Conv2d") or "aten.add"
    op_class: str  # one of OP_CLASSES
    inputs: list[int]  # activation tensor ids read
    outputs: list[int]  # activation tensor ids written (aliases for ``free`` ops)
    macs: int = 0
    in_channels: int | None = None
    out_channels: int | None = None
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    rows: int = 1  # output "pixels": batch × out_h × out_w (conv) or rows of the matmul (fc)
    in_elements: int = 0  # sum of activation input sizes (elements)
    out_elements: int = 0
    weight_elements: int = 0  # parameters this op reads (weights + bias)
    bias_elements: int = 0
    fusable_act: bool = False  # an activation TFLite fuses into the producing conv/fc/add
    folds_bn: bool = False  # a norm that folds into a preceding conv/fc (BatchNorm)
    op: str = ""  # the TFLite builtin this op becomes (see torch_ops.py); composites get their own name
    max_nonunit_dims: int = 0  # most dims > 1 of any activation tensor it reads or writes
    padding: tuple[int, int] = (0, 0)  # conv / pool padding (rows, cols)
    in_hw: tuple[int, int] = (1, 1)  # spatial size of the (first) activation input
    copy_elements: int = 0  # a view in torch that the TFLite graph materialises (channel slice / split)


@dataclass
class TensorInfo:
    """One logical activation tensor; in-place ops and copies get a new one, views share it."""

    id: int
    numel: int
    shape: tuple[int, ...]
    producer: int  # layer index, -1 for a graph input


@dataclass
class Trace:
    """The recorded forward pass: layers in execution order and the tensors they connect."""

    layers: list[LayerInfo]
    tensors: dict[int, TensorInfo]
    inputs: list[int]
    outputs: list[int]
    macs: int
    params: int
