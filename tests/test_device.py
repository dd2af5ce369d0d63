"""Device and precision selection, and the bf16 autocast path on the CPU (the gates stay fp32)."""
import pytest
import torch
from torch.utils.data import TensorDataset

import autoprune_edge.device as device_mod
from autoprune_edge.autoprune import AutoPruneConfig, structured_costs, train_gates
from autoprune_edge.budget import parse_budgets
from autoprune_edge.cost import GroupCostModel
from autoprune_edge.device import CPU_FP32, placed, resolve_device, resolve_precision, resolve_runtime
from autoprune_edge.errors import AutoPruneEdgeError, DeviceError
from autoprune_edge.gates import ChannelGates
from autoprune_edge.graph import PruningGraph
from autoprune_edge.train import TrainConfig, evaluate, train
from toy_models import SmallCNN

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")


def test_cpu_fp32_is_the_plain_loop_in_channels_last():
    rt = resolve_runtime("cpu", "fp32")
    assert rt.autocast_dtype is None and not rt.grad_scaler and rt.scaler() is None
    assert rt.channels_last  # faster on CPUs in fp32 too (benchmarks/results/train_throughput_fp32.md)
    assert rt.memory_format(SmallCNN(w=4)) is torch.channels_last
    assert rt.memory_format(torch.nn.Sequential(torch.nn.Linear(4, 2))) is torch.contiguous_format
    assert CPU_FP32.precision == "fp32" and not CPU_FP32.channels_last  # the old loop, kept for comparisons


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0", "", "cuda:-1"])
def test_unknown_device_is_a_one_line_user_error(spec):
    with pytest.raises(DeviceError) as e:
        resolve_device(spec)
    assert isinstance(e.value, AutoPruneEdgeError) and "\n" not in str(e.value)


@pytest.mark.parametrize("spec", ["fp64", "int8", "half", "BF17"])
def test_unknown_precision_is_a_one_line_user_error(spec):
    with pytest.raises(DeviceError) as e:
        resolve_precision(spec, torch.device("cpu"))
    assert "auto, fp32, bf16, fp16" in str(e.value) and "\n" not in str(e.value)


def test_fp16_on_cpu_is_refused():
    with pytest.raises(DeviceError, match="bf16"):
        resolve_runtime("cpu", "fp16")


def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: True)
    rt = resolve_runtime("cpu", "auto")
    assert (rt.precision, rt.autocast_dtype, rt.grad_scaler, rt.channels_last) == ("bf16", torch.bfloat16, False, True)
    monkeypatch.setattr(device_mod, "cpu_has_bf16", lambda: False)
    assert resolve_runtime("cpu", "auto") == resolve_runtime("cpu", "fp32")


def test_auto_device_without_gpu_per_process_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@NO_CUDA
def test_cuda_without_gpu_is_a_user_error():
    with pytest.raises(DeviceError, match="no CUDA"):
        resolve_device("cuda:0")


def test_mps_unavailable_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="mps"):
        resolve_device("mps")


def test_placed_moves_and_restores_memory_format():
    model = SmallCNN(w=4)
    rt = resolve_runtime("cpu", "bf16")
    with placed(rt, model) as fmt:
        assert fmt is torch.channels_last
        assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.features[0].weight.is_contiguous()


def _gate_setup(seed=0):
    torch.manual_seed(seed)
    model = SmallCNN(w=8)
    graph = PruningGraph(model, torch.randn(1, 3, 8, 8))
    cost = GroupCostModel(graph)
    gates = ChannelGates(graph, AutoPruneConfig().gate_config())
    budget = parse_budgets(f"{float(cost.macs(graph.full_keep())) * 0.6 / 1e6:.5f}MFLOPs")
    data = TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,)))
    return model, graph, cost, gates, budget, data


def _train_gates_on(rt):
    model, graph, cost, gates, budget, data = _gate_setup()
    seen = {}

    def spy(mod, inp, out):
        seen.setdefault("conv_out", out.dtype)

    model.features[0].register_forward_hook(spy)
    gate_grads = []
    for m in gates.m:
        m.register_hook(lambda g: gate_grads.append(g.dtype))
    gates.attach()
    try:
        log = train_gates(graph.model, gates, data, budget, structured_costs(cost, {"macs"}),
                          AutoPruneConfig(epochs=2, batch_size=16, log_every=1), rt=rt)
    finally:
        gates.detach()
    return model, gates, log, seen, gate_grads


def test_bf16_autocast_trains_gates_in_fp32_on_cpu():
    rt = resolve_runtime("cpu", "bf16")
    model, gates, log, seen, gate_grads = _train_gates_on(rt)
    assert seen["conv_out"] == torch.bfloat16  # the network ran under bf16 autocast ...
    assert gate_grads and set(gate_grads) == {torch.float32}  # ... the STE gradients reaching the gates did not
    assert all(m.dtype == torch.float32 and m.device.type == "cpu" for m in gates.m)
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in log.steps)
    assert log.steps[-1]["macs"] > 0


def test_fp32_runtime_gives_today_s_numbers():
    """rt=CPU_FP32 and the default (no rt) are the same loop, bit for bit."""
    a, ga, la, _, _ = _train_gates_on(CPU_FP32)
    model, graph, cost, gates, budget, data = _gate_setup()
    gates.attach()
    try:
        lb = train_gates(graph.model, gates, data, budget, structured_costs(cost, {"macs"}),
                         AutoPruneConfig(epochs=2, batch_size=16, log_every=1))
    finally:
        gates.detach()
    assert all(torch.equal(x, y) for x, y in zip(ga.m, gates.m))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), model.state_dict().values()))
    assert la.steps == lb.steps


def test_bf16_finetune_distill_and_evaluate_on_cpu():
    torch.manual_seed(0)
    model, teacher = SmallCNN(w=8), SmallCNN(w=8)
    data = TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,)))
    rt = resolve_runtime("cpu", "bf16")
    log = train(model, data, TrainConfig(epochs=2, batch_size=16, kd_alpha=0.5), teacher=teacher, rt=rt)
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert 0.0 <= evaluate(model, data, rt=rt) <= 1.0


@CUDA
def test_cuda_auto_precision_and_a_gate_training_run():
    rt = resolve_runtime("cuda", "auto")
    assert rt.device.type == "cuda" and rt.channels_last
    assert rt.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert rt.grad_scaler == (rt.precision == "fp16")
    model, gates, log, seen, gate_grads = _train_gates_on(rt)
    assert set(gate_grads) == {torch.float32}
    assert all(m.device.type == "cpu" for m in gates.m)  # back where they came from
    assert all(p.device.type == "cpu" for p in model.parameters())


@CUDA
def test_cuda_fp16_finetune_with_grad_scaler():
    torch.manual_seed(0)
    model = SmallCNN(w=8)
    data = TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,)))
    rt = resolve_runtime("cuda", "fp16")
    assert rt.grad_scaler
    log = train(model, data, TrainConfig(epochs=1, batch_size=16), rt=rt)
    assert log and all(p.device.type == "cpu" for p in model.parameters())
    assert 0.0 <= evaluate(model, data, rt=rt) <= 1.0
