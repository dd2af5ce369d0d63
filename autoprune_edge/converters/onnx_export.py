"""torch -> ONNX export with static shapes and embedded weights, plus an onnxruntime runner.

The default exporter is the legacy TorchScript one at opset 17: it is fast, works on every torchvision
classifier we tried and emits GlobalAveragePool/Flatten, which onnx2tf maps cleanly. The dynamo
exporter (torch's default since 2.9) is available with ``exporter="dynamo"``; it cannot go below opset 18.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
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
    import onnx

    if exporter not in _EXPORTERS:
        raise ConversionError(f"unknown ONNX exporter {exporter!r}; use one of {', '.join(_EXPORTERS)}")
    if exporter == "dynamo" and opset < 18:
        opset = 18  # the dynamo exporter cannot produce opset < 18 (it would silently write 18 anyway)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example.detach().to("cpu")
    model = model.to("cpu").eval()
    data_file = path.with_name(path.name + ".data")
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
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits], [o.name for o in m.graph.output]


def run_onnx(path: Path, x: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Run the (single-input, single-output) ONNX model on ``x`` with onnxruntime on CPU.

    A batch larger than the model's static batch is run sample by sample and concatenated.
    """
    import onnxruntime as ort

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
        outs = [sess.run(None, {inp.name: x[i : i + 1]})[0] for i in range(x.shape[0])]
        return np.concatenate(outs, axis=0)
    return sess.run(None, {inp.name: x})[0]
