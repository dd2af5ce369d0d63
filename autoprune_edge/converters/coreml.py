"""torch -> Core ML ``.mlpackage`` (ML program, fp16) with coremltools, and a check of what was written.

Route: ``ct.convert(torch.jit.trace(model, x), convert_to="mlprogram", compute_precision=FLOAT16)``,
straight from the pruned torch model. ONNX is no longer a coremltools input, and tracing is the path
coremltools calls stable (torch.export is beta there; research/anchors.md §4.4).

Input type: a ``TensorType`` (float32, NCHW, already normalised), not an ``ImageType``. ImageType folds
preprocessing into the model as ``scale * pixel + bias`` with a *single* scale, which cannot express
per-channel std (ImageNet's 0.229/0.224/0.225); a TensorType keeps the model identical to the torch and
TFLite ones and the card says how to normalise. The fp16 program casts the input to fp16 inside.

Prediction is macOS-only (coremltools 9 on Linux: "Model prediction is only supported on macOS"), so
the artifact is verified structurally instead: input/output names, shapes and types from the spec, the
op list of the MIL program, weight shapes, and the MACs of its conv/linear ops, which must equal the
torch count of the compacted model (the same independent check as for the .tflite graph).

coremltools imports TensorFlow only to warn about its version; we block that import while loading
coremltools (keeping TensorFlow out of this process, as the TFLite path does) and silence its
"Torch version ... has not been tested", "Failed to load _MLModelProxy" and progress-bar chatter.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune_edge.errors import ConversionError

MIN_DEPLOYMENT = "iOS15"  # the first OS that runs ML programs; fp16 compute is available there


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence coremltools' logger, warnings and tqdm bars (stdout and stderr)."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
                yield
    finally:
        logger.setLevel(level)


def import_coremltools():
    """Import coremltools quietly and without dragging TensorFlow into the process."""
    if "coremltools" in sys.modules:
        return sys.modules["coremltools"]
    blocked = "tensorflow" not in sys.modules
    if blocked:
        sys.modules["tensorflow"] = None  # type: ignore[assignment] - makes `import tensorflow` fail fast
    try:
        with _quiet():
            import coremltools as ct
    except ImportError as e:
        raise ConversionError("coremltools is not installed; pip install coremltools") from e
    finally:
        if blocked and sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
    return ct


@dataclass
class CoreMLInfo:
    """What the .mlpackage contains, read back from its spec (no prediction needed)."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    ops: dict[str, int]  # MIL op type -> count (main function)
    macs: int  # conv/linear/matmul MACs counted from the MIL program
    spec_version: int
    opset: str
    compute_precision: str  # "fp16" when every conv/linear runs in fp16
    weight_shapes: list[list[int]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # filled by verify()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def torch_to_coreml(model, example, path: Path, *, input_name: str = "input", output_name: str = "output",
                    precision: str = "fp16", description: dict[str, str] | None = None,
                    labels: list[str] | None = None) -> Path:
    """Convert ``model`` (eval mode, traced on ``example``) to ``path`` (a ``.mlpackage`` folder)."""
    ct = import_coremltools()
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ConversionError(f"Core ML ML programs are saved as .mlpackage folders; got {path.name}")
    prec = {"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32}.get(precision)
    if prec is None:
        raise ConversionError(f"unknown Core ML precision {precision!r}; use fp16 or fp32")
    model = model.eval().to("cpu")
    example = example.detach().to("cpu")
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(model, example)
            ml = ct.convert(
                traced,
                convert_to="mlprogram",
                compute_precision=prec,
                inputs=[ct.TensorType(name=input_name, shape=tuple(example.shape), dtype=np.float32)],
                outputs=[ct.TensorType(name=output_name)],
                minimum_deployment_target=getattr(ct.target, MIN_DEPLOYMENT),
            )
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - any converter failure becomes one line
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConversionError(f"Core ML conversion failed: {type(e).__name__}: {msg[:300]}; "
                              "drop 'coreml' from --formats or replace the unsupported layer") from e
    for k, v in (description or {}).items():
        ml.user_defined_metadata[k] = str(v)
    if labels:
        ml.user_defined_metadata["labels"] = "\n".join(labels)
    ml.short_description = (description or {}).get("description", "")
    ml.input_description[input_name] = (description or {}).get("input", "")
    ml.output_description[output_name] = (description or {}).get("output", "")
    try:
        with _quiet():
            ml.save(str(path))
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"cannot save {path}: {str(e).splitlines()[0][:200]}") from e
    return path


