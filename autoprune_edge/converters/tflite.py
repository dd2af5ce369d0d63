"""ONNX -> TFLite with onnx2tf, run in a subprocess (TensorFlow stays out of our process).

One subprocess does everything, so TensorFlow is imported once:

* simplify a *copy* of the ONNX file once with the ``onnxsim`` CLI (onnx2tf would run it three times,
  in place), then ``onnx2tf.convert(..., not_use_onnxsim=True, disable_model_save=True)``, which hands
  back the Keras model instead of always writing a SavedModel plus float32 and float16 files;
* convert that Keras model with ``tf.lite.TFLiteConverter`` once per requested precision. int8 is full
  integer with int8 I/O, per-channel, builtin int8 ops only, so an op that cannot be quantised fails
  instead of becoming a Flex op (the same recipe as onnx2tf's ``-oiqt`` full-integer file, without the
  five other quantised variants ``-oiqt`` always builds).

Offline traps handled here: onnx2tf fetches a calibration .npy from GitHub for any 4-D 3-channel input
even for fp32, unless ``calibration_image_sample_data_20x128x128x3_float32.npy`` is in its working
directory, so we put a random one in the work dir; and onnx2tf rewrites its input file, so it gets a copy.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from autoprune_edge import progress
from autoprune_edge.converters.formats import INT8_IO
from autoprune_edge.converters.tflite_graph import read_tflite_ops
from autoprune_edge.errors import ConversionError

PRECISIONS = ("fp32", "fp16", "int8")
_DUMMY_CALIB = "calibration_image_sample_data_20x128x128x3_float32.npy"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# TensorFlow/absl start-up noise that is never the reason for a failure.
_NOISE = re.compile(
    r"^(?:[EWI]\d{4} |WARNING: All log messages before absl|\s*$|To enable the following instructions"
    r"|.*oneDNN custom operations|.*cuda_dnn|.*cuda_blas|.*computation_placer|.*Ignored (?:output_format|drop_control))"
)

# Runs inside the subprocess. argv[1] is a JSON dict of arguments.
_DRIVER = r"""
import json, os, shutil, subprocess, sys, time
a = json.loads(sys.argv[1])
t0 = time.perf_counter()
if a["simplify"]:
    sim = shutil.which("onnxsim")
    cmd = [sim] if sim else [sys.executable, "-m", "onnxsim"]
    r = subprocess.run(cmd + [a["onnx"], a["onnx"]], capture_output=True, text=True)
    if r.returncode != 0:
        print("AUTOPRUNE_EDGE: onnxsim failed, converting the unsimplified model: " + (r.stderr or r.stdout)[-500:])
import onnx2tf
if a["speedup"]:
    try:
        from autoprune_edge.converters import onnx2tf_speedup
        onnx2tf_speedup.install()
    except Exception as e:  # an onnx2tf/tf_keras upgrade moved its internals: convert unpatched (slower)
        print("AUTOPRUNE_EDGE: onnx2tf speed-up not installed: %r" % (e,))
model = onnx2tf.convert(
    input_onnx_file_path=a["onnx"],
    output_folder_path=a["out"],
    not_use_onnxsim=True,
    non_verbose=not a["verbose"],
    batch_size=a["batch_size"],
    keep_ncw_or_nchw_or_ncdhw_input_names=a["keep_nchw"],
    # Erf has no TFLite builtin (it would become a Flex op LiteRT cannot run) where onnx2tf does not fuse
    # the GELU around it; its pseudo Erf is Abramowitz-Stegun 7.1.26 (max error 1.5e-7), fp32-exact enough.
    replace_to_pseudo_operators=["erf"],
    # Return the Keras model instead of writing a SavedModel and both float files: we convert only the
    # precisions that were asked for (the SavedModel dump alone is most of onnx2tf's time on big nets).
    disable_model_save=True,
    # Real inputs for onnx2tf's own layout checks: on its dummy input a ReLU can leave a tensor ambiguous
    # and onnx2tf then flattens NHWC without transposing back (a pruned LeNet-5: rel error 1 at Flatten).
    custom_input_op_name_np_data_path=a["test_data"],
)
import tensorflow as tf
t1 = time.perf_counter()
timings = {"onnx2tf_s": t1 - t0}
os.makedirs(a["out"], exist_ok=True)

