"""Shipping: every format from one small trained CNN, parity policy, divergence localisation, TFLite
metadata, Edge TPU readiness, Core ML spec check, and build's write-nothing-on-failure rule.

One onnx2tf subprocess and one Core ML conversion in total (module fixture); the rest is fast.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autoprune_edge.converters.convert import convert
from autoprune_edge.converters.int8_prep import RECIPES
from autoprune_edge.converters.divergence import locate_onnx_vs_tflite, locate_torch_vs_onnx
from autoprune_edge.converters.edgetpu import EDGETPU_SUPPORTED_OPS, check_edgetpu, is_edgetpu_target
from autoprune_edge.converters.formats import parse_formats
from autoprune_edge.converters.litert import run_tflite
from autoprune_edge.converters.onnx_export import export_onnx
from autoprune_edge.converters.parity import ParityThresholds, compare
from autoprune_edge.converters.samples import disjoint_heldout
from autoprune_edge.converters.tflite_graph import read_tflite_ops
from autoprune_edge.converters.tflite_metadata import embed_metadata, read_metadata
from autoprune_edge.errors import AutoPruneEdgeError, ParityError, PartialBuildError
from autoprune_edge.profiles.counting import count_macs
from toy_models import SmallCNN

LABELS = [f"c{i}" for i in range(10)]
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.25, 0.25]


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable 10-class task: class k = a bright blob in one of 10 places, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randn(n, 3, 16, 16, generator=g) * 0.5
    for i, k in enumerate(y.tolist()):
        r, c = divmod(k, 5)
        x[i, k % 3, 2 + 7 * r:7 + 7 * r, 1 + 3 * c:4 + 3 * c] += 3.0
    return x, y


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    torch.manual_seed(0)
    m = SmallCNN(w=8)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    x, y = _data(320, 1)
    m.train()
    for step in range(60):
        i = (step * 32) % 320
        loss = nn.functional.cross_entropy(m(x[i:i + 32]), y[i:i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def shipped(trained, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ship")
    calib, _ = _data(64, 2)  # "train split"
    held, yh = _data(48, 3)  # "validation split": other images
    arts = convert(trained, torch.zeros(1, 3, 16, 16), out, formats="tflite-fp32,tflite-int8,coreml", calib=calib,
                   heldout=held, measure=False, labels=LABELS, mean=MEAN, std=STD, name="toy")
    return {"out": out, "arts": {a.format: a for a in arts}, "held": held, "yh": yh, "model": trained}


def test_every_format_ships_and_passes(shipped):
    arts = shipped["arts"]
    assert list(arts) == ["onnx", "tflite-fp32", "tflite-int8", "coreml"]
    assert all(a.ok and not a.failures for a in arts.values()), {k: a.failures for k, a in arts.items()}
    assert arts["onnx"].parity["rel"] < 1e-5 and arts["tflite-fp32"].parity["rel"] < 1e-5
    i8 = arts["tflite-int8"].parity
    assert i8["n"] == 48 and i8["cosine"] > 0.98 and i8["top1_agreement"] >= 0.9
    torch_macs = count_macs(shipped["model"], torch.zeros(1, 3, 16, 16)).macs
    assert arts["tflite-fp32"].macs_counted == arts["tflite-int8"].macs_counted == torch_macs
    # int8 I/O defaults to uint8 with raw 0..255 pixels in (normalisation inside), recorded with the recipe
    io, q = arts["tflite-int8"].io, arts["tflite-int8"].int8
    assert io["input"]["layout"] == "NHWC" and io["input"]["dtype"] == "uint8" and io["output"]["dtype"] == "uint8"
    assert (io["input"]["scale"], io["input"]["zero_point"]) == (1.0, 0)
    assert q.pixel_input and q.recipe == "ptq" and q.tried[0].passed and q.batchnorms_folded >= 1
    assert arts["tflite-int8"].metadata["normalization_std_255"] == [1.0, 1.0, 1.0]
    # the normalisation is folded into the first conv (int8_prep.PixelConv), not a full-resolution op of its own
    ops = read_tflite_ops(shipped["out"] / "model_int8.tflite")
    assert ops[:4] == ["QUANTIZE", "CONCATENATION", "CONCATENATION", "CONV_2D"], ops[:6]


def test_uint8_file_takes_camera_bytes(shipped):
    """Feeding raw uint8 pixels straight into the interpreter (as an app does) gives torch's answer."""
    from ai_edge_litert.interpreter import Interpreter

    from autoprune_edge.converters.int8_prep import to_pixels

    held, model = shipped["held"], shipped["model"]
    pixels = to_pixels(held, MEAN, STD).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    it = Interpreter(model_path=str(shipped["out"] / "model_int8.tflite"))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = out["quantization"]
    got = []
    for px in pixels:
        it.set_tensor(inp["index"], px[None])
        it.invoke()
        got.append((it.get_tensor(out["index"]).astype(np.float32) - zp) * scale)
    with torch.no_grad():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255  # what the app's bytes mean
        ref = model((x - torch.tensor(MEAN).view(1, -1, 1, 1)) / torch.tensor(STD).view(1, -1, 1, 1)).numpy()
    agree = (np.concatenate(got).argmax(1) == ref.argmax(1)).mean()
    assert agree >= 0.9, agree


