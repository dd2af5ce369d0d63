"""torch -> ONNX -> onnx2tf -> LiteRT on tiny CNNs: parity, MAC counts from the .tflite graph, errors.

Two onnx2tf subprocesses in total (about 8 s each on 2 cores), shared through module fixtures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autoprune_edge.converters.litert import run_tflite, tflite_io_details
from autoprune_edge.converters.onnx_export import export_onnx, run_onnx
from autoprune_edge.converters.parity import Parity, check, compare
from autoprune_edge.converters.tflite import last_error_line, onnx_to_tflite
from autoprune_edge.converters.tflite_graph import count_tflite_macs, read_tflite_ops
from autoprune_edge.errors import ConversionError, ParityError
from autoprune_edge.profiles.counting import count_macs
from autoprune_edge.profiles.host import Measurement, measure_all_threads, measure_tflite


class TinyCNN(nn.Module):
    def __init__(self, cin: int = 3, n: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(cin, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),  # depthwise
            nn.Conv2d(16, 24, 3, stride=2, padding=1, groups=4), nn.ReLU(),  # grouped
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(24, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _make(cin: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = TinyCNN(cin)
    with torch.no_grad():  # non-trivial BN statistics so BN folding is exercised
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    return m.eval()


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("rgb")
    m = _make(3, 0)
    example = torch.randn(1, 3, 32, 32)
    onnx_path = export_onnx(m, example, d / "m.onnx")
    g = torch.Generator().manual_seed(1)
    calib = torch.randn(32, 3, 32, 32, generator=g).numpy()
    paths = onnx_to_tflite(onnx_path, d / "out", precisions=("fp32", "int8"), calib=calib)
    x = torch.randn(8, 3, 32, 32, generator=g)
    with torch.no_grad():
        ref = m(x).numpy()
    return {"model": m, "example": example, "onnx": onnx_path, "paths": paths, "x": x.numpy(), "ref": ref}


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("gray")
    m = _make(1, 2)
    example = torch.randn(1, 1, 28, 28)
    onnx_path = export_onnx(m, example, d / "m.onnx")
    paths = onnx_to_tflite(onnx_path, d / "out", precisions=("fp32",))
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        ref = m(x).numpy()
    return {"model": m, "example": example, "paths": paths, "x": x.numpy(), "ref": ref}


def test_onnx_export_single_file_and_ort_parity(rgb):
    onnx_path: Path = rgb["onnx"]
    assert onnx_path.is_file() and not onnx_path.with_name(onnx_path.name + ".data").exists()
    got = run_onnx(onnx_path, rgb["x"])
    assert got.shape == rgb["ref"].shape
    assert np.abs(got - rgb["ref"]).max() < 1e-5


def test_fp32_tflite_parity_and_layout(rgb):
    paths = rgb["paths"]
    assert set(paths) == {"fp32", "int8"}
    assert paths["fp32"].name == "model_fp32.tflite" and paths["int8"].name == "model_int8.tflite"
    io = tflite_io_details(paths["fp32"])
    assert io["input"]["shape"] == [1, 32, 32, 3] and io["input"]["layout"] == "NHWC"
    assert io["input"]["dtype"] == "float32" and io["output"]["shape"] == [1, 10]
    p = compare(rgb["ref"], run_tflite(paths["fp32"], rgb["x"]))
    assert p.n == 8
    assert p.rel < 1e-4, p
    assert p.top1_agreement == 1.0


def test_tflite_macs_equal_torch_count(rgb):
    counts = count_tflite_macs(rgb["paths"]["fp32"])
    torch_macs = count_macs(rgb["model"], rgb["example"]).macs
    assert counts.macs == torch_macs
    assert counts.ops.get("CONV_2D", 0) >= 2 and counts.ops.get("DEPTHWISE_CONV_2D") == 1
    assert counts.ops.get("FULLY_CONNECTED") == 1
    assert counts.op_names == read_tflite_ops(rgb["paths"]["fp32"])
    assert sum(counts.ops.values()) == len(counts.op_names)
    assert counts.macs_by_op["FULLY_CONNECTED"] == 24 * 10
    # the int8 graph has the same arithmetic
    assert count_tflite_macs(rgb["paths"]["int8"]).macs == torch_macs


def test_int8_tflite(rgb):
    path = rgb["paths"]["int8"]
    io = tflite_io_details(path)
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"
    assert io["input"]["quantized"] and io["input"]["scale"] > 0
    ops = count_tflite_macs(path).per_op
    conv_types = {t for o in ops if o.name == "CONV_2D" for t in o.input_types[:2]}
    assert conv_types == {"INT8"}
    p = compare(rgb["ref"], run_tflite(path, rgb["x"]))
    assert p.cosine > 0.98, p
    assert p.rel < 0.1, p


def test_gray_28x28_input(gray):
    path = gray["paths"]["fp32"]
    assert tflite_io_details(path)["input"]["shape"] == [1, 28, 28, 1]
    p = compare(gray["ref"], run_tflite(path, gray["x"]))
    assert p.rel < 1e-4, p
    assert count_tflite_macs(path).macs == count_macs(gray["model"], gray["example"]).macs


def test_host_measurement(rgb):
    m = measure_tflite(rgb["paths"]["fp32"], threads=1, runs=5, warmup=1)
    assert isinstance(m, Measurement) and m.runs == 5 and m.threads == 1
    assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms
    allm = measure_all_threads(rgb["paths"]["int8"], runs=3, warmup=1)
    assert 1 in allm and all(v.median_ms > 0 for v in allm.values())


def test_corrupt_onnx_raises(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(ConversionError, match="ONNX"):
        onnx_to_tflite(bad, tmp_path / "out")
    with pytest.raises(ConversionError, match="does not exist"):
        onnx_to_tflite(tmp_path / "missing.onnx", tmp_path / "out")


def test_bad_arguments_raise(rgb, tmp_path):
    with pytest.raises(ConversionError, match="precision"):
        onnx_to_tflite(rgb["onnx"], tmp_path, precisions=("fp8",))
    with pytest.raises(ConversionError, match="calibration"):
        onnx_to_tflite(rgb["onnx"], tmp_path, precisions=("int8",))
    with pytest.raises(ConversionError, match="shape"):
        onnx_to_tflite(rgb["onnx"], tmp_path, precisions=("int8",), calib=np.zeros((4, 3, 16, 16), np.float32))
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"0123456789abcdef")
    with pytest.raises(ConversionError):
        count_tflite_macs(bad)
    with pytest.raises(ConversionError):
        run_tflite(bad, rgb["x"])


def test_last_error_line_skips_tf_noise():
    log = "\n".join(
        [
            "W0000 00:00:1795240198.306278    3290 computation_placer.cc:177] computation placer already registered.",
            "\x1b[31mERROR:\x1b[0m The trace log is below.",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
            "ValueError: Dimensions must be equal, but are 3 and 4",
            "E0000 00:00:1795240198.285987    3290 cuda_dnn.cc:8579] Unable to register cuDNN factory",
        ]
    )
    assert last_error_line(log) == "ValueError: Dimensions must be equal, but are 3 and 4"
    assert last_error_line("") == "no output"
    block = "INFO: ok\nERROR: saved_model failed\nERROR: /a/b/kernel\nERROR: convert again with -osd\n"
    assert last_error_line(block) == "saved_model failed / /a/b/kernel / convert again with -osd"


def test_unsupported_op_reports_onnx2tf_failure(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])
    nodes = [helper.make_node("Relu", ["input"], ["r"]), helper.make_node("FancyOp", ["r"], ["output"], domain="com.example")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConversionError, match="unsupported ONNX op FancyOp"):
        onnx_to_tflite(path, tmp_path / "out", work_dir=tmp_path / "wd")
    assert (tmp_path / "wd" / "onnx2tf.log").stat().st_size > 0
    assert not (tmp_path / "out" / "model_fp32.tflite").exists()


def test_parity_math():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 5.0]])
    got = ref.copy()
    got[1] = [-1.0, 0.0, 3.0]  # cosine (-3 + 0 - 3) / 10 = -0.6, argmax changes
    got[3, 2] = 4.0  # argmax kept
    p = compare(ref, got)
    assert isinstance(p, Parity) and p.n == 4
    assert p.max_abs == pytest.approx(4.0)
    assert p.rel == pytest.approx(4.0 / 5.0)
    cos3 = (1 + 1 + 20) / (np.sqrt(27) * np.sqrt(18))
    assert p.cosine == pytest.approx((1.0 - 0.6 + 1.0 + cos3) / 4)
    assert p.top1_agreement == pytest.approx(0.75)
    assert p.ok(0.81) and not p.ok(0.79)
    same = compare(ref, ref)
    assert same.max_abs == 0 and same.rel == 0 and same.cosine == pytest.approx(1.0) and same.top1_agreement == 1.0
    zeros = compare(np.zeros((2, 3)), np.zeros((2, 3)))
    assert zeros.rel == 0 and zeros.cosine == 1.0
    with pytest.raises(ParityError, match="shapes differ"):
        compare(ref, ref[:, :2])
    with pytest.raises(ParityError, match="rel error"):
        check(ref, got, max_rel=0.1)
    assert check(ref, ref * (1 + 1e-7), max_rel=1e-6).ok(1e-6)


class _ConvNeXtish(nn.Module):
    """Depthwise conv, channels-last LayerNorm (permutes), GELU, residual: ops onnx2tf validates one by one."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.blocks = nn.ModuleList(nn.ModuleDict({"dw": nn.Conv2d(c, c, 7, padding=3, groups=c),
                                                   "ln": nn.LayerNorm(c), "fc1": nn.Linear(c, 2 * c),
                                                   "fc2": nn.Linear(2 * c, c)}) for _ in range(3))
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            y = b["ln"](b["dw"](x).permute(0, 2, 3, 1))
            x = x + b["fc2"](nn.functional.gelu(b["fc1"](y))).permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def test_onnx2tf_speedup_writes_the_same_bytes(tmp_path):
    """converters/onnx2tf_speedup.py must install on the pinned onnx2tf/tf_keras and change nothing."""
    torch.manual_seed(0)
    m = _ConvNeXtish().eval()
    example = torch.randn(1, 3, 32, 32)
    onnx_path = export_onnx(m, example, tmp_path / "m.onnx")
    fast = onnx_to_tflite(onnx_path, tmp_path / "fast", work_dir=tmp_path / "wf")["fp32"]
    slow = onnx_to_tflite(onnx_path, tmp_path / "slow", work_dir=tmp_path / "ws", speedup=False)["fp32"]
    log = (tmp_path / "wf" / "onnx2tf.log").read_text()
    assert "speed-up not installed" not in log, log[-2000:]
    assert fast.read_bytes() == slow.read_bytes()
    x = example.numpy()
    rel = np.abs(run_tflite(fast, x) - m(example).detach().numpy()).max()
    assert rel <= 1e-3 * float(np.abs(m(example).detach().numpy()).max())