def converter():
    # Not from_keras_model, and not the Keras model as the trackable object: both make TF save it as a
    # SavedModel first, and Keras then JSON-serialises every layer config, in which onnx2tf's layers hold
    # the weights as Python lists (AlexNet: 1,000 s and 12 GB of the 1,030 s conversion; the MLIR
    # conversion itself is 10 s). An empty tf.Module carries the model's variables (onnx2tf makes none;
    # its weights are constants captured by the function) without any of that.
    root = tf.Module()
    root.model_variables = list(model.variables)
    def call(*xs):
        out = model(list(xs) if len(xs) > 1 else xs[0])
        if len(model.outputs) == 1:
            return out
        # several outputs: name them output_000, output_001... in the ONNX file's order, because the
        # converter does not keep the order of a list (LiteRT's runner sorts them back by these names)
        return {"output_%03d" % i: t for i, t in enumerate(out)}
    root.fn = tf.function(call, input_signature=[tf.TensorSpec(t.shape, t.dtype, t.name) for t in model.inputs])
    return tf.lite.TFLiteConverter.from_concrete_functions([root.fn.get_concrete_function()], root)

for p in a["precisions"]:
    t = time.perf_counter()
    conv = converter()
    if p == "int8":
        import numpy as np
        calib = np.load(a["calib"]).astype(np.float32)
        def rep():
            for i in range(calib.shape[0]):
                yield [calib[i : i + 1]]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[a["int8_io"]]
        conv.inference_input_type = io
        conv.inference_output_type = io
        conv.representative_dataset = rep
    else:
        # Select-TF ops are allowed here only so that a Flex op is reported by name afterwards.
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        if p == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
    with open(a["files"][p], "wb") as f:
        f.write(conv.convert())
    timings[p + "_s"] = time.perf_counter() - t
