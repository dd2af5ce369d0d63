"""Read a .tflite flatbuffer: op list and MACs counted from the graph itself (independent of torch).

Uses the flatbuffer schema module shipped with ai_edge_litert (falls back to tensorflow.lite's copy).
Only numpy and the schema module are needed, so this also works on a device with just ai-edge-litert.

MAC conventions match ``torch.utils.flop_counter`` (FLOPs / 2): only multiply-accumulates of
convolutions, fully-connected layers and matmuls are counted, biases, pooling, activations and
element-wise ops are not.
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoprune_edge.errors import ConversionError


def _schema():
    # imported on first use: the schema ships with ai_edge_litert (or tensorflow), both optional and slow to import
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:  # pragma: no cover - depends on the installed runtime
        try:
            from tensorflow.lite.python import schema_py_generated as s
        except ImportError as e:
            raise ConversionError(
                "no TFLite flatbuffer schema found; pip install ai-edge-litert"
            ) from e
    return s


_NAMES: dict[int, str] | None = None
_TYPES: dict[int, str] | None = None


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def schema_names() -> tuple[dict[int, str], dict[int, str]]:
    """(builtin operator code -> name, tensor type code -> name) from the schema, read once."""
    global _NAMES, _TYPES
    if _NAMES is None:
        s = _schema()
        _NAMES = _enum_names(s.BuiltinOperator)
        _TYPES = _enum_names(s.TensorType)
    return _NAMES, _TYPES  # type: ignore[return-value]


@dataclass
class TfliteOp:
    index: int
    name: str
    macs: int
    input_types: list[str]
    output_types: list[str]
    output_shape: list[int]


@dataclass
class TfliteCounts:
    macs: int
    ops: dict[str, int]  # op name -> number of ops
    op_names: list[str]  # in execution order (main subgraph)
    macs_by_op: dict[str, int] = field(default_factory=dict)
    per_op: list[TfliteOp] = field(default_factory=list)
    n_subgraphs: int = 1

    @property
    def mmacs(self) -> float:
        return self.macs / 1e6


def load_model(path: Path):
    """(schema module, flatbuffer Model) of a .tflite file; a one-line ConversionError if it is not one."""
    s = _schema()
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise ConversionError(f"cannot read TFLite file {path}: {e.strerror}") from e
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ConversionError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier); reconvert the model")
    model = s.Model.GetRootAs(buf, 0)
    if model.SubgraphsLength() < 1:
        raise ConversionError(f"{path} has no subgraph; reconvert the model")
    return s, model


def op_name(model, op, names: dict[int, str]) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    # Newer files store the builtin code in BuiltinCode; older ones only in DeprecatedBuiltinCode (< 127).
    bc = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
    name = names.get(bc, f"BUILTIN_{bc}")
    if name == "CUSTOM":
        cc = code.CustomCode()
        return cc.decode("utf-8", errors="replace") if cc else "CUSTOM"
    return name


# the old private name, still imported by converters/edgetpu.py and converters/tflite_metadata.py


def read_tflite_ops(path: Path) -> list[str]:
    """Op names of the main subgraph in execution order (custom ops by their custom code, e.g. 'FlexErf')."""
    names, _ = schema_names()
    _, model = load_model(path)
    g = model.Subgraphs(0)
    return [op_name(model, g.Operators(i), names) for i in range(g.OperatorsLength())]


def tensor_shape(g, idx: int) -> list[int]:
    """Shape of tensor `idx` of subgraph `g` ([] for an absent optional input, index -1)."""
    if idx < 0:
        return []
    t = g.Tensors(idx)
    return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []


def op_macs(s, g, op, name: str) -> int:
    """Multiply-accumulates of one operator (0 for ops that do none, see the module doc)."""
    ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
    outs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
    if not outs:
        return 0
    out = tensor_shape(g, outs[0])
    out_elems = int(np.prod(out)) if out else 0
    if name == "CONV_2D":  # filter [Cout, kh, kw, Cin/groups]
        w = tensor_shape(g, ins[1])
        return out_elems * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, Cout]
        w = tensor_shape(g, ins[1])
        return out_elems * w[1] * w[2]
    if name == "CONV_3D":  # filter [kd, kh, kw, Cin/groups, Cout]
        w = tensor_shape(g, ins[1])
        return out_elems * w[0] * w[1] * w[2] * w[3]
    if name == "FULLY_CONNECTED":  # weights [out, in]
        w = tensor_shape(g, ins[1])
        return out_elems * w[1]
    if name == "BATCH_MATMUL":
        a = tensor_shape(g, ins[0])
        adj_x = False
        opts = op.BuiltinOptions()
        if op.BuiltinOptionsType() == s.BuiltinOptions.BatchMatMulOptions and opts is not None:
            o = s.BatchMatMulOptions()
            o.Init(opts.Bytes, opts.Pos)
            adj_x = bool(o.AdjX())
        k = a[-2] if adj_x else a[-1]
        return out_elems * k
    if name == "TRANSPOSE_CONV":  # inputs: output_shape, filter [Cout, kh, kw, Cin], input
        w = tensor_shape(g, ins[1])
        x = tensor_shape(g, ins[2])
        # torch counts transposed conv as (input positions) x Cout x Cin/groups x kh x kw
        return int(np.prod(x[:-1])) * int(np.prod(w))
    return 0


def count_tflite_macs(path: Path) -> TfliteCounts:
    """MACs and op statistics of the main subgraph of a .tflite file."""
    names, types = schema_names()
    s, model = load_model(path)
    g = model.Subgraphs(0)
    per_op: list[TfliteOp] = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        name = op_name(model, op, names)
        try:
            macs = op_macs(s, g, op, name)
        except (IndexError, ValueError) as e:
            raise ConversionError(f"{path}: cannot read shapes of op {i} ({name}): {e}; reconvert the model") from e
        ins = [int(j) for j in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(j) for j in op.OutputsAsNumpy()] if op.OutputsLength() else []
        per_op.append(
            TfliteOp(
                index=i,
                name=name,
                macs=int(macs),
                input_types=[types.get(g.Tensors(j).Type(), "?") for j in ins if j >= 0],
                output_types=[types.get(g.Tensors(j).Type(), "?") for j in outs if j >= 0],
                output_shape=tensor_shape(g, outs[0]) if outs else [],
            )
        )
    macs_by_op: Counter[str] = Counter()
    for o in per_op:
        if o.macs:
            macs_by_op[o.name] += o.macs
    op_names = [o.name for o in per_op]
    return TfliteCounts(
        macs=sum(o.macs for o in per_op),
        ops=dict(Counter(op_names)),
        op_names=op_names,
        macs_by_op=dict(macs_by_op),
        per_op=per_op,
        n_subgraphs=int(model.SubgraphsLength()),
    )


def set_input_quantization(path: Path, scale: float, zero_point: int) -> None:
    """Rewrite the input tensor's quantisation of a quantised .tflite in place.

    Used to give a uint8 pixel input the exact scale 1 / zero point 0 an app feeds (camera bytes as they
    are): the converter derives the input's parameters from the calibration range, and the QUANTIZE op
    after the input requantises with whatever the input tensor says, so only values the calibration never
    saw (clipped anyway) are affected."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model(str(path))
    g = model.subgraphs[0]
    t = g.tensors[g.inputs[0]]
    if t.quantization is None or t.quantization.scale is None or len(t.quantization.scale) != 1:
        raise ConversionError(f"{path}: the input tensor is not per-tensor quantised; cannot set its scale")
    t.quantization.scale = np.array([scale], dtype=np.float32)
    t.quantization.zeroPoint = np.array([zero_point], dtype=np.int64)
    fu.write_model(model, str(path))


