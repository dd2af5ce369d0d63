"""The torch model an int8 file is quantised from: BatchNorm folded, biases corrected for the weight
rounding the converter will do, and (for uint8 I/O) the input normalisation moved inside the network.

Why on the torch side: every later step (ONNX, onnx2tf, the TFLite quantiser) then sees the prepared
model, and parity is still judged against the user's unprepared torch model, so a recipe can only
ship when it brings the int8 file closer to what the user trained.

Bias correction is the empirical form of Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction" (ICCV 2019), sec. 4.2: TFLite rounds each conv's (BN-folded) weights
to int8 per output channel, symmetric, scale max|w|/127; the expected change of each output channel,
E[conv(x, W_q - W)] over the calibration images, is subtracted from that channel's bias.

Cross-layer equalisation follows the same paper's sec. 4.1 idea (ReLU(x / s) = ReLU(x) / s, so a channel
can be rescaled between two convs without changing the function), aimed at what TFLite's per-channel weights
leave: one scale/zero point for a whole activation tensor. After pruning and BatchNorm re-estimation, a few
channels of a tensor can span 0..6 while others live in 0..0.01 and round to nothing (MobileNetV2 pruned to
100M MACs: a depthwise conv at 1 - cosine 0.39). Each such channel is scaled up towards the tensor's largest
range and its consumer's input weights scaled down: free for a depthwise consumer (its weights are quantised
per channel), half-way (exponent 0.5, as SmoothQuant balances activations against weights) for a dense one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse


@dataclass(frozen=True)
class Int8Recipe:
    """One way to produce the int8 file; `export_tflite` tries them in order until one passes parity."""

    name: str
    bias_correction: bool = False
    equalisation: bool = False
    clip_percentile: float | None = None  # clamp activations to this calibration percentile range
    note: str = ""


# Cheapest first: a model that passes with plain PTQ costs no extra conversion.
RECIPES: tuple[Int8Recipe, ...] = (
    Int8Recipe("ptq", note="BatchNorm folded, min/max calibration, per-channel int8 weights"),
    Int8Recipe("ptq+bias-correction", bias_correction=True,
               note="as ptq, plus each conv's bias corrected for the expected int8 weight rounding error"),
    Int8Recipe("ptq+equalisation", equalisation=True,
               note="as ptq, after cross-layer equalisation of activation channel ranges between conv pairs"),
    Int8Recipe("ptq+equalisation+bias-correction", equalisation=True, bias_correction=True,
               note="cross-layer equalisation, then bias correction"),
    Int8Recipe("ptq+percentile-ranges", clip_percentile=99.99, bias_correction=True,
               note="activations clamped to their 0.01..99.99 percentile calibration range where that is at most "
                    "80 % of the min..max range (outliers no longer set the int8 scale), then bias correction"),
)


class PixelInput(nn.Module):
    """Takes raw pixels (0..255, NCHW float) and normalises them first, so an app can feed camera bytes:
    the per-channel normalisation cannot live in the input tensor's single scale/zero point."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        m = torch.tensor(mean, dtype=torch.float32)
        s = torch.tensor(std, dtype=torch.float32)
        # a 1x1 depthwise conv, not x * scale + shift: the converter writes it as one DEPTHWISE_CONV_2D that
        # XNNPACK runs in int8, where a broadcast MUL + ADD pair fell back to slow kernels (+1.6 ms on a
        # 224x224 image on the build host, benchmarks/results/host_speed.md)
        self.register_buffer("scale", (1.0 / (255.0 * s)).view(-1, 1, 1, 1))
        self.register_buffer("shift", -m / s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.conv2d(x, self.scale, self.shift, groups=self.scale.shape[0]))