def test_int8_recipes_are_tried_until_one_passes(trained, tmp_path):
    """With limits plain PTQ cannot meet, every recipe is tried, the closest is kept, and it is reported."""
    calib, _ = _data(64, 2)
    held, _ = _data(16, 3)
    arts = convert(trained, torch.zeros(1, 3, 16, 16), tmp_path, formats="tflite-int8", calib=calib, heldout=held,
                   measure=False, localize=False, int8_io="int8", thresholds={"int8_cosine": 0.999999})
    a = arts[-1]
    assert a.format == "tflite-int8" and a.failures and a.io["input"]["dtype"] == "int8"
    assert [t.recipe for t in a.int8.tried] == [r.name for r in RECIPES]
    assert not a.int8.pixel_input and a.int8.recipe in [r.name for r in RECIPES]
    assert all(not t.passed for t in a.int8.tried)


def test_int8_activation_clamps_are_not_left_as_ops(trained, tmp_path):
    """The percentile-range recipe's clamps (int8_prep.clip_ranges) come out of the converter as MINIMUM / RELU ops
    that XNNPACK runs no int8 kernel for (a pruned MobileNetV2: 11.8 ms instead of 1.5); the producer's int8
    range already saturates there, so they are removed: identical outputs, no such op in the shipped file."""
    from autoprune_edge.converters.int8_prep import clip_ranges
    from autoprune_edge.converters.tflite import onnx_to_tflite
    from autoprune_edge.converters.tflite_graph import drop_identity_clamps

    calib, _ = _data(64, 2)
    held, _ = _data(16, 3)
    clipped = copy.deepcopy(trained).eval()
    assert clip_ranges(clipped, calib, percentile=99.0, min_gain=1.0) >= 2
    raw = onnx_to_tflite(export_onnx(clipped, torch.zeros(1, 3, 16, 16), tmp_path / "raw" / "m.onnx"), tmp_path / "raw",
                         precisions=["int8"], calib=calib.numpy(), int8_io="int8", test_data=calib.numpy())["int8"]
    assert "MINIMUM" in read_tflite_ops(raw)  # what the converter writes
    slim = tmp_path / "slim.tflite"
    shutil.copyfile(raw, slim)
    assert drop_identity_clamps(slim) >= 2 and "MINIMUM" not in read_tflite_ops(slim)
    assert np.array_equal(run_tflite(raw, held.numpy()), run_tflite(slim, held.numpy()))
    arts = convert(clipped, torch.zeros(1, 3, 16, 16), tmp_path / "out", formats="tflite-int8", calib=calib,
                   heldout=held, measure=False, localize=False, int8_io="int8")
    assert arts[-1].ok and "MINIMUM" not in read_tflite_ops(tmp_path / "out" / "model_int8.tflite")


