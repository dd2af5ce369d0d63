"""Synthetic ``.tflite`` networks written directly as flatbuffers (no torch, no TensorFlow, no converter).

``calibrate --target host`` without a measurements file builds these small networks, times them with
the LiteRT interpreter on this machine and refits the profile. Each network stresses one op class
(3×3 convs, 1×1 convs, depthwise convs, fully connected, pooling, element-wise adds, many tiny layers)
at channel counts that exercise the SIMD tile padding, so a least-squares fit can separate the
per-class efficiencies, the throughput and the per-kernel overhead. The rest add what those repeated
blocks lack and real backbones have: an MBConv block with SiLU and squeeze-excitation, layers at the
resolution extremes (112 px activations beyond L2; 7-14 px stages with hundreds of channels), and two
"pyramids" with stride-2 layers, resolutions falling from 112 to 7 and megabytes of weights. Each
addition lowered the error on real models in benchmarks/results/host_fidelity.md. fp32 and int8
(per-channel quantised, as the converter produces) are supported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np


@dataclass(frozen=True)
class Layer:
    kind: str  # conv | dw | fc | add | avgpool | mean | relu | logistic | hardswish | silu | se | cell
    cout: int = 0
    k: int = 1
    stride: int = 1


@dataclass(frozen=True)
class Net:
    name: str
    h: int
    w: int
    c: int
    layers: tuple[Layer, ...]


def suite(quick: bool = False) -> list[Net]:
    """The microbenchmark networks (≈0.1-8 ms each at fp32 on a desktop core)."""
    nets = [
        Net("conv3x3_c32_56", 56, 56, 32, tuple(Layer("conv", 32, 3) for _ in range(4))),
        Net("conv3x3_c48_56", 56, 56, 48, tuple(Layer("conv", 48, 3) for _ in range(3))),
        Net("conv1x1_c96_56", 56, 56, 96, tuple(Layer("conv", 96, 1) for _ in range(6))),
        Net("conv1x1_c40_28", 28, 28, 40, tuple(Layer("conv", 40, 1) for _ in range(8))),
        Net("dw3x3_c96_56", 56, 56, 96, tuple(Layer("dw", 96, 3) for _ in range(6))),
        Net("dw3x3_c144_28", 28, 28, 144, tuple(Layer("dw", 144, 3) for _ in range(6))),
        Net("fc_1280", 1, 1, 1280, tuple(Layer("fc", 1280) for _ in range(4))),
        Net("add_c96_56", 56, 56, 96, tuple(Layer("add") for _ in range(8))),
        Net("pool3x3_c96_56", 56, 56, 96, tuple(Layer("avgpool", 96, 3) for _ in range(6))),
        Net("logistic_c96_56", 56, 56, 96, tuple(Layer("logistic") for _ in range(8))),
        Net("hardswish_c96_56", 56, 56, 96, tuple(Layer("hardswish") for _ in range(8))),
        Net("tiny_c8_8", 8, 8, 8, tuple(Layer("conv", 8, 1) for _ in range(24))),
        Net("mixed_block_c64_28", 28, 28, 64, (Layer("conv", 192, 1), Layer("dw", 192, 3), Layer("conv", 64, 1),
                                               Layer("conv", 192, 1), Layer("dw", 192, 3), Layer("conv", 64, 1),
                                               Layer("mean"))),
        Net("mbconv_se_c40_28", 28, 28, 40, (Layer("conv", 240, 1), Layer("silu"), Layer("dw", 0, 5), Layer("silu"),
                                              Layer("se"), Layer("conv", 40, 1)) * 2),
        # the resolution extremes real backbones spend time at: 112 px stems (activations beyond L2) and
        # 7-14 px stages with hundreds of channels (megabyte weights, few rows)
        Net("pw_expand_c16_112", 112, 112, 16, (Layer("conv", 96, 1), Layer("conv", 16, 1)) * 2),
        Net("dw3x3_c96_112", 112, 112, 96, tuple(Layer("dw", 0, 3) for _ in range(4))),
        Net("dw3x3_c576_14", 14, 14, 576, tuple(Layer("dw", 0, 3) for _ in range(4))),
        Net("pw_c320_7", 7, 7, 320, (Layer("conv", 1920, 1), Layer("conv", 320, 1)) * 2),
        Net("pyramid_dw_224", 224, 224, 3, _pyramid_dw()),
        Net("pyramid_conv_112", 112, 112, 3, _pyramid_conv()),
        # the small-tensor regime (CIFAR-size nets, NAS cells, heavily pruned layers): 8-32 px activations
        # of 16-64 channels, where per-kernel dispatch, standalone activations, 3x3 pools and adds that
        # stay in cache weigh as much as the MACs
        *_small_tensor_nets(),
    ]
    if quick:
        keep = {"conv3x3_c32_56", "conv1x1_c96_56", "dw3x3_c96_56", "add_c96_56", "tiny_c8_8", "mixed_block_c64_28"}
        nets = [n for n in nets if n.name in keep]
    return nets


def _small_tensor_nets() -> list[Net]:
    nets = []
    for side, c in ((32, 16), (16, 32), (8, 64)):
        nets += [
            Net(f"small_conv3x3_c{c}_{side}", side, side, c, tuple(Layer("conv", c, 3) for _ in range(8))),
            Net(f"small_conv1x1_c{c}_{side}", side, side, c, tuple(Layer("conv", c, 1) for _ in range(16))),
            Net(f"small_pool3x3_c{c}_{side}", side, side, c, tuple(Layer("avgpool", c, 3) for _ in range(16))),
            Net(f"small_add_relu_c{c}_{side}", side, side, c, (Layer("add"), Layer("relu")) * 12),
            # a cell-like mix: a ReLU feeding a 3x3 and a 1x1 conv, a 3x3 pool, the three summed
            Net(f"small_cell_c{c}_{side}", side, side, c, tuple(Layer("cell", c) for _ in range(5))),
        ]
    return nets


def _pyramid_dw() -> tuple[Layer, ...]:
    """A depthwise-separable backbone (MobileNet-v1 layout at width 0.5, ≈150M MACs, 0.8M weights)."""
    layers = [Layer("conv", 16, 3, 2)]
    for cout, stride in ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1), (512, 2),
                         (512, 1)):
        layers += [Layer("dw", 0, 3, stride), Layer("conv", cout, 1)]
    return tuple(layers + [Layer("mean"), Layer("fc", 1000)])


def _pyramid_conv() -> tuple[Layer, ...]:
    """A plain 3×3 backbone (VGG/ResNet-like stages 32-256 wide, 56 → 7, ≈300M MACs, 2.3M weights)."""
    layers = [Layer("conv", 32, 3, 2)]
    for cout in (32, 64, 128, 256):
        layers += [Layer("conv", cout, 3, 1 if cout == 32 else 2), Layer("conv", cout, 3)]
    return tuple(layers + [Layer("mean"), Layer("fc", 1000)])


class _Builder:
    def __init__(self, precision: str, seed: int = 0):
        # lazy: ai-edge-litert's generated schema is a heavy optional import that calibrate needs only here
        from ai_edge_litert import schema_py_generated as s

        self.s = s
        self.precision = precision
        self.rng = np.random.default_rng(seed)
        self.tensors: list = []
        self.buffers: list = [s.BufferT()]
        self.ops: list = []
        self.codes: dict[int, int] = {}
        self.codes_list: list = []

    # -- tensors
    def _quant(self, scale, zero_point, dim: int = 0):
        q = self.s.QuantizationParametersT()
        q.scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
        q.zeroPoint = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
        q.quantizedDimension = dim
        return q

    def tensor(self, shape, dtype: str, data: np.ndarray | None = None, quant=None) -> int:
        s = self.s
        t = s.TensorT()
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = {"f32": s.TensorType.FLOAT32, "i8": s.TensorType.INT8, "i32": s.TensorType.INT32}[dtype]
        t.name = f"t{len(self.tensors)}".encode()
        if data is not None:
            b = s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        if quant is not None:
            t.quantization = quant
        self.tensors.append(t)
        return len(self.tensors) - 1

    def act(self, shape) -> int:
        if self.precision == "int8":
            return self.tensor(shape, "i8", quant=self._quant(0.05, 0))
        return self.tensor(shape, "f32")

    def weights(self, shape, per_channel_dim: int) -> int:
        w = self.rng.standard_normal(shape).astype(np.float32) * 0.05
        if self.precision == "int8":
            n = shape[per_channel_dim]
            return self.tensor(shape, "i8", (np.clip(w * 127 / 0.2, -127, 127)).astype(np.int8),
                               quant=self._quant(np.full(n, 0.2 / 127), np.zeros(n), per_channel_dim))
        return self.tensor(shape, "f32", w)

    def bias(self, n: int) -> int:
        if self.precision == "int8":
            return self.tensor([n], "i32", np.zeros(n, dtype=np.int32),
                               quant=self._quant(np.full(n, 0.05 * 0.2 / 127), np.zeros(n)))
        return self.tensor([n], "f32", np.zeros(n, dtype=np.float32))

    # -- operators
    def op(self, code: int, inputs, outputs, opt_type=0, opts=None) -> None:
        s = self.s
        if code not in self.codes:
            B = s.BuiltinOperator
            # int8 kernels are registered under higher op versions (per-channel quantisation)
            int8_versions = {B.CONV_2D: 3, B.DEPTHWISE_CONV_2D: 3, B.FULLY_CONNECTED: 4, B.ADD: 2,
                             B.AVERAGE_POOL_2D: 2, B.MEAN: 2, B.MUL: 2, B.LOGISTIC: 2, B.RELU: 2}
            oc = s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = int8_versions.get(code, 1) if self.precision == "int8" else 1
            self.codes[code] = len(self.codes_list)
            self.codes_list.append(oc)
        o = s.OperatorT()
        o.opcodeIndex = self.codes[code]
        o.inputs = np.asarray(inputs, dtype=np.int32)
        o.outputs = np.asarray(outputs, dtype=np.int32)
        o.builtinOptionsType = opt_type
        o.builtinOptions = opts
        self.ops.append(o)

    def _conv(self, x: int, cin: int, y: int, cout: int, k: int, stride: int, act: int) -> None:
        s = self.s
        o = s.Conv2DOptionsT()
        o.padding, o.strideH, o.strideW, o.fusedActivationFunction = s.Padding.SAME, stride, stride, act
        o.dilationHFactor = o.dilationWFactor = 1
        self.op(s.BuiltinOperator.CONV_2D, [x, self.weights([cout, k, k, cin], 0), self.bias(cout)], [y],
                s.BuiltinOptions.Conv2DOptions, o)

    def _mean(self, x: int, y: int, keep_dims: bool) -> None:
        s = self.s
        axes = self.tensor([2], "i32", np.array([1, 2], dtype=np.int32))
        o = s.ReducerOptionsT()
        o.keepDims = keep_dims
        self.op(s.BuiltinOperator.MEAN, [x, axes], [y], s.BuiltinOptions.ReducerOptions, o)

    def _mul(self, a: int, b: int, out: int) -> None:
        s = self.s
        o = s.MulOptionsT()
        o.fusedActivationFunction = s.ActivationFunctionType.NONE
        self.op(s.BuiltinOperator.MUL, [a, b], [out], s.BuiltinOptions.MulOptions, o)

    def build(self, net: Net) -> bytes:
        s = self.s
        B, A, P = s.BuiltinOperator, s.ActivationFunctionType, s.Padding
        h, w, c = net.h, net.w, net.c
        x = self.act([1, h, w, c] if net.h > 1 or net.w > 1 else [1, c])
        inp = x
        for L in net.layers:
            if L.kind in ("conv", "dw"):
                h, w = -(-h // L.stride), -(-w // L.stride)  # SAME padding
            if L.kind == "conv":
                y = self.act([1, h, w, L.cout])
                self._conv(x, c, y, L.cout, L.k, L.stride, A.RELU)
                c = L.cout
            elif L.kind == "dw":
                y = self.act([1, h, w, c])
                o = s.DepthwiseConv2DOptionsT()
                o.padding, o.strideH, o.strideW, o.depthMultiplier = P.SAME, L.stride, L.stride, 1
                o.fusedActivationFunction, o.dilationHFactor, o.dilationWFactor = A.RELU6, 1, 1
                self.op(B.DEPTHWISE_CONV_2D, [x, self.weights([1, L.k, L.k, c], 3), self.bias(c)], [y],
                        s.BuiltinOptions.DepthwiseConv2DOptions, o)
            elif L.kind == "fc":
                y = self.act([1, L.cout])
                o = s.FullyConnectedOptionsT()
                o.fusedActivationFunction = A.NONE
                self.op(B.FULLY_CONNECTED, [x, self.weights([L.cout, c], 0), self.bias(L.cout)], [y],
                        s.BuiltinOptions.FullyConnectedOptions, o)
                c = L.cout
            elif L.kind == "add":
                y = self.act([1, h, w, c])
                o = s.AddOptionsT()
                o.fusedActivationFunction = A.NONE
                self.op(B.ADD, [x, inp], [y], s.BuiltinOptions.AddOptions, o)
            elif L.kind == "relu":
                y = self.act([1, h, w, c])
                self.op(B.RELU, [x], [y])
            elif L.kind == "cell":  # relu(x) -> conv3x3 + conv1x1 ; avgpool3x3(x) ; sum of the three
                r = self.act([1, h, w, c])
                self.op(B.RELU, [x], [r])
                a, b, p = self.act([1, h, w, c]), self.act([1, h, w, c]), self.act([1, h, w, c])
                self._conv(r, c, a, c, 3, 1, A.NONE)
                self._conv(r, c, b, c, 1, 1, A.NONE)
                o = s.Pool2DOptionsT()
                o.padding, o.strideH, o.strideW, o.filterHeight, o.filterWidth = P.SAME, 1, 1, 3, 3
                o.fusedActivationFunction = A.NONE
                self.op(B.AVERAGE_POOL_2D, [x], [p], s.BuiltinOptions.Pool2DOptions, o)
                ab, y = self.act([1, h, w, c]), self.act([1, h, w, c])
                for lhs, rhs, out in ((a, b, ab), (ab, p, y)):
                    o = s.AddOptionsT()
                    o.fusedActivationFunction = A.NONE
                    self.op(B.ADD, [lhs, rhs], [out], s.BuiltinOptions.AddOptions, o)
            elif L.kind in ("logistic", "hardswish"):
                y = self.act([1, h, w, c])
                self.op(B.LOGISTIC if L.kind == "logistic" else B.HARD_SWISH, [x], [y])
            elif L.kind == "avgpool":
                y = self.act([1, h, w, c])
                o = s.Pool2DOptionsT()
                o.padding, o.strideH, o.strideW, o.filterHeight, o.filterWidth = P.SAME, 1, 1, L.k, L.k
                o.fusedActivationFunction = A.NONE
                self.op(B.AVERAGE_POOL_2D, [x], [y], s.BuiltinOptions.Pool2DOptions, o)
            elif L.kind == "silu":  # x * sigmoid(x), as converters emit SiLU / Swish
                sig = self.act([1, h, w, c])
                self.op(B.LOGISTIC, [x], [sig])
                y = self.act([1, h, w, c])
                self._mul(x, sig, y)
            elif L.kind == "se":  # squeeze-excitation: mean -> 1x1 (c/4, ReLU) -> 1x1 (c) -> sigmoid -> x * s
                z = self.act([1, 1, 1, c])
                self._mean(x, z, keep_dims=True)
                zc = c
                for cout, act in ((max(1, c // 4), A.RELU), (c, A.NONE)):
                    zo = self.act([1, 1, 1, cout])
                    self._conv(z, zc, zo, cout, 1, 1, act)
                    z, zc = zo, cout
                gate = self.act([1, 1, 1, c])
                self.op(B.LOGISTIC, [z], [gate])
                y = self.act([1, h, w, c])
                self._mul(x, gate, y)
            elif L.kind == "mean":
                y = self.act([1, c])
                self._mean(x, y, keep_dims=False)
                h = w = 1
            else:
                raise ValueError(L.kind)
            x = y
        sg = s.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.ops
        sg.inputs, sg.outputs = np.array([inp], dtype=np.int32), np.array([x], dtype=np.int32)
        sg.name = net.name.encode()
        m = s.ModelT()
        m.version = 3
        m.operatorCodes, m.subgraphs, m.buffers = self.codes_list, [sg], self.buffers
        m.description = b"autoprune-edge microbenchmark"
        fb = flatbuffers.Builder(1024)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())


#: layer kinds that carry weights (what makes a network an int8 one in a converted model)
WEIGHTED = frozenset({"conv", "dw", "fc", "se", "cell"})


def write_suite(out_dir: str | Path, precisions=("fp32",), quick: bool = False) -> list[Path]:
    """Write every microbenchmark network as ``<name>_<precision>.tflite``; returns the paths.

    int8 gets only the networks with a weighted layer: int8 networks of a pool, an ADD or an activation
    alone ran 1.6-66x slower than their fp32 twins on a Zen 4 (a standalone HARD_SWISH 66x, a 3x3 average
    pool 10-14x, the interpreter's own kernels), which one int8 efficiency per op class cannot describe
    beside the fused convolutions: with them the int8 fit missed the suite by 169 % on average, without
    them by 4 %, and it predicted a converted int8 MobileNetV2 within 8 %."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in precisions:
        for net in suite(quick):
            if p == "int8" and not any(layer.kind in WEIGHTED for layer in net.layers):
                continue
            path = out_dir / f"{net.name}_{p}.tflite"
            path.write_bytes(_Builder(p).build(net))
            paths.append(path)
    return paths
