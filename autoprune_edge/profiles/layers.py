"""Per-layer extraction: run one forward pass and record every op the runtime will execute.

How it works (no Torch-Pruning, no torch.fx needed; any nn.Module that runs a forward pass works):

* Forward pre/post hooks on every *leaf* module (a module without children) turn each leaf call into
  one layer, classified from the module type (Conv2d with groups == in_channels is ``depthwise``, ...).
* A ``TorchDispatchMode`` sees the aten ops that run *outside* leaf modules: the functional glue of
  container modules (``out += identity``, ``torch.cat``, ``x.mean((2, 3))``, ``torch.flatten``,
  ``F.adaptive_avg_pool2d``, matmuls in attention). Each becomes a layer too. Views and reshapes are
  ``free``: they alias their input and cost nothing.
* MACs come from torch's own FLOP formulas (``torch.utils.flop_counter.flop_registry``, FLOPs / 2),
  so for CNNs the total equals :func:`autoprune_edge.profiles.counting.count_macs`. Two additions
  for attention: nn.MultiheadAttention's fused fast path is switched off while tracing (it is one
  opaque op the registry does not count), and the CPU ``scaled_dot_product_attention`` kernel gets
  a formula (2 × L × S × D per head).
* Activation tensors get logical ids. Storage identity links producers to consumers; an in-place op
  (``relu_``, ``add_``) produces a *new* logical tensor (the converted graph has no in-place ops),
  a view aliases the same one. Every tensor is kept referenced during the trace so that storage
  addresses are never reused.

:func:`fuse` then groups layers into the kernels a TFLite/XNNPACK runtime runs: a conv or fc absorbs a
following BatchNorm (folded) and a following ReLU/ReLU6/clamp activation (fused activation); an
elementwise add/sub/mul absorbs a following ReLU/ReLU6 (TFLite ADD's fused activation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import flop_registry

from .opclass import CONV_CLASSES, OP_CLASSES, conv_op_class  # noqa: F401 (re-exported)

# aten ops (overload packet names) that only re-describe memory: no kernel, no new tensor.
_FREE_ATEN = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "flatten", "unflatten", "squeeze", "unsqueeze",
    "permute", "transpose", "t", "expand", "alias", "detach", "slice", "select", "split",
    "split_with_sizes", "chunk", "unbind", "as_strided", "view_as", "expand_as", "lift_fresh",
    "numpy_T", "contiguous", "dropout", "feature_dropout", "alpha_dropout", "narrow",
}
_NORM_ATEN = {
    "native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
    "batch_norm", "native_layer_norm", "native_group_norm", "_batch_norm_impl_index",
}
_ACT_ATEN = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_", "hardswish", "hardswish_",
    "hardsigmoid", "hardsigmoid_", "silu", "silu_", "gelu", "gelu_", "tanh", "tanh_", "leaky_relu",
    "leaky_relu_", "elu", "elu_", "mish", "mish_", "clamp", "clamp_", "clamp_min", "clamp_min_",
    "prelu", "_prelu_kernel", "softplus",
}
_POOL_ATEN = {
    "avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d",
    "_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "sum", "amax", "amin", "avg_pool1d",
    "max_pool1d", "avg_pool3d", "max_pool3d_with_indices", "_adaptive_avg_pool3d",
}
_FC_ATEN = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu"}
_CONV_ATEN = {"convolution", "_convolution", "conv2d", "mkldnn_convolution", "_slow_conv2d_forward"}
# Ops that read no activation data worth costing (creation, metadata).
_IGNORE_ATEN = {
    "zeros", "ones", "empty", "full", "arange", "scalar_tensor", "zeros_like", "ones_like",
    "empty_like", "full_like", "new_zeros", "new_ones", "new_empty", "new_full", "randn", "rand",
    "sym_size", "sym_numel", "sym_stride", "_local_scalar_dense", "item", "is_same_size", "empty_strided",
}
_ELEMENTWISE_BINARY = {"add", "add_", "sub", "sub_", "mul", "mul_"}
# views along the channel dim that the converted TFLite graph materialises (SPLIT / STRIDED_SLICE copies)
_CHANNEL_SLICES = {"split", "split_with_sizes", "slice", "narrow", "chunk", "unbind"}


def _sdpa_macs(args: tuple) -> int:
    q, k = args[0], args[1]  # (..., L, D) and (..., S, D): Q·Kᵀ and P·V
    return 2 * (q.numel() // q.shape[-1]) * k.shape[-2] * q.shape[-1]


# MAC formulas for ops torch's FLOP registry does not cover (CPU attention kernels).
_EXTRA_MACS = {
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa_macs,
    "_scaled_dot_product_attention_math": _sdpa_macs,
}


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
    op: str = ""  # the TFLite builtin this op becomes (see tflite_op_name); composites get their own name
    max_nonunit_dims: int = 0  # most dims > 1 of any activation tensor it reads or writes
    padding: tuple[int, int] = (0, 0)  # conv / pool padding (rows, cols)
    in_hw: tuple[int, int] = (1, 1)  # spatial size of the (first) activation input
    copy_elements: int = 0  # a view in torch that the TFLite graph materialises (channel slice / split)


@dataclass
class TensorInfo:
    id: int
    numel: int
    shape: tuple[int, ...]
    producer: int  # layer index, -1 for a graph input


@dataclass
class Trace:
    layers: list[LayerInfo]
    tensors: dict[int, TensorInfo]
    inputs: list[int]
    outputs: list[int]
    macs: int
    params: int


@dataclass
class Kernel:
    """What the runtime executes: a head layer plus the layers fused into it."""

    index: int
    head: int  # layer index
    members: list[int]  # layer indices, head first
    inputs: list[int]
    outputs: list[int]
    op_class: str


# --------------------------------------------------------------------------------------------------
# classification helpers
# --------------------------------------------------------------------------------------------------


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) == 1:
        return (v[0], 1)
    return (v[0], v[1]) if len(v) >= 2 else (1, 1)


def _spatial(shape: tuple[int, ...]) -> tuple[tuple[int, int], int]:
    """(out_h, out_w) and rows (batch × spatial) of an NC... output."""
    if len(shape) >= 4:
        h, w = shape[-2], shape[-1]
        extra = 1
        for d in shape[2:-2]:
            extra *= d
        return (h * extra, w), shape[0] * h * w * extra
    if len(shape) == 3:
        return (shape[2], 1), shape[0] * shape[2]
    return (1, 1), shape[0] if shape else 1


def _fusable_module(m: nn.Module) -> bool:
    if isinstance(m, (nn.ReLU, nn.ReLU6)):
        return True
    if isinstance(m, nn.Hardtanh):  # ReLU6 is Hardtanh(0, 6); RELU_N1_TO_1 is Hardtanh(-1, 1)
        return (m.min_val, m.max_val) in ((0.0, 6.0), (-1.0, 1.0))
    return False


_MODULE_CLASSES: list[tuple[type, str]] = [
    (nn.Linear, "fc"),
    (nn.Bilinear, "fc"),
    (nn.modules.batchnorm._BatchNorm, "norm"),
    (nn.LayerNorm, "norm"),
    (nn.GroupNorm, "norm"),
    (nn.modules.instancenorm._InstanceNorm, "norm"),
    (nn.modules.pooling._MaxPoolNd, "pool"),
    (nn.modules.pooling._AvgPoolNd, "pool"),
    (nn.modules.pooling._AdaptiveAvgPoolNd, "pool"),
    (nn.modules.pooling._AdaptiveMaxPoolNd, "pool"),
    (nn.Identity, "free"),
    (nn.modules.dropout._DropoutNd, "free"),
    (nn.Flatten, "free"),
    (nn.Unflatten, "free"),
    (nn.Softmax, "elementwise"),
    (nn.LogSoftmax, "elementwise"),
]
_ACT_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.Sigmoid, nn.Hardsigmoid, nn.Hardswish,
    nn.SiLU, nn.GELU, nn.Tanh, nn.Mish, nn.ELU, nn.Softplus,
)


def _module_class(m: nn.Module, macs: int) -> str:
    if isinstance(m, nn.modules.conv._ConvNd):
        return conv_op_class(m.in_channels, m.out_channels, m.kernel_size, m.groups)
    if isinstance(m, _ACT_MODULES):
        return "act"
    for cls, oc in _MODULE_CLASSES:
        if isinstance(m, cls):
            return oc
    return "fc" if macs > 0 else "elementwise"


def _aten_class(name: str, args: tuple) -> str:
    if name in _FREE_ATEN:
        return "free"
    if name in _CONV_ATEN:
        w = args[1]
        groups = int(args[8]) if len(args) > 8 else 1
        cout, cin_g = w.shape[0], w.shape[1]
        return conv_op_class(cin_g * groups, cout, tuple(w.shape[2:]), groups)
    if name in _FC_ATEN:
        return "fc"
    if name in _NORM_ATEN:
        return "norm"
    if name in _ACT_ATEN:
        return "act"
    if name in _POOL_ATEN:
        return "pool"
    return "elementwise"


def _aten_fusable(name: str, args: tuple) -> bool:
    if name in ("relu", "relu_", "relu6"):
        return True
    if name in ("hardtanh", "hardtanh_"):
        lo = float(args[1]) if len(args) > 1 else -1.0
        hi = float(args[2]) if len(args) > 2 else 1.0
        return (lo, hi) in ((0.0, 6.0), (-1.0, 1.0))
    if name in ("clamp", "clamp_"):
        lo = args[1] if len(args) > 1 else None
        hi = args[2] if len(args) > 2 else None
        return (lo, hi) in ((0, 6), (0.0, 6.0), (0, None), (0.0, None))
    if name in ("clamp_min", "clamp_min_"):
        return len(args) > 1 and float(args[1]) == 0.0
    return False


# Canonical op names: the TFLite builtin each torch op becomes after conversion (composites, which the
# converter lowers to several builtins, keep one descriptive name). Delegate support lists in target
# profiles (``[accelerator] unsupported_ops``) use these names.
_ACT_OPS = {
    "relu": "RELU", "relu_": "RELU", "relu6": "RELU6", "hardtanh": "RELU6", "hardtanh_": "RELU6",
    "clamp": "RELU6", "clamp_": "RELU6", "clamp_min": "RELU", "clamp_min_": "RELU",
    "sigmoid": "LOGISTIC", "sigmoid_": "LOGISTIC", "hardswish": "HARD_SWISH", "hardswish_": "HARD_SWISH",
    "hardsigmoid": "HARD_SWISH", "hardsigmoid_": "HARD_SWISH", "silu": "SILU", "silu_": "SILU",
    "gelu": "GELU", "gelu_": "GELU", "tanh": "TANH", "tanh_": "TANH", "leaky_relu": "LEAKY_RELU",
    "leaky_relu_": "LEAKY_RELU", "elu": "ELU", "elu_": "ELU", "prelu": "PRELU", "_prelu_kernel": "PRELU",
    "mish": "ELEMENTWISE", "mish_": "ELEMENTWISE", "softplus": "ELEMENTWISE",
}
_MODULE_OPS: list[tuple[type, str]] = [
    (nn.ReLU, "RELU"), (nn.ReLU6, "RELU6"), (nn.Hardtanh, "RELU6"), (nn.Sigmoid, "LOGISTIC"),
    (nn.Hardswish, "HARD_SWISH"), (nn.Hardsigmoid, "HARD_SWISH"), (nn.SiLU, "SILU"), (nn.GELU, "GELU"),
    (nn.Tanh, "TANH"), (nn.LeakyReLU, "LEAKY_RELU"), (nn.PReLU, "PRELU"), (nn.ELU, "ELU"),
    (nn.Mish, "ELEMENTWISE"), (nn.Softplus, "ELEMENTWISE"),
    (nn.Linear, "FULLY_CONNECTED"), (nn.Bilinear, "FULLY_CONNECTED"),
    (nn.modules.batchnorm._BatchNorm, "BATCH_NORM"), (nn.LayerNorm, "LAYER_NORM"), (nn.GroupNorm, "GROUP_NORM"),
    (nn.modules.instancenorm._InstanceNorm, "GROUP_NORM"),
    (nn.modules.pooling._MaxPoolNd, "MAX_POOL_2D"), (nn.modules.pooling._AvgPoolNd, "AVERAGE_POOL_2D"),
    (nn.modules.pooling._AdaptiveAvgPoolNd, "MEAN"), (nn.modules.pooling._AdaptiveMaxPoolNd, "REDUCE_MAX"),
    (nn.Softmax, "SOFTMAX"), (nn.LogSoftmax, "LOG_SOFTMAX"), (nn.Upsample, "RESIZE_BILINEAR"),
    (nn.modules.padding._ReflectionPadNd, "PAD"), (nn.modules.padding._ConstantPadNd, "PAD"),
    (nn.modules.padding._ReplicationPadNd, "PAD"), (nn.PixelShuffle, "DEPTH_TO_SPACE"),
    (nn.PixelUnshuffle, "SPACE_TO_DEPTH"), (nn.Embedding, "GATHER"), (nn.EmbeddingBag, "GATHER"),
    (nn.LSTM, "LSTM"), (nn.Conv3d, "CONV_3D"),
]
_ATEN_OPS = {
    "add": "ADD", "add_": "ADD", "sub": "SUB", "sub_": "SUB", "rsub": "SUB", "mul": "MUL", "mul_": "MUL",
    "div": "DIV", "div_": "DIV", "maximum": "MAXIMUM", "minimum": "MINIMUM", "cat": "CONCATENATION",
    "stack": "CONCATENATION", "max_pool2d": "MAX_POOL_2D", "max_pool2d_with_indices": "MAX_POOL_2D",
    "avg_pool2d": "AVERAGE_POOL_2D", "adaptive_avg_pool2d": "MEAN", "_adaptive_avg_pool2d": "MEAN",
    "mean": "MEAN", "sum": "SUM", "amax": "REDUCE_MAX", "adaptive_max_pool2d": "REDUCE_MAX",
    "_softmax": "SOFTMAX", "softmax": "SOFTMAX", "_log_softmax": "LOG_SOFTMAX", "log_softmax": "LOG_SOFTMAX",
    "constant_pad_nd": "PAD", "pad": "PAD", "reflection_pad2d": "PAD", "upsample_bilinear2d": "RESIZE_BILINEAR",
    "upsample_nearest2d": "RESIZE_NEAREST_NEIGHBOR", "exp": "EXP", "native_layer_norm": "LAYER_NORM",
    "native_group_norm": "GROUP_NORM", "pixel_shuffle": "DEPTH_TO_SPACE", "pixel_unshuffle": "SPACE_TO_DEPTH",
    "embedding": "GATHER", "index_select": "GATHER", "gather": "GATHER",
}


def _conv_op(groups: int, cin: int, cout: int, ndim_kernel: int, transposed: bool) -> str:
    if transposed:
        return "TRANSPOSE_CONV"
    if ndim_kernel >= 3:
        return "CONV_3D"
    if groups > 1 and groups == cin and cout % cin == 0:
        return "DEPTHWISE_CONV_2D"
    return "CONV_2D"


def _module_op(m: nn.Module, op_class: str) -> str:
    if isinstance(m, nn.modules.conv._ConvNd):
        return _conv_op(m.groups, m.in_channels, m.out_channels, len(m.kernel_size),
                        isinstance(m, nn.modules.conv._ConvTransposeNd))
    for cls, op in _MODULE_OPS:
        if isinstance(m, cls):
            return op
    return {"fc": "FULLY_CONNECTED", "pool": "MEAN", "free": "RESHAPE"}.get(op_class, "ELEMENTWISE")


def _aten_op(name: str, args: tuple, op_class: str, in_ts: list) -> str:
    if name in _CONV_ATEN:
        w = args[1]
        groups = int(args[8]) if len(args) > 8 else 1
        transposed = bool(args[6]) if len(args) > 6 else False
        return _conv_op(groups, int(w.shape[1]) * groups, int(w.shape[0]), w.dim() - 2, transposed)
    if name in _FC_ATEN:
        return "FULLY_CONNECTED" if name in ("addmm", "linear") else "BATCH_MATMUL"
    if name in _ACT_OPS:
        return _ACT_OPS[name]
    if name in ("clone", "_to_copy", "copy", "copy_") and in_ts and not in_ts[0].is_contiguous():
        return "TRANSPOSE"  # a permuted view materialised: the converted graph has a TRANSPOSE here
    if name in _NORM_ATEN:
        return "BATCH_NORM" if "batch" in name else _ATEN_OPS.get(name, "LAYER_NORM")
    if op_class == "free":
        return "RESHAPE"
    return _ATEN_OPS.get(name, "ELEMENTWISE")


def _nonunit_dims(ts: list) -> int:
    return max((sum(1 for d in t.shape if d > 1) for t in ts), default=0)


# --------------------------------------------------------------------------------------------------
# the tracer
# --------------------------------------------------------------------------------------------------


def _tensors(obj: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(obj)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def _skey(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (rare wrappers)
        return id(t)


# The MAC-heavy ops are not computed while tracing: their output shape comes from running them on meta
# tensors, and the output itself is left uninitialised (denormals are flushed while tracing). Tracing a 224x224 MobileNetV2 then costs ≈0.1 s whatever the
# machine's load (a real forward pass with random weights can also hit slow denormal arithmetic).
_SHAPE_ONLY = {"convolution", "_convolution", "mkldnn_convolution", "_slow_conv2d_forward", "mm", "addmm", "bmm",
               "baddbmm", "convolution_overrideable"}


def _zeros_like_output(func, args, kwargs):
    def to_meta(x):
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta") if isinstance(x, torch.Tensor) else x

    margs, mkwargs = tree_map(to_meta, (args, kwargs))
    meta_out = func(*margs, **mkwargs)
    device = next((a.device for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)), None)

    def materialise(x):  # uninitialised: the values are never used for anything but shapes
        return torch.empty(x.shape, dtype=x.dtype, device=device) if isinstance(x, torch.Tensor) else x

    return tree_map(materialise, meta_out)


class _Recorder(TorchDispatchMode):
    def __init__(self, tracer: "_Tracer"):
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._overloadpacket.__name__ in _SHAPE_ONLY:
            out = _zeros_like_output(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        tr = self.tracer
        macs = 0
        packet = func._overloadpacket
        if packet in flop_registry:
            macs = int(flop_registry[packet](*args, **kwargs, out_val=out)) // 2
        elif packet.__name__ in _EXTRA_MACS:
            macs = _EXTRA_MACS[packet.__name__](args)
        if tr.leaf_depth > 0:
            tr.leaf_macs += macs
        else:
            tr.functional(func, args, kwargs, out, macs)
        return out


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: list[LayerInfo] = []
        self.tensors: dict[int, TensorInfo] = {}
        self.storage_to_tensor: dict[int, int] = {}
        self.param_storages: set[int] = set()
        self.keep: list[torch.Tensor] = []  # keep every tensor alive: storage addresses stay unique
        self.leaf_depth = 0
        self.leaf_macs = 0
        self.leaf_inputs: list[list[int]] = []
        self.leaf_in_elems: list[int] = []
        self.module_names: dict[int, str] = {}
        self.container_stack: list[str] = []
        self.call_counts: dict[str, int] = {}
        self.next_id = 0
        for name, m in model.named_modules():
            self.module_names[id(m)] = name
        for p in list(model.parameters()) + list(model.buffers()):
            self.param_storages.add(_skey(p))

    # ---- tensor bookkeeping
    def new_tensor(self, t: torch.Tensor, producer: int) -> int:
        tid = self.next_id
        self.next_id += 1
        self.tensors[tid] = TensorInfo(tid, int(t.numel()), tuple(t.shape), producer)
        self.storage_to_tensor[_skey(t)] = tid
        self.keep.append(t)
        return tid

    def activation_ids(self, ts: list[torch.Tensor]) -> list[int]:
        out = []
        for t in ts:
            tid = self.storage_to_tensor.get(_skey(t))
            if tid is not None and tid not in out:
                out.append(tid)
        return out

    def unique_name(self, base: str) -> str:
        n = self.call_counts.get(base, 0)
        self.call_counts[base] = n + 1
        return base if n == 0 else f"{base}#{n + 1}"

    def add_layer(self, layer: LayerInfo, outs: list[torch.Tensor], inputs_ts: list[torch.Tensor]) -> None:
        """Register outputs: aliases for free ops, new logical tensors otherwise."""
        in_keys = {_skey(t) for t in inputs_ts}
        ids = []
        for t in outs:
            k = _skey(t)
            if layer.op_class == "free" and k in self.storage_to_tensor:
                ids.append(self.storage_to_tensor[k])
            elif k in self.param_storages:
                continue
            else:
                if layer.op_class == "free" and k not in in_keys:
                    # a "free" op that materialised a copy (e.g. reshape of a non-contiguous tensor)
                    layer.op_class = "elementwise"
                ids.append(self.new_tensor(t, layer.index))
        layer.outputs = ids
        if outs:
            layer.out_elements = int(outs[0].numel())
        acts = [t for t in inputs_ts if _skey(t) in self.storage_to_tensor and _skey(t) not in self.param_storages]
        layer.max_nonunit_dims = _nonunit_dims(acts + [t for t in outs if _skey(t) not in self.param_storages])
        self.layers.append(layer)

    # ---- leaf modules
    def pre_hook(self, module, args, kwargs):
        if self.leaf_depth == 0:
            ts = _tensors((args, kwargs))
            self.leaf_inputs.append(self.activation_ids(ts))
            self.leaf_in_elems.append(sum(int(t.numel()) for t in ts if _skey(t) in self.storage_to_tensor))
            self.leaf_macs = 0
        self.leaf_depth += 1

    def post_hook(self, module, args, kwargs, output):
        self.leaf_depth -= 1
        if self.leaf_depth > 0:
            return
        inputs = self.leaf_inputs.pop()
        in_elems = self.leaf_in_elems.pop()
        macs, self.leaf_macs = self.leaf_macs, 0
        qname = self.module_names.get(id(module), type(module).__name__)
        outs = _tensors(output)
        layer = LayerInfo(
            index=len(self.layers),
            name=self.unique_name(qname or type(module).__name__),
            kind=type(module).__name__,
            op_class=_module_class(module, macs),
            inputs=inputs,
            outputs=[],
            macs=macs,
            in_elements=in_elems,
        )
        in_ts = _tensors((args, kwargs))
        if (layer.op_class == "elementwise" and macs == 0 and len(outs) == 1 and not isinstance(module, _ACT_MODULES)
                and any(_skey(t) == _skey(outs[0]) and t.shape == outs[0].shape for t in in_ts)):
            layer.op_class = "free"  # returns its input unchanged (StochasticDepth in eval, custom identities)
        if in_ts and in_ts[0].dim() >= 4:
            layer.in_hw = (int(in_ts[0].shape[-2]), int(in_ts[0].shape[-1]))
        own = list(module.parameters(recurse=False))
        layer.weight_elements = sum(int(p.numel()) for p in own)
        bias = getattr(module, "bias", None)
        layer.bias_elements = int(bias.numel()) if isinstance(bias, torch.Tensor) else 0
        if outs:
            shape = tuple(outs[0].shape)
            layer.out_hw, layer.rows = _spatial(shape)
        if isinstance(module, nn.modules.conv._ConvNd):
            layer.in_channels, layer.out_channels = module.in_channels, module.out_channels
            layer.groups = module.groups
            layer.kernel = _pair(module.kernel_size)
            layer.stride = _pair(module.stride)
            if isinstance(module.padding, (tuple, list, int)):
                layer.padding = _pair(module.padding)
        elif isinstance(module, nn.Linear):
            layer.in_channels, layer.out_channels = module.in_features, module.out_features
            if outs:
                layer.rows = max(1, int(outs[0].numel()) // module.out_features)
            layer.out_hw = (1, 1)
        elif layer.op_class == "pool":
            k = getattr(module, "kernel_size", None)
            if k is not None:
                layer.kernel = _pair(k)
                layer.stride = _pair(getattr(module, "stride", None) or k)
                pad = getattr(module, "padding", 0)
                if isinstance(pad, (int, tuple, list)):
                    layer.padding = _pair(pad)
        elif layer.op_class == "fc" and outs:  # unknown leaf with MACs
            layer.out_channels = int(outs[0].shape[-1]) if outs[0].dim() else 1
        if outs and outs[0].dim() >= 2 and layer.out_channels is None:
            layer.out_channels = layer.in_channels = int(outs[0].shape[1])
        layer.fusable_act = layer.op_class == "act" and _fusable_module(module)
        layer.folds_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        layer.op = _module_op(module, layer.op_class)
        self.add_layer(layer, outs, _tensors((args, kwargs)))

    # ---- functional ops outside leaves
    def functional(self, func, args, kwargs, out, macs: int) -> None:
        name = func._overloadpacket.__name__
        if name in _IGNORE_ATEN:
            return
        in_ts = _tensors((args, kwargs))
        inputs = self.activation_ids(in_ts)
        outs = _tensors(out)
        if not inputs:
            return  # acts on parameters / constants only (e.g. weight.t())
        op_class = _aten_class(name, args)
        if name == "max_pool2d_with_indices":
            outs = outs[:1]
        container = self.container_stack[-1] if self.container_stack else ""
        base = f"{container}.{name}" if container else name
        layer = LayerInfo(
            index=len(self.layers),
            name=self.unique_name(base),
            kind=f"aten.{name}",
            op_class=op_class,
            inputs=inputs,
            outputs=[],
            macs=macs,
            in_elements=sum(int(t.numel()) for t in in_ts if _skey(t) in self.storage_to_tensor),
        )
        params = {_skey(t): t for t in in_ts if _skey(t) in self.param_storages}
        layer.weight_elements = sum(int(t.numel()) for t in params.values())
        if outs:
            layer.out_hw, layer.rows = _spatial(tuple(outs[0].shape))
        if op_class in ("conv3x3", "conv1x1", "depthwise", "grouped"):
            w = args[1]
            layer.groups = int(args[8]) if len(args) > 8 else 1
            layer.out_channels = int(w.shape[0])
            layer.in_channels = int(w.shape[1]) * layer.groups
            layer.kernel = _pair(tuple(w.shape[2:]) or 1)
            layer.stride = _pair(args[3]) if len(args) > 3 else (1, 1)
            layer.padding = _pair(args[4]) if len(args) > 4 and not isinstance(args[4], str) else (0, 0)
            if isinstance(args[0], torch.Tensor) and args[0].dim() >= 4:
                layer.in_hw = (int(args[0].shape[-2]), int(args[0].shape[-1]))
            layer.bias_elements = int(args[2].numel()) if len(args) > 2 and isinstance(args[2], torch.Tensor) else 0
        elif op_class == "fc" and outs:
            o = outs[0]
            layer.out_channels = int(o.shape[-1]) if o.dim() else 1
            layer.rows = max(1, int(o.numel()) // max(1, layer.out_channels))
            a = args[1] if name in ("addmm", "baddbmm") else args[0]
            layer.in_channels = int(a.shape[-1]) if isinstance(a, torch.Tensor) and a.dim() else None
            layer.out_hw = (1, 1)
        elif op_class == "pool" and name in ("avg_pool2d", "max_pool2d", "max_pool2d_with_indices"):
            layer.kernel = _pair(args[1])
            layer.stride = _pair(args[2]) if len(args) > 2 and args[2] else layer.kernel
            layer.padding = _pair(args[3]) if len(args) > 3 else (0, 0)
            if args[0].dim() >= 4:
                layer.in_hw = (int(args[0].shape[-2]), int(args[0].shape[-1]))
        elif op_class == "free" and name in _CHANNEL_SLICES and in_ts and in_ts[0].dim() >= 3:
            dim = int(args[1]) if len(args) > 1 and isinstance(args[1], int) else 0
            if name == "slice" and len(args) < 2:
                dim = 0
            dim = dim % in_ts[0].dim()
            if dim == 1 and sum(int(o.shape[1]) for o in outs[:1]) < int(in_ts[0].shape[1]):
                layer.copy_elements = sum(int(o.numel()) for o in outs)
                layer.op = "STRIDED_SLICE"
        if outs and outs[0].dim() >= 2 and layer.out_channels is None:
            layer.out_channels = layer.in_channels = int(outs[0].shape[1])
        layer.fusable_act = op_class == "act" and _aten_fusable(name, args)
        layer.folds_bn = name in ("native_batch_norm", "_native_batch_norm_legit_no_training", "batch_norm")
        layer.op = layer.op or _aten_op(name, args, op_class, [t for t in in_ts if _skey(t) not in self.param_storages])
        self.add_layer(layer, outs, in_ts)

    # ---- container bookkeeping (only for naming functional ops)
    def container_pre(self, module, args):
        self.container_stack.append(self.module_names.get(id(module), ""))

    def container_post(self, module, args, output):
        if self.container_stack:
            self.container_stack.pop()


@torch.no_grad()
def trace_layers(model: nn.Module, example: torch.Tensor | tuple[int, ...]) -> Trace:
    """Run one forward pass of ``model`` (in eval mode) and record its layers and tensors."""
    if not isinstance(example, torch.Tensor):
        p = next(iter(model.parameters()), None)
        example = torch.zeros(
            tuple(example),
            dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32,
            device=p.device if p is not None else "cpu",
        )
    tracer = _Tracer(model)
    handles = []
    for m in model.modules():
        if next(iter(m.children()), None) is None:
            handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True))
        else:
            handles.append(m.register_forward_pre_hook(tracer.container_pre))
            handles.append(m.register_forward_hook(tracer.container_post))
    input_id = tracer.new_tensor(example, -1)
    was_training = model.training
    model.eval()
    # nn.MultiheadAttention's fused inference fast path is one opaque op; take the decomposed path
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    flush = torch.set_flush_denormal(True)  # garbage activations must not hit slow denormal arithmetic
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the remaining ops are cheap; thread barriers on a loaded machine are not
    try:
        with _Recorder(tracer):
            output = model(example)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        torch.set_num_threads(n_threads)
        if flush:
            torch.set_flush_denormal(False)
        model.train(was_training)
        for h in handles:
            h.remove()
    outputs = tracer.activation_ids(_tensors(output))
    macs = sum(layer.macs for layer in tracer.layers)
    params = sum(p.numel() for p in model.parameters())
    return Trace(tracer.layers, tracer.tensors, [input_id], outputs, int(macs), int(params))


# --------------------------------------------------------------------------------------------------
# fusion
# --------------------------------------------------------------------------------------------------


def consumers(trace: Trace) -> dict[int, list[int]]:
    """Tensor id -> indices of the non-free layers that read it (graph outputs count as a reader -1)."""
    cons: dict[int, list[int]] = {}
    for layer in trace.layers:
        if layer.op_class == "free":
            continue
        for t in layer.inputs:
            cons.setdefault(t, []).append(layer.index)
    for t in trace.outputs:
        cons.setdefault(t, []).append(-1)
    return cons


def fuse(trace: Trace, fuse_all_activations: bool = False) -> tuple[list[Kernel], dict[int, int]]:
    """Group layers into runtime kernels. Returns the kernels and a map layer index -> kernel index.

    ``free`` layers belong to no kernel (they are absent from the map). TFLite fuses only ReLU/ReLU6
    (and ReLU_N1_TO_1); ``fuse_all_activations`` (TensorRT, Core ML) fuses any activation that follows
    a conv / fc / binary elementwise op.
    """
    cons = consumers(trace)
    kernels: list[Kernel] = []
    layer_kernel: dict[int, int] = {}
    producer_kernel: dict[int, int] = {}  # tensor id -> kernel index that writes it
    for layer in trace.layers:
        if layer.op_class == "free":
            continue
        target_k = None
        if len(layer.inputs) == 1 and layer.op_class in ("norm", "act"):
            src = layer.inputs[0]
            k = producer_kernel.get(src)
            if k is not None and cons.get(src) == [layer.index] and kernels[k].outputs == [src]:
                head = trace.layers[kernels[k].head]
                member_classes = [trace.layers[i].op_class for i in kernels[k].members]
                if layer.op_class == "norm" and layer.folds_bn:
                    # BatchNorm folds into a conv/fc that has no activation fused yet
                    if head.op_class in CONV_CLASSES + ("fc",) and "act" not in member_classes and "norm" not in member_classes:
                        target_k = k
                elif layer.op_class == "act" and (layer.fusable_act or fuse_all_activations):
                    fusable_head = head.op_class in CONV_CLASSES + ("fc",) or (
                        head.op_class == "elementwise" and head.kind.split(".")[-1] in _ELEMENTWISE_BINARY
                    )
                    if fusable_head and "act" not in member_classes:
                        target_k = k
        if target_k is not None:
            kern = kernels[target_k]
            kern.members.append(layer.index)
            kern.outputs = list(layer.outputs)
            layer_kernel[layer.index] = target_k
            for t in layer.outputs:
                producer_kernel[t] = target_k
            continue
        k = len(kernels)
        kernels.append(Kernel(k, layer.index, [layer.index], list(layer.inputs), list(layer.outputs), layer.op_class))
        layer_kernel[layer.index] = k
        for t in layer.outputs:
            producer_kernel[t] = k
    return kernels, layer_kernel