def test_uint8_input_step_can_run_as_dequantize_then_quantize(shipped, tmp_path):
    """XNNPACK runs no uint8 -> int8 QUANTIZE; the twin file widens the pixels to float first (DEQUANTIZE, then
    QUANTIZE to int8, both delegated): same input contract, bit-identical outputs on camera bytes."""
    from ai_edge_litert.interpreter import Interpreter

    from autoprune_edge.converters.int8_prep import to_pixels
    from autoprune_edge.converters.tflite_graph import dequantize_pixel_input

    src, twin = shipped["out"] / "model_int8.tflite", tmp_path / "twin.tflite"
    assert dequantize_pixel_input(src, twin)
    assert read_tflite_ops(twin)[:3] == ["DEQUANTIZE", "QUANTIZE", "CONCATENATION"]
    a, b = (Interpreter(model_path=str(p)).get_input_details()[0] for p in (src, twin))
    assert b["dtype"] == np.uint8 and b["quantization"] == a["quantization"] == (1.0, 0)
    pixels = to_pixels(shipped["held"], MEAN, STD).round().clamp(0, 255).numpy()
    assert np.array_equal(run_tflite(src, pixels), run_tflite(twin, pixels))
    assert not dequantize_pixel_input(shipped["out"] / "model_fp32.tflite", tmp_path / "no.tflite")
    assert not (tmp_path / "no.tflite").exists()


def test_faster_uint8_input_step_ships_only_when_timed_faster(shipped, tmp_path, monkeypatch):
    """pixel_path.faster_pixel_path ships the twin only when it measured at least 1 % faster here (the timings are
    scripted); a tie within timing noise keeps the converter's file."""
    import autoprune_edge.converters.pixel_path as pp
    from autoprune_edge.converters.int8_prep import to_pixels
    from autoprune_edge.profiles.host import Measurement

    src = shipped["out"] / "model_int8.tflite"
    pixels = to_pixels(shipped["held"][:8], MEAN, STD).round().clamp(0, 255).numpy()
    for twin_ms, chosen in ((0.9, "dequantize+quantize"), (0.995, "quantize"), (1.1, "quantize")):
        monkeypatch.setattr(pp, "measure_tflite", lambda p, **kw: Measurement(
            0, twin_ms if "dequantize" in Path(p).name else 1.0, 0, 1, kw["runs"]))
        work = tmp_path / f"{chosen}{twin_ms}"
        work.mkdir()
        path, step = pp.faster_pixel_path(src, pixels, work)
        assert step.chosen == chosen and (step.quantize_ms, step.dequantize_ms) == (1.0, twin_ms)
        assert read_tflite_ops(path)[0] == ("DEQUANTIZE" if chosen != "quantize" else "QUANTIZE")
    assert pp.faster_pixel_path(shipped["out"] / "model_fp32.tflite", pixels, tmp_path) == (
        shipped["out"] / "model_fp32.tflite", None)


def test_convert_times_the_uint8_input_step_when_the_target_is_here(trained, tmp_path):
    calib, _ = _data(64, 2)
    held, _ = _data(16, 3)
    arts = convert(trained, torch.zeros(1, 3, 16, 16), tmp_path, formats="tflite-int8", calib=calib, heldout=held,
                   measure=False, localize=False, mean=MEAN, std=STD, time_pixel_step=True)
    a = arts[-1]
    assert a.ok and a.int8.pixel_input and a.int8.input_step.startswith("uint8 input step: ")
    first = read_tflite_ops(tmp_path / "model_int8.tflite")[0]
    assert first == ("DEQUANTIZE" if "step: dequantize" in a.int8.input_step else "QUANTIZE")


