"""The torch-side int8 preparation (BatchNorm folding, cross-layer equalisation, bias correction) and the
int8 parity rule for near-tied logits: fast, no converter."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from autoprune_edge.converters.int8_prep import correct_biases, equalise, fold_batchnorm, quantize_weight
from autoprune_edge.converters.parity import ParityThresholds, compare
from autoprune_edge.qat import _FoldedWeight, conv_batchnorm_pairs, quantisation_aware_finetune


class Chain(nn.Module):
    """conv -> BN -> ReLU6 -> depthwise -> BN -> ReLU -> 1x1 conv, with channel ranges 1,000x apart."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a, self.act_a = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6()
        self.dw, self.bn_dw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act_a(self.bn_a(self.a(x)))
        return self.pw(torch.relu(self.bn_dw(self.dw(y))))


def _chain() -> Chain:
    torch.manual_seed(0)
    m = Chain()
    with torch.no_grad():
        m.bn_a.weight.copy_(torch.logspace(-3, 0, 8))  # channel i of the ReLU6 tensor spans ~10^(i*3/7 - 3)
        m.bn_a.bias.zero_()
        m.bn_dw.running_var.fill_(4.0)
    return m.eval()


@torch.no_grad()
def test_fold_and_equalise_keep_the_function_and_even_out_channel_ranges():
    m, x = _chain(), torch.randn(16, 3, 12, 12)
    ref = m(x)
    folded, n = fold_batchnorm(m)
    assert n == 2 and not any(isinstance(k, nn.BatchNorm2d) for k in folded.modules())
    torch.testing.assert_close(folded(x), ref, rtol=1e-5, atol=1e-6)

    def relu6_ranges(model: nn.Module) -> torch.Tensor:
        out = {}
        h = model.act_a.register_forward_hook(lambda _m, _i, y: out.setdefault("y", y))
        model(x)
        h.remove()
        return out["y"].transpose(0, 1).flatten(1).amax(1)

    before = relu6_ranges(folded)
    assert float(before.max() / before.min()) > 100
    assert equalise(folded, x) == 2  # a -> ReLU6 -> dw (depthwise consumer) and dw -> ReLU -> pw (dense)
    torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-5)
    after = relu6_ranges(folded)
    torch.testing.assert_close(after, torch.full_like(after, float(before.max())), rtol=1e-4, atol=0)


def test_equalise_leaves_untraceable_or_pairless_models_alone():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    assert equalise(lin, torch.randn(2, 3, 2, 2)) == 0  # not an fx GraphModule
    folded, _ = fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)))
    assert equalise(folded, torch.randn(2, 3, 8, 8)) == 0  # no activation between the convs


@torch.no_grad()
def test_bias_correction_removes_the_mean_shift_of_int8_weights():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.linspace(0.1, 30, 6).view(-1, 1, 1, 1))
    x = torch.rand(64, 4, 10, 10) + 0.5  # a non-zero mean input, so rounding errors shift the outputs
    exact = conv(x)

    def shift(m: nn.Conv2d) -> torch.Tensor:
        y = nn.functional.conv2d(x, quantize_weight(m.weight), m.bias)
        return (y - exact).mean(dim=(0, 2, 3)).abs()

    before = shift(conv)
    assert correct_biases(conv, x) == 1
    assert float(shift(conv).max()) < 1e-3 * float(before.max()) + 1e-6


def test_int8_top1_is_judged_on_inputs_the_quantised_output_can_decide():
    ref = np.array([[3.0, 1.0], [2.0, 1.99], [1.0, 1.01], [0.0, 5.0]])  # margins 2, 0.01, 0.01, 5
    got = np.array([[3.0, 1.0], [1.98, 2.0], [1.02, 1.0], [0.0, 5.0]])  # the two near-ties flip
    p = compare(ref, got, step=0.05)
    assert p.top1_agreement == 0.5 and p.decided == 2 and p.top1_decided == 1.0
    th = ParityThresholds(int8_top1=0.9, int8_cosine=0.9)
    assert th.failures("tflite-int8", p) == []
    p_all = compare(ref, got)  # no step: every input counts
    assert p_all.decided is None and "50.0% < 90% on 4 inputs" in th.failures("tflite-int8", p_all)[0]
    wrong = np.array([[1.0, 3.0], [1.98, 2.0], [1.02, 1.0], [0.0, 5.0]])  # a clear decision flipped
    assert "on the 2 of 4 inputs" in th.failures("tflite-int8", compare(ref, wrong, step=0.05))[0]
    undecided = compare(ref, got, step=3.0)  # only 1 of 4 decidable: too few, judged on all of them
    assert undecided.decided == 1 and th.failures("tflite-int8", undecided)


def _convnet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


@torch.no_grad()
def test_qat_weight_simulation_is_the_folded_int8_weight():
    m = _convnet().eval()
    m[1].running_var.uniform_(0.5, 4.0)
    m[1].weight.uniform_(-2.0, 2.0)
    x = torch.randn(4, 3, 8, 8)
    pairs = conv_batchnorm_pairs(m)
    assert pairs == {m[0]: m[1], m[3]: m[4]}
    simulated = m[1](nn.functional.conv2d(x, _FoldedWeight(m[1])(m[0].weight), m[0].bias, padding=1))
    folded, _ = fold_batchnorm(nn.Sequential(m[0], m[1]))
    conv = dict(folded.named_modules())["0"]
    torch.testing.assert_close(simulated, nn.functional.conv2d(x, quantize_weight(conv.weight), conv.bias, padding=1),
                               rtol=1e-5, atol=1e-5)