def pad_with(x: torch.Tensor, fill: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``x`` (NCHW) padded by ``width`` columns each side and ``height`` rows each side of ``fill`` (broadcast to
    (1, C, 1, 1)), as concatenated borders: a Pad op has one value for every channel, and onnx2tf fuses a Pad in
    front of a MaxPool back into a -inf PADV2."""
    n, c, h, _ = x.shape
    fill = fill.to(x.dtype).reshape(1, -1, 1, 1)
    if width:
        side = fill.expand(n, c, h, width)
        x = torch.cat([side, x, side], 3)
    if height:
        side = fill.expand(n, c, height, x.shape[3])
        x = torch.cat([side, x, side], 2)
    return x


class PixelConv(nn.Module):
    """The network's first conv taking raw pixels: the normalisation folded into its weights and bias, and its
    zero padding done with each channel's mean pixel (what normalises to 0), so the function is unchanged.

    Why: PixelInput's 1x1 depthwise conv runs at full resolution on 3 channels that XNNPACK's int8 kernels pad
    to 16: +0.34 ms on a 224x224 MobileNetV2 (10 % of the dense int8 file, 18 % of a 100M-MAC build); folded,
    the file pays only the uint8 -> int8 QUANTIZE and two border concatenations (+0.12 ms, measured on the
    Zen 4 host). In the int8 file the border value rounds to a whole pixel level (at most half a level off)."""

    def __init__(self, conv: nn.Conv2d, mean: list[float], std: list[float]) -> None:
        super().__init__()
        m = torch.tensor(mean, dtype=torch.float32)
        s = torch.tensor(std, dtype=torch.float32)
        w = conv.weight.detach()
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                              bias=True)
        with torch.no_grad():  # conv((p / 255 - m) / s) = conv_{w / (255 s)}(p) - sum w m / s
            self.conv.weight.copy_(w / (255.0 * s).view(1, -1, 1, 1))
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
            self.conv.bias.copy_(bias - (w * (m / s).view(1, -1, 1, 1)).sum((1, 2, 3)))
        self.pad = (int(conv.padding[1]), int(conv.padding[0]))  # (left/right, top/bottom)
        self.register_buffer("fill", (255.0 * m).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad_with(x, self.fill, *self.pad))


def pixel_input(model: nn.Module, mean: list[float], std: list[float]) -> nn.Module:
    """``model`` taking 0..255 pixels: the normalisation folded into the first conv (PixelConv) where torch.fx
    shows the input feeding exactly one zero-padded, ungrouped Conv2d; else a PixelInput wrapper."""
    first = _only_input_conv(model, len(mean))
    if first is None:
        return PixelInput(model, mean, std)
    model = copy.deepcopy(model)
    parent, _, attr = first.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr,
            PixelConv(model.get_submodule(first), mean, std))
    return model


def _only_input_conv(model: nn.Module, channels: int) -> str | None:
    """The name of the Conv2d that alone consumes a GraphModule's single input, when it can be folded."""
    if not isinstance(model, fx.GraphModule):
        return None
    inputs = [n for n in model.graph.nodes if n.op == "placeholder"]
    users = list(inputs[0].users) if len(inputs) == 1 else []
    if len(users) != 1 or users[0].op != "call_module":
        return None
    if sum(n.op == "call_module" and n.target == users[0].target for n in model.graph.nodes) > 1:
        return None  # the same conv also runs elsewhere: its weights must stay
    conv = model.get_submodule(str(users[0].target))
    if (type(conv) is not nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros"
            or isinstance(conv.padding, str) or conv.in_channels != channels):
        return None
    return str(users[0].target)


def to_pixels(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """Normalised NCHW images back to 0..255 pixel values (what `pixel_input` models take)."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x * s + m) * 255.0


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy with every BatchNorm that directly follows a conv folded into it, and how many were.

    Uses torch.fx to find conv -> BN by data flow (not by module order); a model fx cannot trace is
    returned unchanged (0 folded): the ONNX export folds BatchNorm anyway, only bias correction then
    works on unfolded weights."""
    model = copy.deepcopy(model).eval()
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    try:
        fused = fuse(model, inplace=False)
    except Exception:  # noqa: BLE001 - fx cannot trace every model; folding is then left to the exporter
        return model, 0
    return fused, before - sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())


def quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """What TFLite's int8 quantiser makes of a conv/linear weight: symmetric, per output channel, 127 levels."""
    amax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = (amax / 127.0).view(-1, *([1] * (w.dim() - 1)))
    return torch.round(w / scale).clamp(-127, 127) * scale


@torch.no_grad()
def correct_biases(model: nn.Module, calib: torch.Tensor, batch_size: int = 32) -> int:
    """Subtract each conv/linear's expected output shift from int8 weight rounding (in place).

    The shifts are measured with float activations in one pass over ``calib``. Returns how many layers
    were corrected."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    sums: dict[nn.Module, torch.Tensor] = {}

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        dw = quantize_weight(mod.weight) - mod.weight
        if isinstance(mod, nn.Conv2d):
            y = nn.functional.conv2d(inp[0], dw, None, mod.stride, mod.padding, mod.dilation, mod.groups)
            d = y.sum(dim=(0, 2, 3)) / (y.shape[2] * y.shape[3])
        else:
            y = nn.functional.linear(inp[0], dw)
            d = y.reshape(y.shape[0], -1, y.shape[-1]).mean(1).sum(0)
        sums[mod] = sums.get(mod, 0) + d

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        model.eval()
        for i in range(0, len(calib), batch_size):
            model(calib[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    n = len(calib)
    for mod in layers:
        if mod not in sums:
            continue
        shift = sums[mod] / n
        if mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype))
        mod.bias.data -= shift.to(mod.bias.dtype)
    return len(sums)


_RELUS = (nn.ReLU, nn.ReLU6)
_RELU_FNS = (F.relu, torch.relu, F.relu6)
DENSE_EXPONENT = 0.5  # how far a dense consumer's input channels are equalised (1: fully, 0: not at all)
MIN_SCALE = 1e-3  # no channel is scaled up more than 1,000x (a dead channel is left alone)


def _is_relu(node: fx.Node, named: dict[str, nn.Module]) -> bool:
    """ReLU or ReLU6 (positively homogeneous up to its clip, see `equalise`)."""
    if node.op == "call_module":
        m = named[str(node.target)]
        return isinstance(m, _RELUS) or (isinstance(m, nn.Hardtanh) and m.min_val == 0.0)
    return node.op == "call_function" and node.target in _RELU_FNS


def _pairs(gm: fx.GraphModule) -> list[tuple[fx.Node, nn.Conv2d, nn.Conv2d]]:
    """(activation node, producer, consumer) for conv -> ReLU/ReLU6 -> conv chains nothing else reads."""
    named = dict(gm.named_modules())
    out = []
    for act in gm.graph.nodes:
        if not _is_relu(act, named) or len(act.users) != 1 or not isinstance(act.args[0], fx.Node):
            continue
        src, (dst,) = act.args[0], act.users
        a = named.get(str(src.target)) if src.op == "call_module" else None
        b = named.get(str(dst.target)) if dst.op == "call_module" else None
        if not (isinstance(a, nn.Conv2d) and isinstance(b, nn.Conv2d) and len(src.users) == 1):
            continue
        if dst.args[0] is not act or b.in_channels != a.out_channels:
            continue
        if b.groups == 1 or (b.groups == b.in_channels == b.out_channels):
            out.append((act, a, b))
    return out


class _Ranges(fx.Interpreter):
    """Runs the graph and keeps, per watched node, each channel's largest value."""

    def __init__(self, gm: fx.GraphModule, watch: set[fx.Node]) -> None:
        super().__init__(gm)
        self.watch = watch
        self.amax: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node):  # type: ignore[override]
        y = super().run_node(n)
        if n in self.watch:
            m = y.detach().transpose(0, 1).flatten(1).amax(1)
            self.amax[n] = m if n not in self.amax else torch.maximum(self.amax[n], m)
        return y


