"""profile() on every device profile: accelerator placement and fallback, SRAM spill, MCU RAM overflow,
default precision, torchvision models, the fast re-prediction path, and speed."""
from __future__ import annotations

import time

import pytest
from torch import nn

from autoprune_edge.profiles.kernels import predict_ms
from autoprune_edge.profiles.profile import model_kernels, profile
from autoprune_edge.targets import available_targets, load_target


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


@pytest.mark.parametrize("name", available_targets())
def test_tiny_cnn_on_every_target(name):
    t = load_target(name)
    p = profile(tiny_cnn(), (1, 3, 32, 32), t)
    assert p.precision == t.default_precision
    assert p.latency_ms > 0 and p.peak_memory_bytes > 0 and p.model_bytes > 0
    # the only warning a tiny CNN may get: the target's latency error was never measured at 32 px
    unchecked = t.latency_error_pct is not None and t.latency_error_at(32) is None
    assert p.fits and len(p.warnings) == int(unchecked), p.warnings
    assert all("was measured on" in w for w in p.warnings)
    assert p.ram_bytes == t.memory.ram_bytes
    for prec in t.precisions:  # every listed precision can be profiled
        assert profile(tiny_cnn(), (1, 3, 32, 32), t, precision=prec).latency_ms > 0


def test_mcu_ram_overflow_warns_and_does_not_fit():
    tv = pytest.importorskip("torchvision")
    p = profile(tv.models.mobilenet_v2(), (1, 3, 224, 224), "esp32-s3")
    assert p.precision == "int8"
    assert not p.fits
    assert any("exceeds the device's" in w and "RAM" in w for w in p.warnings)
    # weights stay in flash on the MCU: peak RAM is the arena plus the runtime, not the weights
    t = load_target("esp32-s3")
    assert p.weights_bytes == 0
    assert p.peak_memory_bytes == p.arena_bytes + t.memory.runtime_overhead_bytes
    small = profile(tiny_cnn(), (1, 3, 32, 32), "esp32-s3")
    assert small.fits and small.peak_memory_bytes < t.memory.ram_bytes


def test_coral_sram_overflow_streams_parameters():
    tv = pytest.importorskip("torchvision")
    big = profile(tv.models.resnet18(), (1, 3, 224, 224), "coral-edgetpu")
    acc = big.extra["accelerator"]
    assert acc["spill_bytes"] > 0 and acc["spill_ms"] > 0
    assert any("on chip" in w and "stream" in w for w in big.warnings)
    assert big.fits  # slower, but it still runs
    small = profile(tv.models.mobilenet_v2(), (1, 3, 224, 224), "coral-edgetpu")
    assert small.extra["accelerator"]["spill_bytes"] == 0 and small.warnings == []


class Shuffle(nn.Module):
    """conv -> channel shuffle (5-D view + transpose) -> conv -> conv: the shuffle cannot run on the Edge TPU."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 1)
        self.c = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.c(self.b(x))


def test_edgetpu_unsupported_op_moves_the_rest_to_cpu():
    p = profile(Shuffle(), (1, 3, 32, 32), "coral-edgetpu")
    ops = {lp.name: lp for lp in p.layers}
    shuffle = [lp for lp in p.layers if lp.op == "TRANSPOSE"]
    assert len(shuffle) == 1
    assert ops["a"].runs_on == "accelerator"
    assert shuffle[0].runs_on == "cpu" and ops["b"].runs_on == "cpu" and ops["c"].runs_on == "cpu"
    assert any("cannot run" in w and "TRANSPOSE" in w and "partitions the graph once" in w for w in p.warnings)
    plain = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1))
    assert p.latency_ms > profile(plain, (1, 3, 32, 32), "coral-edgetpu").latency_ms


class WithEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.fc1(self.emb(x.long().clamp(0, 99))))


def test_coreml_falls_back_per_op_only():
    p = profile(WithEmbedding(), (1, 8), "iphone-15")
    runs = {lp.name: lp.runs_on for lp in p.layers if lp.runs_on}
    assert runs["emb"] == "cpu" and runs["fc1"] == "accelerator" and runs["fc2"] == "accelerator"
    assert any("Apple Neural Engine cannot run GATHER" in w and "fall back" in w for w in p.warnings)


def test_delegate_free_targets_have_no_placement():
    p = profile(Shuffle(), (1, 3, 32, 32), "raspberrypi4")
    assert all(lp.runs_on == "" for lp in p.layers) and "accelerator" not in p.extra


def test_tensorrt_fuses_any_activation():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 8, 1), nn.Hardswish())
    trt = profile(m, (1, 3, 32, 32), "jetson-nano")
    tfl = profile(m, (1, 3, 32, 32), "raspberrypi4")
    assert trt.kernels == 2 and tfl.kernels == 4


def test_fast_repredict_matches_profile():
    tv = pytest.importorskip("torchvision")
    m = tv.models.mobilenet_v3_small()
    kernels, io = model_kernels(m, (1, 3, 160, 160))
    for name in ("raspberrypi4", "coral-edgetpu", "pixel-7"):
        t = load_target(name)
        assert predict_ms(kernels, t, io_elements=io) == pytest.approx(profile(m, (1, 3, 160, 160), t).latency_ms)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "shufflenet_v2_x0_5", "squeezenet1_1"])
def test_torchvision_models_profile_everywhere(arch):
    tv = pytest.importorskip("torchvision")
    m = getattr(tv.models, arch)()
    for name in ("host", "coral-edgetpu", "iphone-15"):
        p = profile(m, (1, 3, 96, 96), name)
        assert p.latency_ms > 0 and p.macs > 0 and p.params == sum(q.numel() for q in m.parameters())
    if arch.startswith("shufflenet"):  # channel shuffle: 5-D view + transpose
        assert any("Edge TPU cannot run" in w for w in profile(m, (1, 3, 96, 96), "coral-edgetpu").warnings)


def test_profile_is_fast_enough_for_pruning_loops():
    tv = pytest.importorskip("torchvision")
    m = tv.models.mobilenet_v2()
    profile(m, (1, 3, 224, 224), "raspberrypi4")  # warm-up
    t0 = time.perf_counter()
    for _ in range(3):
        profile(m, (1, 3, 224, 224), "raspberrypi4")
    per_call = (time.perf_counter() - t0) / 3
    assert per_call < 1.0, f"profile() took {per_call:.2f} s per call on mobilenet_v2"  # ≈0.1 s on an idle core