print("AUTOPRUNE_EDGE_TIMINGS " + json.dumps(timings))
"""


def _venv_bin() -> str:
    return str(Path(sys.executable).parent)


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    # onnx2tf shells out to the `onnxsim` CLI; without the venv's bin on PATH it silently skips it.
    env["PATH"] = _venv_bin() + os.pathsep + env.get("PATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.setdefault("CUDA_VISIBLE_DEVICES", "")  # conversion is CPU work; keep TF off any GPU
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONSTARTUP", None)
    return env


def last_error_line(output: str) -> str:
    """The most informative error line of a (TF-noisy) onnx2tf log."""
    lines = [_ANSI.sub("", ln).rstrip() for ln in output.splitlines()]
    lines = [ln.strip() for ln in lines if ln.strip() and not _NOISE.match(ln)]
    if not lines:
        return "no output"
    for ln in reversed(lines):
        m = re.search(r"No module named 'onnx2tf\.ops\.(\w+)'", ln)
        if m:
            return f"unsupported ONNX op {m.group(1)} (onnx2tf has no converter for it)"
    # A Python exception line ("FooError: ...") at the end of a traceback is the most specific.
    exc = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Exit)\b.*:", ln)]
    if exc:
        return exc[-1][:400]
    # onnx2tf's own errors: "ERROR: ..." lines, often several in a row; keep the last block (<= 3 lines).
    idx = [i for i, ln in enumerate(lines) if ln.startswith("ERROR:")]
    if idx:
        block = [idx[-1]]
        while len(block) < 3 and block[0] - 1 in idx:
            block.insert(0, block[0] - 1)
        return " / ".join(lines[i].removeprefix("ERROR:").strip() for i in block)[:400]
    err = [ln for ln in lines if re.search(r"\bERROR\b|Error|error:", ln)]
    return (err[-1] if err else lines[-1])[:400]


def _check_precisions(precisions: Iterable[str]) -> tuple[str, ...]:
    ps = tuple(dict.fromkeys(p.lower() for p in precisions))
    bad = [p for p in ps if p not in PRECISIONS]
    if bad or not ps:
        raise ConversionError(f"unknown precision(s) {bad or '[]'}; choose from {', '.join(PRECISIONS)}")
    return ps


def _onnx_input(onnx_path: Path) -> tuple[str, list[int | str]]:
    try:
        m = onnx.load(str(onnx_path))
        onnx.checker.check_model(m)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConversionError(
            f"cannot read ONNX file {onnx_path}: {first[:300]}; re-export it with export_onnx"
        ) from e
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ConversionError(f"{onnx_path} has {len(inputs)} inputs; only single-input models are supported")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def onnx_to_tflite(
    onnx_path: Path,
    out_dir: Path,
    *,
    precisions: Iterable[str] = ("fp32",),
    calib: np.ndarray | None = None,
    work_dir: Path | None = None,
    keep_nchw: bool = False,
    timeout_s: float = 1800.0,
    simplify: bool = True,
    check_ops: bool = True,
    speedup: bool = True,
    int8_io: str = "int8",
    test_data: np.ndarray | None = None,
) -> dict[str, Path]:
    """Convert ``onnx_path`` with onnx2tf and copy the requested precisions to ``out_dir``.

    Returns ``{"fp32": out_dir/"model_fp32.tflite", ...}`` for the requested precisions only.
    ``calib`` (needed for "int8") is an NCHW float32 array of already-normalised samples.
    The TFLite input is NHWC unless ``keep_nchw``. ``work_dir`` keeps onnx2tf's files for inspection;
    by default a temporary directory is used and removed. ``speedup`` reuses values in onnx2tf's
    per-op validation (converters/onnx2tf_speedup.py; same output, 2-5x faster on deep nets).
    ``int8_io`` is the dtype of the int8 file's input and output tensors (int8, uint8 or float32).
    ``test_data`` (NCHW float32, in the model's input units) are real inputs for onnx2tf's own layout
    validation, which otherwise runs on dummy data; 4-D inputs converted to NHWC only.
    """
    ps = _check_precisions(precisions)
    if int8_io not in INT8_IO:
        raise ConversionError(f"unknown int8 I/O type {int8_io!r}; choose from {', '.join(INT8_IO)}")
    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir).resolve()
    if not onnx_path.is_file():
        raise ConversionError(f"ONNX file {onnx_path} does not exist; export the model first")
    input_name, dims = _onnx_input(onnx_path)
    if "int8" in ps:
        if calib is None or len(calib) == 0:
            raise ConversionError("int8 conversion needs calibration data; pass calib= (NCHW float32 samples)")
        calib = np.asarray(calib, dtype=np.float32)
        if calib.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != c for d, c in zip(dims[1:], calib.shape[1:])):
            raise ConversionError(
                f"calibration data has shape {list(calib.shape)} but the model input is {dims}; "
                "pass samples shaped like the model input (NCHW)"
            )
        if not np.isfinite(calib).all():
            raise ConversionError("calibration data contains NaN or inf; check the data pipeline")

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConversionError(f"cannot create output directory {out_dir}: {e.strerror}") from e
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ape_onnx2tf_")
        wd = Path(tmp.name)
    else:
        wd = Path(work_dir).resolve()  # the subprocess runs with cwd=wd
        wd.mkdir(parents=True, exist_ok=True)
    try:
        return _convert(onnx_path, out_dir, wd, ps, calib, input_name, dims, keep_nchw, timeout_s, simplify, check_ops,
                        speedup, int8_io, test_data)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _convert(onnx_path, out_dir, wd, ps, calib, input_name, dims, keep_nchw, timeout_s, simplify, check_ops,
             speedup, int8_io, test_data=None):
    model_copy = wd / "model.onnx"  # onnx2tf (and onnxsim) rewrite their input: work on a copy
    shutil.copyfile(onnx_path, model_copy)
    ext = onnx_path.with_name(onnx_path.name + ".data")
    if ext.exists():
        shutil.copyfile(ext, wd / ext.name)
    dummy = wd / _DUMMY_CALIB
    if not dummy.exists():
        rng = np.random.default_rng(0)
        np.save(dummy, rng.random((20, 128, 128, 3), dtype=np.float32))
    test_arg = None
    if test_data is not None and not keep_nchw and len(dims) == 4 and np.asarray(test_data).ndim == 4 \
            and np.isfinite(test_data).all():
        t = np.ascontiguousarray(np.asarray(test_data, dtype=np.float32)[:20].transpose(0, 2, 3, 1))
        np.save(wd / "onnx2tf_test_data.npy", t)
        c = t.shape[-1]
        test_arg = [[input_name, str(wd / "onnx2tf_test_data.npy"), [0.0] * c, [1.0] * c]]
    calib_path = None
    if "int8" in ps:
        c = calib
        if c.ndim == 4 and not keep_nchw:
            c = np.ascontiguousarray(c.transpose(0, 2, 3, 1))  # onnx2tf makes the input NHWC
        calib_path = wd / "calib_int8.npy"
        np.save(calib_path, c.astype(np.float32))
    sm_dir = wd / "onnx2tf_out"
    if sm_dir.exists():
        shutil.rmtree(sm_dir)
    batch_fixed = isinstance(dims[0], int) and dims[0] > 0
    args = {
        "onnx": str(model_copy),
        "out": str(sm_dir),
        "simplify": simplify,
        "speedup": speedup,
        "verbose": False,
        "batch_size": None if batch_fixed else 1,
        "keep_nchw": [input_name] if keep_nchw else None,
        "calib": str(calib_path) if calib_path else None,
        "test_data": test_arg,
        "precisions": list(ps),
        "int8_io": int8_io,
        "files": {p: str(sm_dir / f"model_{p}.tflite") for p in ps},
    }
    t0 = time.perf_counter()
    with progress.task(f"Converting {onnx_path.name} to TFLite ({', '.join(ps)}) with onnx2tf"):
        try:
            r = subprocess.run(
                [sys.executable, "-c", _DRIVER, json.dumps(args)],
                cwd=wd,
                env=_subprocess_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as e:
            raise ConversionError(
                f"onnx2tf did not finish within {timeout_s:.0f} s on {onnx_path.name}; try a smaller input size"
            ) from e
    output = r.stdout.decode("utf-8", errors="replace")
    (wd / "onnx2tf.log").write_text(output)
    wall = time.perf_counter() - t0
    produced = {p: sm_dir / f"model_{p}.tflite" for p in ps}
    missing = [p for p in ps if not produced[p].is_file()]
    if r.returncode in (-9, 137):  # SIGKILL: on Linux almost always the kernel's out-of-memory killer
        size_gb = sum(f.stat().st_size for f in wd.glob("model.onnx*")) / 2**30
        raise ConversionError(
            f"onnx2tf was killed (signal 9) converting {onnx_path.name}, most likely out of memory: onnx2tf and the "
            f"TFLite converter hold about ten copies of the weights ({size_gb:.1f} GB here); convert on a machine "
            "with more RAM or prune the model further first")
    if r.returncode != 0 or missing:
        what = f"exit code {r.returncode}" if r.returncode != 0 else f"no {', '.join(missing)} file"
        hint = (
            "calibration or an op without an int8 kernel failed; try fp32/fp16"
            if missing == ["int8"] and r.returncode != 0
            else "check that the model uses standard ops and static shapes"
        )
        raise ConversionError(f"onnx2tf failed on {onnx_path.name} ({what}): {last_error_line(output)}; {hint}")
    result: dict[str, Path] = {}
    for p in ps:
        dst = out_dir / f"model_{p}.tflite"
        shutil.copyfile(produced[p], dst)
        result[p] = dst
    if check_ops:
        for p, f in result.items():
            custom = [n for n in read_tflite_ops(f) if n.startswith("Flex") or n.startswith("CUSTOM")]
            if custom:
                raise ConversionError(
                    f"{p} TFLite model needs TensorFlow (Select TF) ops {sorted(set(custom))[:5]} that LiteRT "
                    "cannot run; replace those layers with standard ones"
                )
    for line in output.splitlines():
        if line.startswith("AUTOPRUNE_EDGE: onnx2tf speed-up not installed"):
            progress.log(line.removeprefix("AUTOPRUNE_EDGE: ") + " (converting at onnx2tf's own speed)")
    m = re.search(r"AUTOPRUNE_EDGE_TIMINGS (\{.*\})", output)
    timing = json.loads(m.group(1)) if m else {}
    progress.log(
        f"onnx2tf: {', '.join(ps)} in {wall:.1f} s"
        + (f" (int8 quantisation {timing['int8_s']:.1f} s)" if "int8_s" in timing else "")
    )
    return result
