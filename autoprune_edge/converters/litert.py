"""Run .tflite files with the LiteRT interpreter, taking NCHW inputs like torch.

Needs only numpy and ai_edge_litert (no torch, no TensorFlow).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from autoprune_edge.errors import ConversionError


def _interpreter(path: Path, num_threads: int = 1):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:  # pragma: no cover
        raise ConversionError("ai_edge_litert is not installed; pip install ai-edge-litert") from e
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"TFLite file {path} does not exist; convert the model first")
    try:
        it = Interpreter(model_path=str(path), num_threads=num_threads)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConversionError(f"LiteRT cannot load {path}: {first[:300]}; reconvert the model") from e
    return it


def _layout_guess(shape: list[int]) -> str | None:
    if len(shape) != 4:
        return None
    # channels-last when the last dim is no bigger than the spatial dims (onnx2tf's default output)
    return "NHWC" if shape[3] <= shape[1] and shape[3] <= shape[2] else "NCHW"


def _qparams(d: dict[str, Any]) -> tuple[float, int]:
    scale, zp = d.get("quantization", (0.0, 0))
    return float(scale), int(zp)


def tflite_io_details(path: Path) -> dict[str, Any]:
    """Input/output shape, dtype, layout guess and quantisation of a single-input single-output model."""
    it = _interpreter(path)

    def one(d: dict[str, Any], layout: str | None) -> dict[str, Any]:
        scale, zp = _qparams(d)
        return {
            "name": d["name"],
            "shape": [int(v) for v in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name,
            "layout": layout,
            "scale": scale,
            "zero_point": zp,
            "quantized": scale != 0.0 and np.issubdtype(np.dtype(d["dtype"]), np.integer),
        }

    ind, outd = it.get_input_details(), it.get_output_details()
    in_shape = [int(v) for v in ind[0]["shape"]]
    return {
        "input": one(ind[0], _layout_guess(in_shape)),
        "output": one(outd[0], _layout_guess([int(v) for v in outd[0]["shape"]])),
        "outputs": [one(d, _layout_guess([int(v) for v in d["shape"]])) for d in outd],
        "n_inputs": len(ind),
        "n_outputs": len(outd),
    }


def quantize(x: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    dt = np.dtype(d["dtype"])
    if not np.issubdtype(dt, np.integer):
        return x.astype(dt, copy=False)
    scale, zp = _qparams(d)
    if scale == 0.0:
        raise ConversionError(f"integer input tensor {d['name']} has no quantisation scale; reconvert the model")
    info = np.iinfo(dt)
    return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dt)


def dequantize(y: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        return y.astype(np.float32, copy=False)
    scale, zp = _qparams(d)
    if scale == 0.0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zp) * scale).astype(np.float32)


def input_layout(model_shape: list[int], x_shape: tuple[int, ...]) -> str:
    """'NHWC' if x (NCHW) must be transposed, 'NCHW' if it fits as is."""
    if len(model_shape) != 4 or len(x_shape) != 4:
        if list(model_shape[1:]) != list(x_shape[1:]):
            raise ConversionError(f"input shape {list(x_shape)} does not fit the TFLite input {model_shape}")
        return "AS_IS"
    _, c, h, w = x_shape
    nhwc = list(model_shape[1:]) == [h, w, c]
    nchw = list(model_shape[1:]) == [c, h, w]
    if nhwc:  # onnx2tf's default; wins when both fit (C == H == W)
        return "NHWC"
    if nchw:
        return "NCHW"
    raise ConversionError(
        f"input shape {list(x_shape)} (NCHW) fits neither NHWC nor NCHW of the TFLite input {model_shape}"
    )


class TfliteRunner:
    """A loaded interpreter that takes NCHW float batches and returns dequantised float outputs."""

    def __init__(self, path: Path, *, num_threads: int = 1) -> None:
        self.path = Path(path)
        self.it = _interpreter(self.path, num_threads)
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        self.model_shape = [int(v) for v in self.inp["shape"]]

    def output_details(self) -> list[dict[str, Any]]:
        """Output tensors in the source model's order: by their signature names output_000, output_001...
        where the converter wrote several (see tflite.py), else in the file's order."""
        details = self.it.get_output_details()
        sigs = self.it._get_full_signature_list() if hasattr(self.it, "_get_full_signature_list") else {}
        names = next(iter(sigs.values()), {}).get("outputs", {}) if len(sigs) == 1 else {}
        if len(details) > 1 and len(names) == len(details) and all(re.fullmatch(r"output_\d{3}", k) for k in names):
            by_index = {d["index"]: d for d in details}
            return [by_index[names[k]] for k in sorted(names)]
        return details

    def __call__(self, x_nchw: np.ndarray, *, nchw_output: bool = True) -> np.ndarray:
        x = np.asarray(x_nchw, dtype=np.float32)
        if x.ndim == len(self.model_shape) - 1:
            x = x[None]
        layout = input_layout(self.model_shape, x.shape)
        if layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        mb = self.model_shape[0]
        if mb not in (x.shape[0], 1, -1):
            raise ConversionError(f"{self.path} has static batch {mb}; got {x.shape[0]} samples")
        step = x.shape[0] if mb in (x.shape[0], -1) else 1
        details = self.output_details()
        outs: list[list[np.ndarray]] = [[] for _ in details]
        for i in range(0, x.shape[0], step):
            xi = np.ascontiguousarray(quantize(x[i : i + step], self.inp))
            self.it.set_tensor(self.inp["index"], xi)
            self.it.invoke()
            for o, d in zip(outs, details):
                o.append(dequantize(self.it.get_tensor(d["index"]).copy(), d))
        ys = []
        for o in outs:
            y = np.concatenate(o, axis=0)
            if nchw_output and layout == "NHWC" and y.ndim == 4:
                y = y.transpose(0, 3, 1, 2)  # onnx2tf keeps 4-D outputs channels-last
            ys.append(y)
        return ys[0] if len(ys) == 1 else ys


def run_tflite(path: Path, x_nchw: np.ndarray, *, num_threads: int = 1, nchw_output: bool = True) -> np.ndarray:
    """Run a .tflite model on an NCHW float batch; returns float outputs (dequantised for int models).

    The input layout (NHWC from onnx2tf, or NCHW with ``-k``) is read from the model's input shape;
    a batch-1 model is run once per sample. 4-D outputs are transposed back to NCHW when the input was
    transposed (``nchw_output=False`` keeps them as the model returns them). A model with several
    outputs returns a list, in the file's output order (see `align_outputs`).
    """
    return TfliteRunner(path, num_threads=num_threads)(x_nchw, nchw_output=nchw_output)


def align_outputs(reference: list[np.ndarray], got: list[np.ndarray]) -> list[np.ndarray]:
    """``got`` reordered to match ``reference`` by shape (converters may reorder a model's outputs); among
    outputs of the same shape the file's order is kept. Unmatched outputs keep their places."""
    free = list(range(len(got)))
    order: list[int | None] = []
    for r in reference:
        j = next((k for k in free if tuple(got[k].shape) == tuple(r.shape)), None)
        if j is not None:
            free.remove(j)
        order.append(j)
    return [got[j] if j is not None else got[free.pop(0)] for j in order] if len(got) == len(reference) else got
