"""The cost model's kernels read straight from a ``.tflite`` file (no torch).

``read_kernels(path)`` walks the main subgraph and returns one
:class:`~autoprune_edge.profiles.kernels.KernelCost` per operator, with the channel counts, kernel
size, groups and element counts the latency model needs. ``measure`` stores these next to each
measured latency, so that ``calibrate`` can refit a target profile on another machine, without the
torch model. Needs only numpy and the flatbuffer schema shipped with ai-edge-litert.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..converters.tflite_graph import load_model, op_macs, op_name, schema_names, tensor_shape
from .kernels import KernelCost
from .opclass import conv_op_class

_FREE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
_POOL = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "L2_POOL_2D"}
_ACT = {"RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "PRELU", "ELU", "LOGISTIC", "TANH", "HARD_SWISH", "GELU"}
_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}


def _prod(xs) -> int:
    return int(np.prod(xs)) if len(xs) else 1


def _pool_filter(s, op) -> tuple[int, int]:
    if op.BuiltinOptionsType() == s.BuiltinOptions.Pool2DOptions and op.BuiltinOptions() is not None:
        o = s.Pool2DOptions()
        opts = op.BuiltinOptions()
        o.Init(opts.Bytes, opts.Pos)
        return int(o.FilterHeight()), int(o.FilterWidth())
    return (1, 1)


def precision_of(types: list[tuple[str, list[str]]]) -> str:
    """``int8`` when a conv/fc reads int8 activations, ``fp16`` when float16 weights are dequantised,
    ``int8`` when a network without conv/fc computes on int8 activations, else ``fp32``. ``types`` = [(op name, input tensor types)]."""
    for name, ins in types:
        if name in _WEIGHTED and ins and ins[0] in ("INT8", "UINT8"):
            return "int8"
    for name, ins in types:
        if name == "DEQUANTIZE" and ins and ins[0] == "FLOAT16":
            return "fp16"
    # no conv/fc (a pool, add or activation network): int8 when its arithmetic reads int8 activations
    for name, ins in types:
        if name not in ("QUANTIZE", "DEQUANTIZE") and ins and ins[0] in ("INT8", "UINT8"):
            return "int8"
    return "fp32"


def read_kernels(path: str | Path) -> tuple[list[KernelCost], dict]:
    """Kernels of the main subgraph of ``path`` and a summary dict (precision, macs, io_elements, ops)."""
    names, types = schema_names()
    s, model = load_model(Path(path))
    g = model.Subgraphs(0)
    # tensors fed by constant buffers are weights, not activations
    def is_const(idx: int) -> bool:
        if idx < 0:
            return True
        b = g.Tensors(idx).Buffer()
        return b > 0 and b < model.BuffersLength() and model.Buffers(b).DataLength() > 0

    kernels: list[KernelCost] = []
    op_types: list[tuple[str, list[str]]] = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        name = op_name(model, op, names)
        ins = [int(j) for j in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(j) for j in op.OutputsAsNumpy()] if op.OutputsLength() else []
        op_types.append((name, [types.get(g.Tensors(j).Type(), "?") for j in ins if j >= 0]))
        try:
            macs = int(op_macs(s, g, op, name))
        except (IndexError, ValueError):
            macs = 0
        act_in = [j for j in ins if j >= 0 and not is_const(j)]
        consts = [j for j in ins if j >= 0 and is_const(j)]
        out_shape = tensor_shape(g, outs[0]) if outs else []
        in_shape = tensor_shape(g, act_in[0]) if act_in else []
        shapes = [tensor_shape(g, j) for j in act_in] + [tensor_shape(g, j) for j in outs]
        k = KernelCost(
            name=f"{i}:{name}", op=name, op_class="elementwise", macs=macs,
            in_elements=sum(_prod(tensor_shape(g, j)) for j in act_in),
            out_elements=sum(_prod(tensor_shape(g, j)) for j in outs),
            weight_elements=sum(_prod(tensor_shape(g, j)) for j in consts),
            max_nonunit_dims=max((sum(1 for d in sh if d > 1) for sh in shapes), default=0),
        )
        rows = _prod(out_shape[:-1]) if out_shape else 1
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and len(ins) >= 2:
            w = tensor_shape(g, ins[1])
            cin = int(in_shape[-1]) if in_shape else 0
            if name == "TRANSPOSE_CONV":
                cin = int(tensor_shape(g, ins[2])[-1]) if len(ins) > 2 else cin
            if name == "DEPTHWISE_CONV_2D":
                cout, kh, kw, groups = int(w[3]), int(w[1]), int(w[2]), cin
            else:
                cout, kh, kw = int(w[0]), int(w[1]), int(w[2])
                groups = max(1, cin // int(w[3])) if name == "CONV_2D" and w[3] else 1
            k.in_channels, k.out_channels, k.kernel, k.groups, k.rows = cin, cout, (kh, kw), groups, rows
            k.op_class = conv_op_class(cin, cout, (kh, kw), groups)
            if len(ins) > 2 and name != "TRANSPOSE_CONV" and ins[2] >= 0:
                k.bias_elements = _prod(tensor_shape(g, ins[2]))
        elif name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
            k.op_class = "fc"
            if name == "FULLY_CONNECTED" and len(ins) >= 2:
                w = tensor_shape(g, ins[1])
                k.out_channels, k.in_channels = int(w[0]), int(w[1])
                k.rows = max(1, _prod(out_shape) // max(1, int(w[0])))
                if len(ins) > 2 and ins[2] >= 0:
                    k.bias_elements = _prod(tensor_shape(g, ins[2]))
            elif out_shape:
                k.out_channels = int(out_shape[-1])
                k.in_channels = int(in_shape[-1]) if in_shape else None
                k.rows = max(1, _prod(out_shape) // max(1, int(out_shape[-1])))
        elif name in _POOL:
            k.op_class = "pool"
            if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"):
                k.kernel, k.rows = _pool_filter(s, op), rows
        elif name in _FREE:
            k.op_class = "free"
        elif name in _ACT:
            k.op_class = "act"
        if name in ("CONV_3D",):
            k.op_class = "conv3x3"
        kernels.append(k)
    graph_io = [int(j) for j in g.InputsAsNumpy()] + [int(j) for j in g.OutputsAsNumpy()]
    summary = {
        "precision": precision_of(op_types),
        "macs": int(sum(k.macs for k in kernels)),
        "io_elements": int(sum(_prod(tensor_shape(g, j)) for j in graph_io)),
        "ops": len(kernels),
    }
    return kernels, summary