def _feature(f) -> dict[str, Any]:
    t = f.type
    kind = t.WhichOneof("Type")
    d: dict[str, Any] = {"name": f.name, "kind": kind}
    if kind == "multiArrayType":
        d["shape"] = [int(v) for v in t.multiArrayType.shape]
        d["dtype"] = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}.get(
            int(t.multiArrayType.dataType), str(int(t.multiArrayType.dataType)))
    elif kind == "imageType":
        d["shape"] = [int(t.imageType.height), int(t.imageType.width)]
    return d


def _dims(tensor_type) -> list[int]:
    return [int(d.constant.size) for d in tensor_type.dimensions]


def inspect_mlpackage(path: Path) -> CoreMLInfo:
    """Read a saved .mlpackage's spec (works on Linux: no model load, no prediction)."""
    ct = import_coremltools()
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path} is not a .mlpackage folder; convert the model first")
    try:
        with _quiet():
            ml = ct.models.MLModel(str(path), skip_model_load=True)
            spec = ml.get_spec()
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"cannot read Core ML package {path}: {str(e).splitlines()[0][:200]}") from e
    if spec.WhichOneof("Type") != "mlProgram":
        raise ConversionError(f"{path} is not an ML program (got {spec.WhichOneof('Type')})")
    prog = spec.mlProgram
    fn = prog.functions["main"]
    block = fn.block_specializations[fn.opset]
    ops = [op.type for op in block.operations]
    # value types of every op output, to read conv/linear shapes
    out_type: dict[str, Any] = {}
    for op in block.operations:
        for o in op.outputs:
            out_type[o.name] = o.type.tensorType
    macs = 0
    weight_shapes: list[list[int]] = []
    fp16 = True
    for op in block.operations:
        if op.type not in ("conv", "linear", "matmul"):
            continue
        out = op.outputs[0].type.tensorType
        if int(out.dataType) != 10:  # 10 = FLOAT16 in MIL.proto DataType
            fp16 = False
        out_elems = int(np.prod(_dims(out)))
        wname = op.inputs["weight"].arguments[0].name if "weight" in op.inputs else None
        wshape = _dims(out_type[wname]) if wname in out_type else None
        if op.type == "conv" and wshape:  # weight [Cout, Cin/groups, kh, kw]
            macs += out_elems * int(np.prod(wshape[1:]))
        elif op.type == "linear" and wshape:  # weight [out, in]
            macs += out_elems * wshape[1]
        elif op.type == "matmul":
            xa = op.inputs["x"].arguments[0].name
            if xa in out_type:
                macs += out_elems * _dims(out_type[xa])[-1]
        if wshape:
            weight_shapes.append(wshape)
    meta = dict(spec.description.metadata.userDefined)
    return CoreMLInfo(
        inputs=[_feature(f) for f in spec.description.input],
        outputs=[_feature(f) for f in spec.description.output],
        ops=dict(Counter(o for o in ops if o != "const")),
        macs=int(macs),
        spec_version=int(spec.specificationVersion),
        opset=str(fn.opset),
        compute_precision="fp16" if fp16 else "mixed/fp32",
        weight_shapes=weight_shapes,
        metadata={k: v for k, v in meta.items() if k != "labels"},
    )


def verify(info: CoreMLInfo, *, input_shape: list[int], output_shape: list[int], macs: int | None,
           precision: str = "fp16") -> list[str]:
    """What is wrong with the written package (empty: nothing). Also stored in ``info.problems``."""
    problems: list[str] = []
    if len(info.inputs) != 1 or info.inputs[0].get("shape") != list(input_shape):
        problems.append(f"input is {[i.get('shape') for i in info.inputs]}, expected {list(input_shape)}")
    if len(info.outputs) != 1:
        problems.append(f"{len(info.outputs)} outputs, expected 1")
    elif info.outputs[0].get("shape") not in (list(output_shape), [], None):
        problems.append(f"output is {info.outputs[0].get('shape')}, expected {list(output_shape)}")
    if macs is not None and info.macs != macs:
        problems.append(f"MIL program has {info.macs} MACs, torch counts {macs}")
    if precision == "fp16" and info.compute_precision != "fp16":
        problems.append("not every conv/linear runs in fp16")
    info.problems = problems
    return problems
