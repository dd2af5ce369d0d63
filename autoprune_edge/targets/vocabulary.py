"""The vocabulary of a target file: the values its keys may take, shared by the dataclasses and the validator."""
from __future__ import annotations

SCHEMA_VERSION = 1

#: Precisions a target may list. ``fp16`` means fp16 arithmetic *and* fp16 activations.
PRECISIONS = ("fp32", "fp16", "int8")
#: Bytes per activation / weight element for each precision (int8 biases are int32: 4 bytes).
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}
#: Op classes that carry an efficiency factor in ``[ops]``. ``norm``/``act`` layers that are not fused
#: into a preceding conv/fc cost as ``elementwise``; matmuls between activations cost as ``fc``.
EFFICIENCY_CLASSES = ("conv3x3", "conv1x1", "depthwise", "grouped", "fc", "pool", "elementwise")
#: Roles of a ``[[references]]`` entry: fitted to, held out for checking, or an anchor.
REFERENCE_ROLES = ("fit", "holdout", "anchor")
#: How an accelerator handles an op it cannot run: ``op`` = only that op runs on the host CPU (Core ML,
#: GPU delegates, TensorRT plugins); ``rest`` = that op and everything after it run on the CPU (the Edge
#: TPU compiler partitions a graph only once).
FALLBACK_MODES = ("op", "rest")
#: Op names accepted in ``accelerator.unsupported_ops``: TFLite builtin operator names, plus the
#: composite names the profiler gives to ops TFLite lowers into several builtins.
KNOWN_OPS = (
    "ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "CONCATENATION", "SPLIT",
    "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "FULLY_CONNECTED", "BATCH_MATMUL",
    "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "L2_NORMALIZATION",
    "RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "PRELU", "ELU", "LOGISTIC", "TANH", "HARD_SWISH",
    "GELU", "EXP", "SOFTMAX", "LOG_SOFTMAX", "RESHAPE", "TRANSPOSE", "PAD", "PADV2", "STRIDED_SLICE",
    "SLICE", "GATHER", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
    "QUANTIZE", "DEQUANTIZE", "CAST", "LSTM",
    # composites (lowered to several builtins by the converter)
    "LAYER_NORM", "GROUP_NORM", "BATCH_NORM", "SILU", "ELEMENTWISE",
)
