"""How torch modules and aten ops map to the cost model's op classes and to the TFLite builtins they
become after conversion (the torch-side counterpart of tflite_ops.py)."""
from __future__ import annotations

from torch import nn

from .opclass import conv_op_class

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


def fusable_module(m: nn.Module) -> bool:
    """Whether TFLite fuses this activation module into the op before it (ReLU, ReLU6, ReLU_N1_TO_1)."""
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
ACT_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.Sigmoid, nn.Hardsigmoid, nn.Hardswish,
    nn.SiLU, nn.GELU, nn.Tanh, nn.Mish, nn.ELU, nn.Softplus,
)


def module_class(m: nn.Module, macs: int) -> str:
    """Op class of a leaf module; unknown modules with MACs count as ``fc``."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return conv_op_class(m.in_channels, m.out_channels, m.kernel_size, m.groups)
    if isinstance(m, ACT_MODULES):
        return "act"
    for cls, oc in _MODULE_CLASSES:
        if isinstance(m, cls):
            return oc
    return "fc" if macs > 0 else "elementwise"


def aten_class(name: str, args: tuple) -> str:
    """Op class of an aten op (overload packet name) that runs outside leaf modules."""
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


def aten_fusable(name: str, args: tuple) -> bool:
    """Whether TFLite fuses this aten activation (with these clamp bounds) into the op before it."""
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


def module_op(m: nn.Module, op_class: str) -> str:
    """The TFLite builtin a leaf module becomes."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return _conv_op(m.groups, m.in_channels, m.out_channels, len(m.kernel_size),
                        isinstance(m, nn.modules.conv._ConvTransposeNd))
    for cls, op in _MODULE_OPS:
        if isinstance(m, cls):
            return op
    return {"fc": "FULLY_CONNECTED", "pool": "MEAN", "free": "RESHAPE"}.get(op_class, "ELEMENTWISE")


def aten_op(name: str, args: tuple, op_class: str, in_ts: list) -> str:
    """The TFLite builtin an aten op becomes (``in_ts``: its activation inputs)."""
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
