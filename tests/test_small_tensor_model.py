"""The cost model in the small-tensor regime: graph cleanup as the converter does it, cache, per-pixel and
thread-pool terms, and the NAS-Bench-201 cell networks they are checked on."""
from __future__ import annotations

import collections
from pathlib import Path
import dataclasses

import pytest
import torch
from torch import nn

from autoprune_edge.errors import UnknownModelError
from autoprune_edge.profiles.latency import conv_latency_ms, kernel_speedup, memory_seconds
from autoprune_edge.profiles.profile import model_kernels, profile
from autoprune_edge.targets import load_target
from autoprune_edge.zoo import build_zoo
from autoprune_edge.zoo.nb201 import all_archs, arch_string, connected, parse_arch, sample_archs


def _ops(model, shape=(1, 3, 32, 32)):
    kernels, _ = model_kernels(model.eval(), shape)
    return collections.Counter(k.op for k in kernels)


class DeadBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(8, 8, 3, padding=1)
        self.unused = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        _ = self.unused(x)  # computed, never returned: the converter drops it
        return self.used(x)


class SharedRelu(nn.Module):
    """One tensor read by three ReLU -> conv edges (a NAS cell node)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.b = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.c = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 1))

    def forward(self, x):
        return self.a(x) + self.b(x) + self.c(x)


class PoolThenRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.conv(self.relu(self.pool(x)))


def test_dead_branches_are_not_costed():
    ops = _ops(DeadBranch(), (1, 8, 16, 16))
    assert ops["CONV_2D"] == 1
    small = profile(DeadBranch().eval(), (1, 8, 16, 16), "host", threads=1)
    one = profile(nn.Conv2d(8, 8, 3, padding=1).eval(), (1, 8, 16, 16), "host", threads=1)
    assert small.latency_ms == pytest.approx(one.latency_ms, rel=1e-6)


def test_identical_activations_of_one_tensor_run_once():
    ops = _ops(SharedRelu(), (1, 8, 16, 16))
    assert ops["RELU"] == 1 and ops["CONV_2D"] == 3


def test_relu_fuses_into_a_pool():
    ops = _ops(PoolThenRelu(), (1, 8, 16, 16))
    assert "RELU" not in ops and ops["AVERAGE_POOL_2D"] == 1


def test_nb201_kernels_match_the_converted_graph_counts():
    # |none|+|conv3x3 conv1x1|+|none conv1x1 pool|: node 1 is empty, so the 1x1 edges from it vanish;
    # the relu before each 3x3 fuses into the previous cell's pool (counts read from the .tflite onnx2tf
    # writes for this arch: 22 CONV_2D, 17 AVERAGE_POOL_2D, 2 RELU, 2 PAD)
    arch = "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|nor_conv_1x1~1|avg_pool_3x3~2|"
    ops = _ops(build_zoo("nb201", arch=arch))
    assert (ops["CONV_2D"], ops["AVERAGE_POOL_2D"], ops["RELU"], ops["PAD"]) == (22, 17, 2, 2)


def test_nb201_space_and_arch_strings():
    archs = all_archs()
    assert len(archs) == 5 ** 6 and len(set(archs)) == len(archs)
    a = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
    assert arch_string(parse_arch(a)) == a
    assert not connected(parse_arch("|none~0|+|none~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|"))
    picked = sample_archs(50, seed=1)
    assert len(set(picked)) == 50 and all(connected(parse_arch(x)) for x in picked)
    assert picked == sample_archs(50, seed=1)
    with pytest.raises(UnknownModelError, match="arch string"):
        parse_arch("|conv~0|+|")
    m = build_zoo("nb201", arch=a).eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cache_level_makes_small_traffic_cheaper():
    host = load_target("host")
    mem = host.memory
    assert mem.cache_bytes > 0 and mem.cache_bandwidth_gbps > mem.bandwidth_gbps
    small, big = mem.cache_bytes // 4, mem.cache_bytes * 8
    assert memory_seconds(host, small) == pytest.approx(small / (mem.cache_bandwidth_gbps * 1e9))
    one_level = dataclasses.replace(host, memory=dataclasses.replace(mem, cache_bytes=0))
    assert memory_seconds(one_level, small) == pytest.approx(small / (mem.bandwidth_gbps * 1e9))
    # beyond the cache the extra bytes stream at the DRAM rate
    extra = memory_seconds(host, big) - memory_seconds(host, mem.cache_bytes)
    assert extra == pytest.approx((big - mem.cache_bytes) / (mem.bandwidth_gbps * 1e9))


def test_small_kernels_get_less_of_the_thread_speedup():
    base = load_target("raspberrypi4")
    pi = dataclasses.replace(base, compute=dataclasses.replace(base.compute, parallel_half_work=2e6))
    s4 = pi.thread_speedup(4)
    assert kernel_speedup(pi, 1e12, 4) == pytest.approx(s4, rel=1e-3)
    assert 1.0 < kernel_speedup(pi, pi.compute.parallel_half_work, 4) == pytest.approx(1 + (s4 - 1) / 2)
    assert kernel_speedup(pi, 1e5, 1) == 1.0
    # a tiny conv gains little from 4 threads and pays the pool's sync; a big one scales
    tiny = conv_latency_ms(pi, 16, 16, 1, 1, 4, threads=1), conv_latency_ms(pi, 16, 16, 1, 1, 4, threads=4)
    big = conv_latency_ms(pi, 128, 128, 3, 1, 56, threads=1), conv_latency_ms(pi, 128, 128, 3, 1, 56, threads=4)
    assert tiny[1] >= tiny[0] * 0.8
    assert big[0] / big[1] > 0.8 * s4


def test_pixel_overhead_charges_indirect_kernels_only():
    host = load_target("host")
    assert host.ops.pixel_overhead_ns > 0
    zero = dataclasses.replace(host, ops=dataclasses.replace(host.ops, pixel_overhead_ns=0.0))
    d3 = conv_latency_ms(host, 16, 16, 3, 1, 32, threads=1) - conv_latency_ms(zero, 16, 16, 3, 1, 32, threads=1)
    d1 = conv_latency_ms(host, 16, 16, 1, 1, 32, threads=1) - conv_latency_ms(zero, 16, 16, 1, 1, 32, threads=1)
    assert d3 == pytest.approx(32 * 32 * host.ops.pixel_overhead_ns * 1e-6) and d1 == 0.0


def test_predictions_carry_the_profiles_held_out_error(capsys):
    from autoprune_edge.cli import main
    from autoprune_edge.profiles.compare import compare, format_latency

    pi = load_target("raspberrypi4")
    assert pi.latency_error_pct and pi.source("latency_error_pct").startswith("benchmarks/results/arm_fit.md")
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    rows = compare(net, (1, 3, 160, 160), ["raspberrypi4", "pixel-7"])
    assert rows[0].latency_error_pct == pi.latency_error_pct and rows[1].latency_error_pct is None
    assert rows[0].latency_text.endswith(f"±{pi.latency_error_pct:.0f} %") and rows[1].latency_text.endswith("±?")
    assert not rows[0].warnings
    assert format_latency(12.345, 20.6) == "12.35 ms ±21 %"
    # the Pi 4's error was measured on 128-300 px networks only: a 32-px input gets no error, and says why
    lo, hi = pi.latency_error_inputs
    assert lo <= 160 <= hi and not lo <= 32 <= hi
    assert pi.source("latency_error_inputs").startswith("benchmarks/results/arm_fit.md")
    small = compare(net, (1, 3, 32, 32), ["raspberrypi4"])[0]
    assert small.latency_error_pct is None and small.latency_text.endswith("±?")
    assert any(f"measured on {lo}-{hi} px inputs, not 32 px" in w for w in small.warnings), small.warnings
    assert main(["profile", "lenet5", "--target", "raspberrypi4", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["latency_error_pct"] is None and any("not 28 px" in w for w in out["warnings"])
    # the host's was measured on 32-224 px (ImageNet-size models and NAS-Bench-201 cells at 32x32)
    host = load_target("host")
    assert compare(net, (1, 3, 32, 32), [host])[0].latency_error_pct == host.latency_error_pct


def test_latency_error_inputs_is_validated():
    from autoprune_edge.errors import TargetProfileError
    from autoprune_edge.targets.schema import parse_target

    text = Path(load_target("raspberrypi4").path).read_text(encoding="utf-8")
    for bad in ("[300, 128]", "[128]", "[0, 300]", '"128-300"'):
        with pytest.raises(TargetProfileError, match="latency_error_inputs"):
            parse_target(text.replace("latency_error_inputs = [128, 300]", f"latency_error_inputs = {bad}"), "pi4")