def test_killed_converter_is_reported_as_out_of_memory(tmp_path, monkeypatch):
    """onnx2tf killed by the kernel (ViT-H/14 on 24 GB) must say so, not 'check the ops'."""
    import subprocess

    import onnx
    from onnx import TensorProto, helper

    import autoprune_edge.converters.tflite as tfl

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), str(path))
    monkeypatch.setattr(tfl.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, -9, stdout=b"", stderr=None))
    with pytest.raises(ConversionError, match="killed .* most likely out of memory"):
        onnx_to_tflite(path, tmp_path / "out", work_dir=tmp_path / "wd")
    assert not (tmp_path / "out" / "model_fp32.tflite").exists()


def test_onnx2tf_gets_real_inputs_for_its_layout_checks(tmp_path):
    """A pruned LeNet-5 (fixture: AutoPrune-trained weights, 6/7/56 wide) whose ReLUs leave onnx2tf's own
    dummy input ambiguous: without real inputs onnx2tf flattened NHWC without the transpose (rel error ~1)."""
    import numpy as np

    from autoprune_edge.converters.litert import run_tflite
    from autoprune_edge.converters.onnx_export import export_onnx
    from autoprune_edge.converters.tflite import onnx_to_tflite
    from autoprune_edge.zoo.lenet import lenet5

    sd = torch.load(Path(__file__).parent / "fixtures" / "lenet5_autopruned_6_7_56.pt", weights_only=True)
    model = lenet5(num_classes=10, in_channels=1)
    for name in ("conv1", "conv2", "fc1", "fc2"):  # the pruned widths
        w = sd[f"{name}.weight"]
        layer = getattr(model, name)
        setattr(model, name, type(layer)(*(w.shape[1], w.shape[0]) if w.dim() == 2 else (w.shape[1], w.shape[0], 5)))
    model.load_state_dict(sd)
    model.eval()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).numpy()
    onnx_path = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    f = onnx_to_tflite(onnx_path, tmp_path / "t", precisions=["fp32"], test_data=x.numpy())["fp32"]
    assert np.abs(run_tflite(f, x.numpy()) - ref).max() / np.abs(ref).max() < 1e-5
