"""Where does a converted model stop computing what its source computes?

Parity says *that* an artifact's outputs differ; this module says *where*, so a failing build points at
a layer instead of at a 200-layer network. It runs the reference and the converted model on the same
input with every intermediate tensor exposed and walks the reference layers in execution order:

* torch -> ONNX: forward hooks on torch's leaf modules vs every ONNX node output (the graph is
  rewritten to expose them and run in onnxruntime with graph optimisations off);
* ONNX -> TFLite: every ONNX node output vs every TFLite op output (LiteRT with
  ``experimental_preserve_all_tensors`` and without the XNNPACK delegate, whose internal tensors cannot
  be read). 4-D TFLite tensors are compared both as stored and transposed from NHWC to NCHW, because
  onnx2tf moves most, but not all, tensors to channels-last.

Tensors are matched by shape and order, not by name (exporters rename freely). A reference layer
*matches* when some not-yet-passed tensor of the same shape in the converted graph agrees within the
tolerance. Layers that legitimately have no counterpart (a conv whose BatchNorm was folded into it, a
conv whose ReLU was fused) are unmatched too, but the very next layer matches again; so the first
divergence is the first unmatched layer whose next comparable layer is unmatched as well (or which is
the last one). When BatchNorm was folded into a conv, the two cannot be told apart and the message
says so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from autoprune_edge.errors import ConversionError

from .litert import dequantize, input_layout, quantize


@dataclass
class Tap:
    """One intermediate tensor: where it comes from and its value (float32; NCHW for 4-D)."""

    label: str
    kind: str
    value: np.ndarray
    views: list[np.ndarray] = field(default_factory=list)  # layouts it may be compared in

    def __post_init__(self) -> None:
        if not self.views:
            self.views = [self.value]


@dataclass
class Divergence:
    stage: str  # which conversion step is blamed
    layer: str | None  # first diverging layer of the reference graph (torch module or ONNX node)
    layer_type: str | None
    closest: str | None  # the converted graph's tensor that came closest to it
    closest_type: str | None
    error: float | None  # rel error (float) or 1 - cosine (quantised) of the closest tensor
    metric: str
    compared: int  # reference layers that had a same-shape tensor to compare with
    matched: int  # of which matched
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def described(self) -> dict:
        """``to_dict`` plus the one-line summary, as artifacts carry it."""
        return {**self.to_dict(), "summary": self.summary()}

    def summary(self) -> str:
        """One line for an error message."""
        if self.layer is None:
            return f"{self.stage}: {self.note or 'no single layer could be blamed'}"
        err = "" if self.error is None else f", {self.metric} {self.error:.3g}"
        closest = f" (closest {self.closest_type} '{self.closest}'{err})" if self.closest else ""
        return f"{self.stage}: first diverging layer '{self.layer}' ({self.layer_type}){closest}" + (
            f"; {self.note}" if self.note else "")


def best_effort(locate: Callable[[], dict]) -> dict:
    """Run a divergence search; its own failure must not hide the parity failure it explains."""
    try:
        return locate()
    except Exception as e:  # noqa: BLE001 - diagnostics are best effort
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return {"summary": f"could not localise the divergence ({type(e).__name__}: {msg})", "layer": None}


# ------------------------------------------------------------------------------------------- metrics
def rel_error(ref: np.ndarray, got: np.ndarray) -> float:
    """max |ref - got| / max |ref| (0 when both are all zero)."""
    d = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0
    s = float(np.max(np.abs(ref))) if ref.size else 0.0
    if not math.isfinite(d):
        return math.inf
    return d / s if s > 0 else (0.0 if d == 0 else math.inf)


def cosine_gap(ref: np.ndarray, got: np.ndarray) -> float:
    """1 - cosine similarity of the flattened tensors (0 = same direction)."""
    a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 0.0
    if na == 0 or nb == 0:
        return 1.0
    return float(1.0 - np.dot(a, b) / (na * nb))


# ----------------------------------------------------------------------------------------- collectors
def torch_taps(model, x: np.ndarray) -> list[Tap]:
    """Outputs of every leaf module, in call order (a module called twice appears twice, '#2')."""
    taps: list[Tap] = []
    calls: dict[str, int] = {}
    handles = []

    def hook(name: str, kind: str):
        def fn(_m, _inp, out):
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                calls[name] = calls.get(name, 0) + 1
                label = name if calls[name] == 1 else f"{name}#{calls[name]}"
                taps.append(Tap(label, kind, out.detach().float().cpu().numpy().copy()))
        return fn

    for name, mod in model.named_modules():
        if name and not any(True for _ in mod.children()):
            handles.append(mod.register_forward_hook(hook(name, type(mod).__name__)))
    try:
        with torch.no_grad():
            model.eval()(torch.as_tensor(np.asarray(x, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    return taps


def onnx_taps(onnx_path: Path, x: np.ndarray) -> list[Tap]:
    """Every float node output of the ONNX graph, in node order, computed by onnxruntime."""

    m = onnx.load(str(onnx_path))
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
        vi = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    except Exception:  # noqa: BLE001 - shapes are a nicety here
        vi = {}
    existing = {o.name for o in m.graph.output}
    node_of: dict[str, tuple[str, str]] = {}
    for i, node in enumerate(m.graph.node):
        if node.op_type == "Constant" or not node.output or not node.output[0]:
            continue
        out = node.output[0]
        t = vi.get(out)
        if t is not None and t.type.tensor_type.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            continue
        node_of[out] = (node.name or f"{node.op_type}_{i}", node.op_type)
        if out not in existing:
            m.graph.output.append(t if t is not None else helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    vals = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})
    by_name = dict(zip(names, vals))
    return [Tap(label, kind, np.asarray(by_name[out], dtype=np.float32))
            for out, (label, kind) in node_of.items() if out in by_name]


def tflite_taps(tflite_path: Path, x_nchw: np.ndarray) -> list[Tap]:
    """Every op output of a .tflite graph (dequantised), computed by LiteRT without delegates."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # optional runtime, loaded on use

    try:
        it = Interpreter(model_path=str(tflite_path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ConversionError(f"LiteRT cannot load {tflite_path}: {str(e).splitlines()[0][:200]}") from e
    inp = it.get_input_details()[0]
    x = np.asarray(x_nchw, dtype=np.float32)
    if input_layout([int(v) for v in inp["shape"]], x.shape) == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    it.set_tensor(inp["index"], np.ascontiguousarray(quantize(x, inp)))
    it.invoke()
    details = {d["index"]: d for d in it.get_tensor_details()}
    taps: list[Tap] = []
    for op in it._get_ops_details():  # noqa: SLF001 - the public API has no per-op view
        outs = [int(i) for i in op["outputs"] if int(i) >= 0]
        if not outs or outs[0] not in details:
            continue
        d = details[outs[0]]
        try:
            v = dequantize(np.asarray(it.get_tensor(outs[0])).copy(), d)
        except ValueError:  # tensor not readable (e.g. freed scratch)
            continue
        if not np.issubdtype(v.dtype, np.floating):
            continue
        views = [v]
        if v.ndim == 4:
            views.append(np.ascontiguousarray(v.transpose(0, 3, 1, 2)))
        elif v.ndim == 3:
            views.append(np.ascontiguousarray(v.transpose(0, 2, 1)))
        taps.append(Tap(f"{op['op_name']} #{op['index']} -> {d['name']}", op["op_name"], v, views))
    return taps


# ------------------------------------------------------------------------------------------ matching
@dataclass
class _Row:
    tap: Tap
    comparable: bool
    ok: bool
    best_err: float
    best: Tap | None


def _align(refs: list[Tap], cands: list[Tap], err: Callable[[np.ndarray, np.ndarray], float],
           tol: float) -> list[_Row]:
    """Greedy in-order alignment: each reference layer takes the first later candidate within tol."""
    rows: list[_Row] = []
    j0 = 0
    for r in refs:
        best_err, best, hit = math.inf, None, None
        comparable = False
        for j in range(j0, len(cands)):
            for v in cands[j].views:
                if v.shape != r.value.shape:
                    continue
                comparable = True
                e = err(r.value, v)
                if e < best_err:
                    best_err, best = e, cands[j]
                if e <= tol:
                    hit = j
                    break
            if hit is not None:
                break
        if hit is not None:
            j0 = hit
        rows.append(_Row(r, comparable, hit is not None, best_err, best))
    return rows


def _first_divergence(rows: list[_Row]) -> int | None:
    """Index into rows of the first unmatched comparable layer whose next comparable layer fails too."""
    comp = [i for i, r in enumerate(rows) if r.comparable]
    for k, i in enumerate(comp):
        if rows[i].ok:
            continue
        nxt = comp[k + 1] if k + 1 < len(comp) else None
        if nxt is None or not rows[nxt].ok:
            return i
    return None


def _locate(stage: str, refs: list[Tap], cands: list[Tap], *, metric: str, tol: float) -> Divergence:
    err = rel_error if metric == "rel error" else cosine_gap
    rows = _align(refs, cands, err, tol)
    comparable = [r for r in rows if r.comparable]
    i = _first_divergence(rows)
    if i is None:
        if not comparable:
            note = "no intermediate tensor could be compared (shapes never match)"
        elif metric == "rel error":
            note = "every intermediate layer matches; the difference appears in the final output only"
        else:
            note = ("no single layer degrades sharply; the error accumulates over many layers (try more or more "
                    "representative calibration data)")
        return Divergence(stage, None, None, None, None, None, metric, len(comparable),
                          sum(r.ok for r in comparable), note)
    row = rows[i]
    note = ""
    nxt = next((r for r in rows[i + 1:] if r.comparable), None)
    if nxt is not None and "BatchNorm" in nxt.tap.kind and "Conv" in row.tap.kind:
        note = f"its BatchNorm '{nxt.tap.label}' is folded into it in the converted graph and may be the cause"
    return Divergence(stage, row.tap.label, row.tap.kind, row.best.label if row.best else None,
                      row.best.kind if row.best else None,
                      None if not math.isfinite(row.best_err) else float(row.best_err), metric,
                      len(comparable), sum(r.ok for r in rows[:i] if r.comparable), note)


def locate_torch_vs_onnx(model, onnx_path: Path, x: np.ndarray, *, tol: float = 1e-3) -> Divergence:
    """The first torch leaf module whose output the exported ONNX graph does not reproduce."""
    x = np.asarray(x, dtype=np.float32)[:1]
    return _locate("torch -> ONNX export", torch_taps(model, x), onnx_taps(onnx_path, x),
                   metric="rel error", tol=tol)


def locate_onnx_vs_tflite(onnx_path: Path, tflite_path: Path, x: np.ndarray, *, quantized: bool = False,
                          tol: float | None = None) -> Divergence:
    """The first ONNX node whose output the .tflite graph does not reproduce.

    Float files are compared by relative error (default tol 1e-3); quantised ones by cosine similarity,
    since int8 is never exact: a layer diverges once its cosine drops below 0.9 (tol = 1 - cosine = 0.1).
    Intermediate int8 tensors (sparse ReLU outputs) are noisier than the logits, so the per-layer limit
    must be looser than the output limit; the pipeline uses 5x the artifact's (1 - cosine) limit.
    """
    x = np.asarray(x, dtype=np.float32)[:1]
    refs, cands = onnx_taps(onnx_path, x), tflite_taps(tflite_path, x)
    if quantized:
        stage = "int8 quantisation (calibration)"
        return _locate(stage, refs, cands, metric="1 - cosine", tol=0.1 if tol is None else tol)
    return _locate("ONNX -> TFLite (onnx2tf)", refs, cands, metric="rel error", tol=1e-3 if tol is None else tol)