def test_qat_leaves_a_plain_float_model_with_frozen_batchnorm():
    m = _convnet()
    x = torch.randn(64, 3, 8, 8)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    keys, stats, w0 = set(m.state_dict()), m[1].running_mean.clone(), m[0].weight.detach().clone()
    info = quantisation_aware_finetune(m, TensorDataset(x, y), 1, lr=0.05, batch_size=16)
    assert set(m.state_dict()) == keys and not parametrize.is_parametrized(m[0])
    assert not m[2]._forward_hooks and not m[1]._forward_pre_hooks
    assert torch.equal(m[1].running_mean, stats)  # BatchNorm statistics frozen
    assert not torch.equal(m[0].weight, w0)  # the weights did train
    assert (info.weights_simulated, info.batchnorms_folded, info.activations_simulated) == (3, 2, 2)
    assert len(info.log) == 1 and math.isfinite(info.log[0]["loss"])


def test_percentile_clipping_clamps_only_outlier_activations():
    from autoprune_edge.converters.int8_prep import ClippedActivation, clip_ranges

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.ReLU6())
    calib = torch.randn(64, 3, 8, 8)
    calib[0, :, 0, 0] = 80.0  # one outlier pixel: it alone sets the first ReLU's max
    ref = net(calib[1:]).detach()
    n = clip_ranges(net, calib, percentile=99.99)
    assert n >= 1 and isinstance(net[1], ClippedActivation)
    big = net[1].hi
    assert 0 < big < 0.8 * float(torch.relu(nn.Sequential(*list(net)[:1])(calib)).max())
    # the other images keep (almost) the same outputs: only the rare largest activations are clamped
    assert torch.allclose(net(calib[1:]), ref, atol=0.05 * float(ref.abs().max()))
    flat = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    assert clip_ranges(flat, torch.rand(16, 3, 4, 4) * 0 + 1.0) == 0  # nothing to clip: constant outputs


class _Stem(nn.Module):
    """ResNet's stem: strided conv -> BN -> ReLU -> 3x3 max-pool with padding 1, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).mean((2, 3)))


def test_a_padded_max_pool_pads_with_a_finite_value_for_int8():
    from autoprune_edge.converters.int8_prep import RECIPES, FinitePadMaxPool, prepare_for_int8

    torch.manual_seed(0)
    m = _Stem().eval()
    prep = prepare_for_int8(m, RECIPES[0], torch.randn(16, 3, 32, 32))
    assert prep.finite_pools == 1 and isinstance(prep.model.pool, FinitePadMaxPool)
    assert prep.model.pool.value == 0.0  # the pool reads a ReLU's output
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(prep.model(x), m(x), atol=1e-5)
    assert isinstance(m.pool, nn.MaxPool2d)  # the user's model is untouched


def test_resnet_stem_int8_file_loads_and_passes_parity(tmp_path):
    # before: onnx2tf wrote the max-pool's padding as a -inf PADV2 sharing the conv's quantisation, the stem
    # got scale ~1e36 (ResNet-18: XNNPACK refused the file; smaller stems: every activation 0)
    from autoprune_edge.converters.convert import convert
    from autoprune_edge.converters.litert import tflite_io_details

    torch.manual_seed(0)
    m = _Stem()
    m.train()
    with torch.no_grad():
        m(torch.randn(64, 3, 32, 32))  # BatchNorm statistics of the data, not the init's
    m.eval()
    arts = convert(m, torch.zeros(1, 3, 32, 32), tmp_path, formats="tflite-int8", calib=torch.randn(64, 3, 32, 32),
                   heldout=torch.randn(16, 3, 32, 32), measure=False)
    int8 = next(a for a in arts if a.format == "tflite-int8")
    # plain post-training quantisation is close: before, the stem tensor had an int8 scale of 1.3e36
    assert int8.parity_ok and int8.int8.recipe == "ptq", [(t.recipe, t.cosine) for t in int8.int8.tried]
    assert int8.int8.tried[0].cosine > 0.999  # 0.9886 before: every stem activation quantised to 0
    tflite_io_details(tmp_path / int8.path)  # LiteRT with XNNPACK loads it


class TwoUses(nn.Module):
    """The input feeds a conv and a skip: normalisation cannot be folded into the conv alone."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + x


def test_pixel_input_folds_normalisation_into_the_first_conv():
    """Raw pixels into the folded network give the normalised network's output, borders included (the padding
    is each channel's mean pixel), and no full-resolution normalisation op is left; otherwise it wraps."""
    from autoprune_edge.converters.int8_prep import PixelConv, PixelInput, pixel_input, to_pixels

    torch.manual_seed(0)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    folded, _ = fold_batchnorm(Chain().eval())
    x = torch.randn(4, 3, 12, 10)
    px = to_pixels(x, mean, std)
    net = pixel_input(folded, mean, std)
    assert isinstance(net.a, PixelConv) and not isinstance(net, PixelInput)
    assert not any(m.groups == 3 for m in net.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        ref = folded(x)
        assert torch.allclose(net(px), ref, atol=1e-4 * float(ref.abs().max()))
        # zero padding of the pixels would be wrong at the borders: the fill matters
        zero_pad = nn.functional.conv2d(px, net.a.conv.weight, net.a.conv.bias, padding=1)
        assert not torch.allclose(zero_pad, folded.a(x), atol=1e-3)
    assert isinstance(pixel_input(fold_batchnorm(TwoUses())[0], mean, std), PixelInput)
    assert isinstance(pixel_input(Chain().eval(), mean, std), PixelInput)  # not a GraphModule: wrapped
