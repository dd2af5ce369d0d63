"""The option-A shortcut (ChannelScatter) of the built-in CIFAR ResNets survives every converter.

onnx2tf used to rewrite the channel ``Pad`` of this shortcut wrongly (issue 19): the TFLite file differed
from torch by 15-70 % of the output scale. The shortcut is now exported as a strided 1x1 convolution with a
constant 0/1 weight. One onnx2tf run converts a dense and a pruned small option-A ResNet (fp32 + int8).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprune_edge.converters.litert import run_tflite
from autoprune_edge.data import load_data
from autoprune_edge.converters.onnx_export import export_onnx, run_onnx
from autoprune_edge.converters.parity import compare
from autoprune_edge.converters.tflite import onnx_to_tflite
from autoprune_edge.converters.tflite_graph import read_tflite_ops
from autoprune_edge.layers import ChannelScatter, ChannelScatterPruner
from autoprune_edge.models import build_model
from autoprune_edge.plan import load_pruned, save_pruned
from autoprune_edge.pruning import prune
from autoprune_edge.zoo.cifar_resnet import CifarResNet


def _resnet8(seed: int) -> CifarResNet:
    """A 3-block option-A ResNet (16 -> 32 -> 64 channels) with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    m = CifarResNet(num_blocks=1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.3)
    return m.eval()


def test_export_form_equals_the_torch_form():
    sc = ChannelScatter(16, 32, stride=2)
    x = torch.randn(2, 16, 9, 9)
    assert torch.equal(sc(x), sc._as_conv(x))
    ChannelScatterPruner().prune_in_channels(sc, [1, 4])
    ChannelScatterPruner().prune_out_channels(sc, [0, 3, 30])
    x = torch.randn(2, 14, 9, 9)
    assert (sc.out_index < 0).any() or bool((sc.out_index[1:] - sc.out_index[:-1] != 1).any())
    assert torch.equal(sc(x), sc._as_conv(x))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("optA")
    m = _resnet8(0)
    x = torch.randn(1, 3, 32, 32)
    onnx_path = export_onnx(m, x, d / "m.onnx")
    calib = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)).numpy()
    files = onnx_to_tflite(onnx_path, d / "out", precisions=("fp32", "int8"), calib=calib)
    return m, onnx_path, files


def test_option_a_resnet_tflite_parity(converted):
    m, onnx_path, files = converted
    probe = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = m(probe).numpy()
    assert compare(ref, run_onnx(onnx_path, probe.numpy())).ok(1e-4)
    p32 = compare(ref, run_tflite(files["fp32"], probe.numpy()))
    assert p32.ok(1e-4), p32
    p8 = compare(ref, run_tflite(files["int8"], probe.numpy()))
    assert p8.cosine > 0.99, p8
    # Each of the two option-A shortcuts is a convolution in the file: stem + 3 blocks x 2 + 2 shortcuts.
    # (The PADs left are the spatial ones of the stride-2 3x3 convolutions.)
    ops = read_tflite_ops(files["fp32"])
    assert ops.count("CONV_2D") == 1 + 3 * 2 + 2, ops


def test_pruned_scatter_exports_exactly_to_onnx(tmp_path):
    """The gather case (after pruning) exports through the same convolution; onnxruntime agrees."""
    sc = ChannelScatter(16, 32, stride=2)
    ChannelScatterPruner().prune_in_channels(sc, [2, 5])
    ChannelScatterPruner().prune_out_channels(sc, [0, 9])
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 14, 3, padding=1), sc, torch.nn.ReLU()).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = net(x).numpy()
    path = export_onnx(net, x[:1], tmp_path / "s.onnx")
    got = run_onnx(path, x.numpy())
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_autopruned_option_a_resnet_saves_and_reloads(tmp_path):
    """Gate training parametrizes ChannelScatter.in_scale; afterwards it must not become saved state (the plan
    could not be loaded back: 'Unexpected key(s) ... shortcut.in_scale')."""
    torch.manual_seed(0)
    model, spec = build_model("cifar_resnet20")
    data = load_data("synthetic", input_size=32, synthetic_train=64, synthetic_val=16)
    r = prune(model, data, "20MFLOPs", epochs=0.5, finetune_epochs=0, batch_size=32, evaluate_accuracy=False,
              device="cpu")
    save_pruned(tmp_path, r.model, spec, r.history, (1, 3, 32, 32))
    back, _ = load_pruned(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back.eval()(x), r.model.eval()(x), atol=1e-5)