@torch.no_grad()
def equalise(model: nn.Module, calib: torch.Tensor, batch_size: int = 32) -> int:
    """Cross-layer equalisation of conv -> ReLU(6) -> conv chains, in place; returns how many chains.

    Channel i of the producer is divided by s_i = (r_i / R)^e (r_i: its largest activation on ``calib``, R:
    the largest over the tensor, e = 1 for a depthwise consumer, DENSE_EXPONENT for a dense one) and the
    consumer's input i multiplied by s_i. Exact for ReLU. For ReLU6 the clip moves to 6 s_i in the original
    units, which is >= r_i, and the rescaled tensor's int8 range (max_i r_i / s_i <= R <= 6) ends below the
    clip in every channel: nothing the quantised model can represent changes."""
    if not isinstance(model, fx.GraphModule):
        return 0
    pairs = _pairs(model)
    if not pairs:
        return 0
    rec = _Ranges(model, {act for act, _, _ in pairs})
    model.eval()
    for i in range(0, len(calib), batch_size):
        rec.run(calib[i:i + batch_size])
    for act, a, b in pairs:
        r = rec.amax[act].clamp_min(0)
        top = float(r.max())
        if top <= 0:
            continue
        e = 1.0 if b.groups > 1 else DENSE_EXPONENT
        s = (r / top).pow(e)
        s = torch.where(r > 0, s.clamp_min(MIN_SCALE), torch.ones_like(s))
        a.weight.div_(s.view(-1, 1, 1, 1).to(a.weight.dtype))
        if a.bias is not None:
            a.bias.div_(s.to(a.bias.dtype))
        if b.groups > 1:  # depthwise: input channel i is weight row i
            b.weight.mul_(s.view(-1, 1, 1, 1).to(b.weight.dtype))
        else:
            b.weight.mul_(s.view(1, -1, 1, 1).to(b.weight.dtype))
    return len(pairs)


_CLIPPABLE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Hardtanh)


class ClippedActivation(nn.Module):
    """An activation followed by a clamp to the range most of its calibration outputs fall in."""

    def __init__(self, act: nn.Module, lo: float, hi: float) -> None:
        super().__init__()
        self.act, self.lo, self.hi = act, lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.act(x), self.lo, self.hi)