_CLAMPS = ("MINIMUM", "MAXIMUM", "RELU", "RELU6")


def drop_identity_clamps(path: Path) -> int:
    """Remove int8 clamp ops that cannot change a value, in place; how many were removed.

    The percentile-range recipe clamps activations in torch (int8_prep.clip_ranges); the converter writes each
    clamp as MINIMUM (+ RELU) ops sharing their input's quantisation, so the producer already saturates at the
    clamp's bounds, yet the ops stay, and XNNPACK runs no int8 MINIMUM: a pruned MobileNetV2 took 11.8 ms
    instead of 1.6 (benchmarks/results/host_speed_zen4_int8io.md). An op is dropped only where its input and
    output have the same scale and zero point and its bounds lie outside the input's representable range."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    names, types = schema_names()
    model = fu.read_model(str(path))
    g = model.subgraphs[0]
    keep, dropped = [], 0
    rename: dict[int, int] = {}
    for op in g.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(_builtin(code), "?")
        src = _identity_clamp_input(model, g, op, name, types) if name in _CLAMPS else None
        if src is None:
            keep.append(op)
            continue
        rename[int(op.outputs[0])] = rename.get(src, src)
        dropped += 1
    if not dropped:
        return 0
    for op in keep:
        op.inputs = np.array([rename.get(int(i), int(i)) for i in op.inputs], dtype=np.int32)
    g.outputs = np.array([rename.get(int(i), int(i)) for i in g.outputs], dtype=np.int32)
    g.operators = keep
    fu.write_model(model, str(path))
    return dropped


_QRANGE = {"INT8": (-128, 127), "UINT8": (0, 255)}


def _identity_clamp_input(model, g, op, name: str, types: dict[int, str]) -> int | None:
    """The input tensor of a clamp op that leaves every representable value unchanged, else None."""
    def params(t):
        q = t.quantization
        if q is None or q.scale is None or len(q.scale) != 1 or types.get(t.type) not in _QRANGE:
            return None
        return float(q.scale[0]), int(q.zeroPoint[0]), _QRANGE[types[t.type]]

    ins = [int(i) for i in op.inputs]
    live = [i for i in ins if model.buffers[g.tensors[i].buffer].data is None]
    if len(live) != 1 or len(op.outputs) != 1:
        return None
    x, y = g.tensors[live[0]], g.tensors[int(op.outputs[0])]
    px, py = params(x), params(y)
    if px is None or px != py:
        return None
    scale, zp, (qlo, qhi) = px
    lo, hi, half = (qlo - zp) * scale, (qhi - zp) * scale, scale / 2
    if name in ("RELU", "RELU6"):
        ok = lo >= -half and (name == "RELU" or hi <= 6 + half)
    else:
        const = [i for i in ins if i != live[0]]
        c = g.tensors[const[0]]
        pc = params(c)
        if pc is None:
            return None
        raw = np.frombuffer(bytes(model.buffers[c.buffer].data), dtype=np.int8 if pc[2][0] < 0 else np.uint8)
        vals = (raw.astype(np.float64) - pc[1]) * pc[0]
        ok = bool(vals.min() >= hi - half) if name == "MINIMUM" else bool(vals.max() <= lo + half)
    return live[0] if ok else None


def dequantize_pixel_input(src: Path, dst: Path) -> bool:
    """Write to ``dst`` the same file with its uint8 input widened to float32 by a DEQUANTIZE before the
    QUANTIZE to int8 that reads it; False (nothing written) where the file has no such input.

    XNNPACK runs DEQUANTIZE (uint8 -> float) and QUANTIZE (float -> int8) but not the direct uint8 -> int8
    QUANTIZE, which falls back to the interpreter's own kernel: on a Zen 4 a pruned MobileNetV2 ran 1.648 ms
    with it and 1.555 ms with the two delegated ops instead (pixel_path.py times both and keeps the faster).
    Pixel values 0..255 are exact in float, so the int8 values the network sees do not change."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    s = _schema()
    names, types = schema_names()
    model = fu.read_model(str(src))
    g = model.subgraphs[0]
    if len(g.inputs) != 1 or types.get(g.tensors[g.inputs[0]].type) != "UINT8":
        return False
    pixels = int(g.inputs[0])
    readers = [op for op in g.operators if pixels in (int(i) for i in op.inputs)]
    if len(readers) != 1:
        return False
    quant = readers[0]
    code = model.operatorCodes[quant.opcodeIndex]
    if names.get(_builtin(code)) != "QUANTIZE":
        return False
    wide = copy.deepcopy(g.tensors[pixels])
    wide.type, wide.quantization, wide.name = s.TensorType.FLOAT32, None, b"pixels_float32"
    wide.buffer = len(model.buffers)
    model.buffers.append(s.BufferT())
    g.tensors.append(wide)
    dq = s.OperatorT()
    dq.opcodeIndex = _opcode(model, s, s.BuiltinOperator.DEQUANTIZE, version=2)  # version 2: uint8 input
    dq.inputs = np.array([pixels], dtype=np.int32)
    dq.outputs = np.array([len(g.tensors) - 1], dtype=np.int32)
    quant.inputs = np.array([len(g.tensors) - 1 if int(i) == pixels else int(i) for i in quant.inputs], dtype=np.int32)
    g.operators.insert(0, dq)
    fu.write_model(model, str(dst))
    return True


def _opcode(model, s, builtin: int, *, version: int) -> int:
    """Index of the operator code for ``builtin`` (added, or raised to ``version`` if present)."""
    for i, code in enumerate(model.operatorCodes):
        if _builtin(code) == builtin:
            code.version = max(int(code.version), version)
            return i
    code = s.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _builtin(code) -> int:
    """An object-API operator code's builtin operator (newer files: builtinCode; older: deprecatedBuiltinCode)."""
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