def test_coreml_spec_is_verified(shipped):
    a = shipped["arts"]["coreml"]
    assert (shipped["out"] / "model.mlpackage" / "Manifest.json").is_file() and a.bytes > 0
    c = a.coreml
    assert c["inputs"] == [{"name": "input", "kind": "multiArrayType", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    assert c["outputs"][0]["name"] == "output" and c["outputs"][0]["shape"] == [1, 10]
    assert c["ops"]["conv"] == 3 and c["ops"]["linear"] == 1 and c["compute_precision"] == "fp16"
    assert a.macs_counted == count_macs(shipped["model"], torch.zeros(1, 3, 16, 16)).macs
    assert a.parity is None and a.parity_ok is None and "macOS" in a.verified_by
    assert c["metadata"]["mean"] == json.dumps(MEAN)


def test_coreml_verify_catches_wrong_package(shipped):
    from autoprune_edge.converters.coreml import inspect_mlpackage, verify

    info = inspect_mlpackage(shipped["out"] / "model.mlpackage")
    problems = verify(info, input_shape=[1, 3, 32, 32], output_shape=[1, 10], macs=123)
    assert len(problems) == 2 and "input" in problems[0] and "MACs" in problems[1]


def test_tflite_metadata_embedded_and_harmless(shipped, tmp_path):
    path = shipped["out"] / "model_int8.tflite"
    md = read_metadata(path)
    assert {"TFLITE_METADATA", "autoprune_edge"} <= set(md["entries"])
    assert md["associated_files"]["labels.txt"].split() == LABELS
    custom = md["autoprune_edge"]
    # the uint8 file takes raw pixels: identity normalisation in the metadata, the real one inside the model
    assert custom["labels"] == LABELS and custom["mean"] == [0.0] * 3 and custom["layout"] == "NHWC"
    assert custom["normalization_inside_model"] == {"mean": MEAN, "std": STD} and custom["pixel_range"] == [0, 255]
    assert custom["input_quantization"]["scale"] == shipped["arts"]["tflite-int8"].io["input"]["scale"] == 1.0
    mm = md["model_metadata"]
    assert mm["name"] == "toy" and mm["inputs"][0]["name"] == "image"
    assert mm["inputs"][0]["mean"] == pytest.approx([0.0] * 3) and mm["inputs"][0]["std"] == pytest.approx([1.0] * 3)
    fp32 = read_metadata(shipped["out"] / "model_fp32.tflite")["model_metadata"]["inputs"][0]
    assert fp32["mean"] == pytest.approx([255 * m for m in MEAN], rel=1e-6)
    assert fp32["std"] == pytest.approx([255 * s for s in STD], rel=1e-6)
    assert mm["outputs"][0]["associated_files"] == ["labels.txt"]
    # rewriting the flatbuffer changes no number: embed again (new labels) into a copy, outputs bit-identical
    copy_path = tmp_path / "again.tflite"
    shutil.copyfile(path, copy_path)
    embed_metadata(copy_path, name="x", description="d", version="1", labels=list("abcdefghij"), mean=MEAN,
                   std=STD, info={})
    x = shipped["held"][:8].numpy()
    assert np.array_equal(run_tflite(path, x), run_tflite(copy_path, x))
    assert read_metadata(copy_path)["associated_files"]["labels.txt"].split() == list("abcdefghij")
    assert read_metadata(copy_path)["entries"].count("TFLITE_METADATA") == 1


def test_edgetpu_readiness(shipped):
    r = shipped["arts"]["tflite-int8"].edgetpu
    assert r.ready and r.ops_on_tpu == r.n_ops and r.macs_on_tpu_fraction == 1.0  # a typed EdgeTpuReport
    assert set(read_tflite_ops(shipped["out"] / "model_int8.tflite")) <= EDGETPU_SUPPORTED_OPS
    # a float model runs on the CPU from its first op; a tiny SRAM makes the int8 one not ready either
    f = check_edgetpu(shipped["out"] / "model_fp32.tflite")
    assert not f.ready and f.ops_on_tpu == 0 and "FLOAT32" in f.issues[0].reason and "CPU" in f.summary()
    small = check_edgetpu(shipped["out"] / "model_int8.tflite", sram_bytes=1000)
    assert not small.ready and not small.fits_sram and small.parameter_bytes > 1000
    assert shipped["arts"]["tflite-fp32"].edgetpu is None


def test_edgetpu_flags_transpose_and_5d(shipped, tmp_path):
    """A TRANSPOSE is where the Edge TPU compiler stops; everything after it runs on the CPU.

    The graph is edited statically (the check never runs the file): the max-pool op becomes a TRANSPOSE
    and the last conv's output tensor gets a 5-D shape.
    """
    from ai_edge_litert import schema_py_generated as s
    from ai_edge_litert.tools import flatbuffer_utils as fu

    m = fu.read_model(str(shipped["out"] / "model_int8.tflite"))
    g = m.subgraphs[0]
    names = read_tflite_ops(shipped["out"] / "model_int8.tflite")
    pool = names.index("MAX_POOL_2D")
    code = m.operatorCodes[g.operators[pool].opcodeIndex]
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.TRANSPOSE
    last_conv = max(i for i, n in enumerate(names) if n == "CONV_2D")
    g.tensors[g.operators[last_conv].outputs[0]].shape = np.array([1, 1, 8, 8, 8], dtype=np.int32)
    path = tmp_path / "t.tflite"
    fu.write_model(m, str(path))
    r = check_edgetpu(path)
    assert not r.ready and r.ops_on_tpu == pool and r.first_cpu_op.startswith("TRANSPOSE")
    assert 0 < r.macs_on_tpu_fraction < 1
    reasons = {i.op: i.reason for i in r.issues}
    assert "not mapped" in reasons["TRANSPOSE"] and "5-D" in reasons["CONV_2D"]
    assert "op 2" in r.summary() or f"op {pool}" in r.summary()


def test_is_edgetpu_target_reads_text_not_names():
    class T:  # duck-typed target
        description = "Coral USB Accelerator (Edge TPU)"

    class U:
        description = "Raspberry Pi 4"

    assert is_edgetpu_target(T()) and not is_edgetpu_target(U())


# ------------------------------------------------------------------------------------ divergence
def test_localises_a_perturbed_torch_layer(trained, tmp_path):
    x = torch.randn(2, 3, 16, 16).numpy()
    onnx_path = export_onnx(trained, torch.zeros(1, 3, 16, 16), tmp_path / "m.onnx")
    clean = locate_torch_vs_onnx(trained, onnx_path, x)
    assert clean.layer is None and clean.compared > 5
    for name in ("features.3", "fc"):
        broken = copy.deepcopy(trained)
        with torch.no_grad():
            dict(broken.named_modules())[name].weight.mul_(1.3)
        d = locate_torch_vs_onnx(broken, onnx_path, x)
        assert d.layer == name, d.summary()
        assert d.stage == "torch -> ONNX export" and d.matched >= 1


def test_localises_a_perturbed_tflite_op(shipped, tmp_path):
    from ai_edge_litert.tools import flatbuffer_utils as fu

    out = shipped["out"]
    x = shipped["held"][:1].numpy()
    assert locate_onnx_vs_tflite(out / "model.onnx", out / "model_fp32.tflite", x).layer is None
    m = fu.read_model(str(out / "model_fp32.tflite"))
    g = m.subgraphs[0]
    convs = [op for op in g.operators if m.operatorCodes[op.opcodeIndex].builtinCode == 3]  # CONV_2D
    buf = m.buffers[g.tensors[convs[1].inputs[1]].buffer]
    w = np.frombuffer(bytes(buf.data), np.float32) * 1.5
    buf.data = np.frombuffer(w.tobytes(), np.uint8)
    broken = tmp_path / "broken.tflite"
    fu.write_model(m, str(broken))
    d = locate_onnx_vs_tflite(out / "model.onnx", broken, x)
    assert d.layer == "/features/features.3/Conv" and d.closest_type == "CONV_2D", d.summary()
    assert d.stage == "ONNX -> TFLite (onnx2tf)"


class ExportTrap(nn.Module):
    """Scales by 2 in torch but by 3 inside ONNX export: a stand-in for an exporter bug."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (3.0 if torch.onnx.is_in_onnx_export() else 2.0)


def trapped_cnn(num_classes: int = 10) -> nn.Module:
    m = SmallCNN(n=num_classes, w=8)
    m.features.insert(6, ExportTrap())  # after the second conv block's ReLU
    return m


def test_convert_reports_failing_artifact_with_layer(tmp_path):
    torch.manual_seed(0)
    arts = convert(trapped_cnn().eval(), torch.zeros(1, 3, 16, 16), tmp_path, formats="onnx", measure=False)
    a = arts[0]
    assert a.parity_ok is False and "output scale" in a.failures[0]
    assert a.divergence["layer"] == "features.6" and a.divergence["layer_type"] == "ExportTrap"
    assert "features.6" in a.failure_line()


def test_thresholds_and_formats():
    t = ParityThresholds.coerce({"int8_top1": 0.5})
    assert t.int8_top1 == 0.5 and t.fp32_rel == ParityThresholds().fp32_rel
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.9]])
    got = np.array([[3.0, 1.0, 0.0], [0.0, 1.9, 2.0]])
    p = compare(ref, got)
    assert ParityThresholds().failures("tflite-int8", p)[0].startswith("top-1 agreement 50.0%")
    assert t.failures("tflite-int8", p) == []
    assert ParityThresholds().failures("tflite-fp32", p) and ParityThresholds(fp32_rel=0.1).failures("onnx", p) == []
    assert ParityThresholds().failures("coreml", p) == []
    for bad in ({"int8_top1": 1.5}, {"fp32_rel": -1}, {"nope": 1}):
        with pytest.raises(AutoPruneEdgeError):
            ParityThresholds.coerce(bad)
    assert parse_formats("tflite-int8,coreml") == ("onnx", "tflite-int8", "coreml")
    assert parse_formats(None, default=("tflite-fp32", "tflite-int8")) == ("onnx", "tflite-fp32", "tflite-int8")
    assert parse_formats("coreml") == ("coreml",)
    with pytest.raises(AutoPruneEdgeError, match="tflite-int4"):
        parse_formats("tflite-int4")


def test_heldout_never_overlaps_calibration():
    calib, _ = _data(16, 5)
    held, _ = _data(8, 6)
    mixed = torch.cat([held[:5], calib[:3]])
    kept, dropped = disjoint_heldout(mixed, calib)
    assert dropped == 3 and len(kept) == 5 and torch.equal(kept, held[:5])
    with pytest.raises(AutoPruneEdgeError, match="overlap"):
        disjoint_heldout(calib[:4], calib)


# ----------------------------------------------------------------------------------------- build
def test_build_withholds_failing_artifacts_unless_allowed(tmp_path, capsys):
    from autoprune_edge.cli import main

    argv = ["build", "--model", "test_ship:trapped_cnn", "--target", "host", "--budget", "1GFLOPs",
            "--input-size", "16", "--method", "l1", "--pretrain-epochs", "0", "--finetune-epochs", "0",
            "--formats", "onnx", "--parity-samples", "8", "--out", str(tmp_path), "--name", "t"]
    rc = main(argv)
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("autoprune-edge: error")]
    assert rc == 2 and len(line) == 1, err
    assert "onnx (model.onnx)" in line[0] and "features.6" in line[0] and "not written" in line[0]
    out = tmp_path / "t"  # the folder is written, without the failing file, and says why
    assert not (out / "model.onnx").exists() and (out / "pruned").is_dir()
    card = json.loads((out / "model_card.json").read_text())
    assert card["artifacts"][0]["written"] is False and card["parity"]["failing"] == ["onnx"]
    assert "FAIL, not written" in (out / "report.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind

    assert main(argv + ["--allow-parity-failure", "--json"]) == 0
    card = json.loads((tmp_path / "t" / "model_card.json").read_text())
    assert card["parity"]["failing"] == ["onnx"] and card["parity"]["all_ok"] is False
    onnx = card["artifacts"][0]
    assert onnx["parity_ok"] is False and onnx["divergence"]["layer"] == "features.6"
    assert card["formats"] == {"shipped": ["onnx"], "chosen_by": "--formats"}
    assert card["parity"]["n"] == 8 and card["parity"]["thresholds"]["fp32_rel"] == 1e-3
    from autoprune_edge.targets import list_targets

    pred = card["predicted"]  # the chosen target plus every shipped profile
    assert set(pred) >= {t.name for t in list_targets()} and pred["host"]["chosen"]
    assert all(("error" in r) or r["by_precision"][r["precision"]]["latency_ms"] > 0 for r in pred.values())
    assert card["data"]["spec"] == "synthetic" and card["preprocessing"]["tflite_layout"] is None
    assert "FAIL" in (tmp_path / "t" / "report.md").read_text()
    assert "Parity failures" in (tmp_path / "t" / "report.html").read_text()
    assert card["artifacts"][0]["written"] is True and (tmp_path / "t" / "model.onnx").is_file()
    with pytest.raises(PartialBuildError) as info:
        from autoprune_edge.pipeline import build

        build(model="test_ship:trapped_cnn", target="host", budget="1GFLOPs", input_size=16, method="l1",
              pretrain_epochs=0, finetune_epochs=0, formats="onnx", parity_samples=4, out_dir=tmp_path / "p",
              name="t")
    assert info.value.withheld == ["onnx"] and info.value.report.card.artifacts[0].written is False
    assert isinstance(info.value, ParityError) and not (tmp_path / "p" / "t" / "model.onnx").exists()