@torch.no_grad()
def clip_ranges(model: nn.Module, calib: torch.Tensor, percentile: float = 99.99, batch_size: int = 32,
                min_gain: float = 0.8, sample: int = 200_000) -> int:
    """Clamp each activation module's output to its [100 - p, p] percentile range on ``calib`` where that
    range is at most ``min_gain`` of the full one, so a few outliers no longer set the int8 scale of the
    whole tensor (TFLite's converter calibrates plain min/max). Changes the float function only at those
    outliers; int8 parity decides whether it ships. Returns how many activations were clipped."""
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, _CLIPPABLE)]
    if not named:
        return 0
    seen: dict[str, list[torch.Tensor]] = {n: [] for n, _ in named}
    gen = torch.Generator().manual_seed(0)

    def keep(name: str):
        def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            flat = out.detach().float().flatten()
            if flat.numel() > sample:
                flat = flat[torch.randint(0, flat.numel(), (sample,), generator=gen)]
            seen[name].append(flat)
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in named]
    was = model.training
    model.eval()
    try:
        for i in range(0, len(calib), batch_size):
            model(calib[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    clipped = 0
    q = torch.tensor([1 - percentile / 100, percentile / 100])
    for name, mod in named:
        vals = torch.cat(seen[name])
        full_lo, full_hi = float(vals.min()), float(vals.max())
        lo, hi = (float(v) for v in torch.quantile(vals[:16_000_000], q))
        if full_hi - full_lo <= 0 or (hi - lo) > min_gain * (full_hi - full_lo):
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, ClippedActivation(mod, lo, hi))
        clipped += 1
    return clipped


class FinitePadMaxPool(nn.Module):
    """A padded max-pool that pads with a finite value instead of -inf.

    The converter writes MaxPool2d(padding=p) as PADV2 with the float minimum, then MAX_POOL_2D; PADV2 shares
    its input's quantisation, so the TFLite quantiser stretches the producer's int8 range down to -3.4e38:
    ResNet-18's stem conv got scale 1.3e36 (every activation 0) and XNNPACK refused to load the file. Padding
    with the least value the pool's input takes over the calibration images gives the same maxima on them
    (0 after a ReLU, exact for any input), and the range stays the activations' own."""

    def __init__(self, pool: nn.MaxPool2d, value: float) -> None:
        super().__init__()
        self.pool, self.value = pool, float(value)
        p = pool.padding if isinstance(pool.padding, tuple) else (pool.padding, pool.padding)
        self.pad = (int(p[1]), int(p[0]))  # (left/right, top/bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_with(x, x.new_full((1,), self.value), *self.pad)
        return F.max_pool2d(x, self.pool.kernel_size, self.pool.stride, 0, self.pool.dilation, self.pool.ceil_mode)


@torch.no_grad()
def finite_pool_padding(model: nn.Module, calib: torch.Tensor, batch_size: int = 32) -> int:
    """Replace every padded MaxPool2d (ceil_mode off) by a FinitePadMaxPool (in place); how many were."""
    pools = {name: m for name, m in model.named_modules() if isinstance(m, nn.MaxPool2d) and not m.ceil_mode
             and m.padding not in (0, (0, 0))}
    if not pools:
        return 0
    low = {name: float("inf") for name in pools}

    def hook(name):
        def record(_m, inputs, _out):
            low[name] = min(low[name], float(inputs[0].min()))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in pools.items()]
    try:
        was = model.training
        model.eval()
        for i in range(0, calib.shape[0], batch_size):
            model(calib[i:i + batch_size])
        model.train(was)
    finally:
        for h in handles:
            h.remove()
    for name, pool in pools.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, FinitePadMaxPool(pool, low[name]))
    return len(pools)


@dataclass
class PreparedModel:
    model: nn.Module
    folded_batchnorms: int
    corrected_layers: int
    equalised_pairs: int = 0
    clipped_activations: int = 0
    finite_pools: int = 0


def prepare_for_int8(model: nn.Module, recipe: Int8Recipe, calib: torch.Tensor) -> PreparedModel:
    """The model a recipe quantises (``calib`` in the model's own input units)."""
    folded, n_folded = fold_batchnorm(model)
    pools = finite_pool_padding(folded, calib)
    pairs = equalise(folded, calib) if recipe.equalisation else 0
    clipped = clip_ranges(folded, calib, recipe.clip_percentile) if recipe.clip_percentile else 0
    corrected = correct_biases(folded, calib) if recipe.bias_correction else 0
    return PreparedModel(folded, n_folded, corrected, pairs, clipped, pools)
