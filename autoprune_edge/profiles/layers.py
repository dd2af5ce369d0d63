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

How modules and aten ops are classified lives in torch_ops.py, the records in trace_records.py, and
:func:`fuse`, which groups layers into the kernels a TFLite/XNNPACK runtime runs, in fusion.py; their
public names stay importable from here.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import flop_registry

from .fusion import Kernel, consumers, fuse  # noqa: F401 (re-exported)
from .opclass import CONV_CLASSES, OP_CLASSES, conv_op_class  # noqa: F401 (re-exported)
from .torch_ops import (
    ACT_MODULES,
    aten_class,
    aten_fusable,
    aten_op,
    fusable_module,
    module_class,
    module_op,
)
from .trace_records import LayerInfo, TensorInfo, Trace

# Ops that read no activation data worth costing (creation, metadata).
_IGNORE_ATEN = {
    "zeros", "ones", "empty", "full", "arange", "scalar_tensor", "zeros_like", "ones_like",
    "empty_like", "full_like", "new_zeros", "new_ones", "new_empty", "new_full", "randn", "rand",
    "sym_size", "sym_numel", "sym_stride", "_local_scalar_dense", "item", "is_same_size", "empty_strided",
}
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
            op_class=module_class(module, macs),
            inputs=inputs,
            outputs=[],
            macs=macs,
            in_elements=in_elems,
        )
        in_ts = _tensors((args, kwargs))
        if (layer.op_class == "elementwise" and macs == 0 and len(outs) == 1 and not isinstance(module, ACT_MODULES)
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
        layer.fusable_act = layer.op_class == "act" and fusable_module(module)
        layer.folds_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        layer.op = module_op(module, layer.op_class)
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
        op_class = aten_class(name, args)
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
        layer.fusable_act = op_class == "act" and aten_fusable(name, args)
        layer.folds_bn = name in ("native_batch_norm", "_native_batch_norm_legit_no_training", "batch_norm")
        layer.op = layer.op or aten_op(name, args, op_class, [t for t in in_ts if _skey(t) not in self.param_storages])
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
