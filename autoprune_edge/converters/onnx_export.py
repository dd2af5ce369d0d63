"""torch -> ONNX export with static shapes and embedded weights, plus an onnxruntime runner.

Choices, deliberately:

* **Static shapes**: the graph is traced at the example input's exact shape (batch 1 in the pipeline) and
  no ``dynamic_axes`` are declared. onnx2tf, the Edge TPU and most mobile runtimes want static shapes,
  and a fixed shape lets the converters fold every shape computation into constants.
* **Exporter: the legacy TorchScript one** (``dynamo=False``). On pruned torchvision CNNs it is faster
  (0.4-3 s vs 4-5 s for MobileNetV2, research/deps.md) and emits plain Conv/Gemm/GlobalAveragePool/
  Flatten with BatchNorm folded into the conv (``do_constant_folding``), which onnx2tf maps 1:1; its node
  names keep torch's module scopes (``/features/features.3/Conv``), which the divergence locator shows.
  torch's deprecation warning for it is silenced. The dynamo exporter (torch's default since 2.9) stays
  available with ``exporter="dynamo"``; it cannot write opsets below 18.
* **Opset 17**: the newest opset every downstream tool here handles well (onnx2tf 1.29, onnxruntime 1.23,
  onnxsim 0.4); nothing in a CNN needs a newer one.
* **Weights inside the file** (no ``.onnx.data``), checked with ``onnx.checker`` (full check).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from autoprune_edge.errors import ConversionError

_EXPORTERS = ("torchscript", "dynamo")


@contextlib.contextmanager
def _quiet():
    """Swallow the exporters' stdout chatter and warnings (stdout must stay clean for --json)."""
    buf = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(buf):
            yield buf


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int = 17,
    exporter: str = "torchscript",
    input_name: str = "input",
    output_name: str = "output",
) -> Path:
    """Export ``model`` (put in eval mode) to a single self-contained .onnx file with static shapes."""
    if exporter not in _EXPORTERS:
        raise ConversionError(f"unknown ONNX exporter {exporter!r}; use one of {', '.join(_EXPORTERS)}")
    if exporter == "dynamo" and opset < 18:
        opset = 18  # the dynamo exporter cannot produce opset < 18 (it would silently write 18 anyway)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example.detach().to("cpu")
    model = model.to("cpu").eval()
    data_file = path.with_name(path.name + ".data")
    # nn.MultiheadAttention / TransformerEncoderLayer take a fused inference kernel
    # (aten::_native_multi_head_attention) under no_grad that no ONNX opset has; export the plain ops.
    mha_fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with _quiet() as out, torch.no_grad():
            if exporter == "torchscript":
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[input_name],
                    output_names=[output_name],
                    do_constant_folding=True,
                )
            else:
                prog = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[input_name],
                    output_names=[output_name],
                    external_data=False,
                    optimize=True,
                    verbose=False,
                )
                if prog is None:
                    raise RuntimeError(f"dynamo exporter returned nothing; output: {out.getvalue()[-300:]}")
                prog.save(str(path), external_data=False)
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - any exporter failure becomes one user-facing line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"ONNX export ({exporter}, opset {opset}) failed: {type(e).__name__}: {msg[:300]}; "
            f"try exporter='{'dynamo' if exporter == 'torchscript' else 'torchscript'}' or make the model traceable"
        ) from e
    finally:
        torch.backends.mha.set_fastpath_enabled(mha_fastpath)
    if data_file.exists():  # should not happen with external_data=False; fold it back in to be safe
        m = onnx.load(str(path))
        onnx.save(m, str(path), save_as_external_data=False)
        data_file.unlink()
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"exported ONNX file {path} fails onnx.checker: {str(e).splitlines()[0][:300]}") from e
    return path


def onnx_io_names(path: Path) -> tuple[list[str], list[str]]:
    """Names of the graph inputs (excluding initializers) and outputs."""
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits], [o.name for o in m.graph.output]


def run_onnx(path: Path, x: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Run the single-input ONNX model on ``x`` with onnxruntime on CPU (several outputs: a list, in order).

    A batch larger than the model's static batch is run sample by sample and concatenated.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ConversionError(
            f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:300]}; re-export the model"
        ) from e
    inp = sess.get_inputs()[0]
    x = np.ascontiguousarray(x, dtype=np.float32)
    static_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    if static_batch is not None and x.shape[0] != static_batch:
        if static_batch != 1:
            raise ConversionError(
                f"{path} has static batch {static_batch} but got {x.shape[0]} samples; export with batch 1"
            )
        runs = [sess.run(None, {inp.name: x[i : i + 1]}) for i in range(x.shape[0])]
        res = [np.concatenate([r[k] for r in runs], axis=0) for k in range(len(runs[0]))]
    else:
        res = sess.run(None, {inp.name: x})
    return res[0] if len(res) == 1 else res
