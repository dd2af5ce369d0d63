"""Edge TPU readiness of a full-integer .tflite file, without the Edge TPU compiler.

``edgetpu_compiler`` (x86-64 Debian only, not pip-installable) maps ops to the TPU from the start of
the graph until the first op it cannot map; that op and *everything after it* run on the CPU, because
the compiler supports one TPU subgraph only (google-coral/edgetpu#342). This check predicts that split
from the file itself so a user sees, before buying or compiling, which op breaks the model:

* ops outside the supported-operations table below;
* TRANSPOSE (rejected in practice: google-coral/edgetpu #242, #274, #433), GATHER_ND (#720) and any op
  on a 5-D tensor (the TPU handles at most 4-D, and only the 3 innermost dimensions may exceed 1);
* any op whose inputs/outputs are not 8-bit (int32 biases excepted): the TPU runs only quantised
  8-bit arithmetic, so float ops and DEQUANTIZE stay on the CPU;
* more than one subgraph;
* parameters (constant tensors) larger than the on-chip SRAM the compiler can cache them in: about
  8 MB in total, of which ~7 MiB are usable for parameters (a compile log shows 6.03 MiB used +
  1.21 MiB remaining; research/anchors.md §4.3). Larger models still run, streaming weights from host
  memory on every inference, which is much slower.

The supported-operations list is the table "Supported operations" on coral.ai/docs/edgetpu/models-intro
("TensorFlow models on the Edge TPU"), written here **from memory and a secondary copy of that table**
(the Axis ARTPEC-7 "supported ops" page, which embeds an Edge TPU; developer.axis.com), not from a fresh
read of coral.ai, which could not be browsed while writing this. Entries marked uncertain below are
reported as warnings, not as CPU fallbacks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .tflite_graph import count_tflite_macs, load_model

#: Ops the Edge TPU compiler maps (TFLite builtin names; coral.ai "Supported operations" table, from
#: memory + developer.axis.com ARTPEC-7 copy). Most carry restrictions (e.g. no fused activation on pools,
#: MEAN only over x/y, FULLY_CONNECTED with 1-D output) that this static check does not model.
EDGETPU_SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM",
    "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN",
    "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
    "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE_CONV",
})
#: In the table of newer compiler versions as far as we remember, but not confirmed: warn only.
EDGETPU_UNCERTAIN_OPS = frozenset({"HARD_SWISH", "PADV2", "MIRROR_PAD", "SPLIT_V"})
#: Ops known to fall back to the CPU even though some docs list them (see module docstring).
EDGETPU_KNOWN_CPU_OPS = frozenset({"TRANSPOSE", "GATHER_ND", "GATHER", "DEQUANTIZE"})
#: Parameter cache the compiler can use on the chip (bytes): ~7 MiB of the ~8 MB SRAM.
EDGETPU_PARAM_SRAM_BYTES = 7 * 1024 * 1024
_OK_TYPES = {"INT8", "UINT8", "INT32"}


@dataclass
class EdgeTpuIssue:
    op_index: int
    op: str
    reason: str


@dataclass
class EdgeTpuReport:
    ready: bool  # every op maps, weights fit in SRAM, one subgraph
    n_ops: int
    ops_on_tpu: int  # ops before the first CPU op (the compiler stops mapping there)
    macs_on_tpu_fraction: float  # share of the graph's MACs in those ops
    first_cpu_op: str | None
    issues: list[EdgeTpuIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    parameter_bytes: int = 0
    sram_bytes: int = EDGETPU_PARAM_SRAM_BYTES
    fits_sram: bool = True
    n_subgraphs: int = 1
    source: str = ("supported-op list: coral.ai/docs/edgetpu/models-intro 'Supported operations' (from memory "
                   "and the developer.axis.com ARTPEC-7 copy); static check, not the Edge TPU compiler")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EdgeTpuReport:
        """Read back what ``to_dict`` wrote (a saved model card)."""
        return cls(**{**d, "issues": [EdgeTpuIssue(**i) for i in d.get("issues", [])]})

    def summary(self) -> str:
        if self.ready:
            return (f"Edge TPU ready: all {self.n_ops} ops map, {self.parameter_bytes / 2**20:.2f} MiB of "
                    f"parameters fit the ~{self.sram_bytes / 2**20:.0f} MiB on-chip cache")
        parts = []
        if self.first_cpu_op:
            parts.append(f"from op {self.ops_on_tpu} ({self.first_cpu_op}) on, {self.n_ops - self.ops_on_tpu} of "
                         f"{self.n_ops} ops run on the CPU ({100 * (1 - self.macs_on_tpu_fraction):.0f}% of MACs)")
        if not self.fits_sram:
            parts.append(f"{self.parameter_bytes / 2**20:.2f} MiB of parameters exceed the ~"
                         f"{self.sram_bytes / 2**20:.0f} MiB on-chip cache (weights stream from host memory)")
        if self.n_subgraphs > 1:
            parts.append(f"{self.n_subgraphs} subgraphs (the compiler maps only the first)")
        return "not Edge TPU ready: " + "; ".join(parts)


def _parameter_bytes(path: Path) -> int:
    """Bytes of constant tensors (weights, biases) in the main subgraph."""
    _, model = load_model(path)
    g = model.Subgraphs(0)
    seen: set[int] = set()
    total = 0
    for i in range(g.TensorsLength()):
        b = g.Tensors(i).Buffer()
        if b <= 0 or b in seen or b >= model.BuffersLength():
            continue
        seen.add(b)
        buf = model.Buffers(b)
        n = buf.DataLength() or int(buf.Size() or 0)
        total += int(n)
    return total


def check_edgetpu(path: Path, *, sram_bytes: int = EDGETPU_PARAM_SRAM_BYTES) -> EdgeTpuReport:
    """Predict how the Edge TPU compiler would split this .tflite file (see the module docstring)."""
    counts = count_tflite_macs(path)
    issues: list[EdgeTpuIssue] = []
    warnings: list[str] = []
    for op in counts.per_op:
        reasons = []
        if op.name in EDGETPU_KNOWN_CPU_OPS:
            reasons.append(f"{op.name} is not mapped to the Edge TPU")
        elif op.name in EDGETPU_UNCERTAIN_OPS:
            warnings.append(f"op {op.index} {op.name}: may not be supported by older compilers (unverified)")
        elif op.name not in EDGETPU_SUPPORTED_OPS:
            reasons.append(f"{op.name} is not in the Edge TPU supported-operations table")
        bad = sorted({t for t in op.input_types + op.output_types if t not in _OK_TYPES})
        if bad:
            reasons.append(f"non-8-bit tensors ({', '.join(bad)})")
        if len(op.output_shape) > 4:
            reasons.append(f"{len(op.output_shape)}-D tensor (the Edge TPU handles at most 4-D)")
        elif sum(d > 1 for d in op.output_shape) > 3:
            reasons.append(f"tensor {op.output_shape} has more than 3 dimensions larger than 1")
        if reasons:
            issues.append(EdgeTpuIssue(op.index, op.name, "; ".join(reasons)))
    first = issues[0] if issues else None
    on_tpu = first.op_index if first else len(counts.per_op)
    macs_tpu = sum(o.macs for o in counts.per_op[:on_tpu])
    params = _parameter_bytes(path)
    fits = params <= sram_bytes
    return EdgeTpuReport(
        ready=not issues and fits and counts.n_subgraphs == 1,
        n_ops=len(counts.per_op),
        ops_on_tpu=on_tpu,
        macs_on_tpu_fraction=float(macs_tpu / counts.macs) if counts.macs else float(first is None),
        first_cpu_op=f"{first.op} (op {first.op_index}): {first.reason}" if first else None,
        issues=issues,
        warnings=warnings,
        parameter_bytes=params,
        sram_bytes=sram_bytes,
        fits_sram=fits,
        n_subgraphs=counts.n_subgraphs,
    )


def edgetpu_sram_bytes(target) -> int:
    """The target profile's on-chip parameter cache when it states one, else the ~7 MiB default."""
    v = getattr(getattr(target, "accelerator", None), "param_cache_bytes", None)
    return int(v) if v else EDGETPU_PARAM_SRAM_BYTES


def is_edgetpu_target(target) -> bool:
    """Whether a target profile describes an Edge TPU (by its description/runtime/device text, not its name)."""
    texts = [getattr(target, "description", ""), getattr(getattr(target, "runtime", None), "name", ""),
             getattr(getattr(target, "device", None), "accelerator", "") or "",
             getattr(getattr(target, "accelerator", None), "name", "") or ""]
    blob = " ".join(str(t) for t in texts).lower()
    return "edge tpu" in blob or "edgetpu" in blob


__all__ = ["EDGETPU_SUPPORTED_OPS", "EDGETPU_PARAM_SRAM_BYTES", "EdgeTpuReport", "check_edgetpu", "is_edgetpu_target"]
