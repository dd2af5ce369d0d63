"""Host fidelity: predicted `host` latency vs LiteRT-measured latency on this machine.

    nice -n 5 python benchmarks/host_fidelity.py                 # build (cached), measure, analyse
    python benchmarks/host_fidelity.py --stage analyze           # re-analyse the last measurements
    python benchmarks/host_fidelity.py --stage build             # only build/convert the models

Models: random-weight torchvision / zoo networks in five families (MobileNetV2 widths, resolutions and
L1-pruned budgets; ResNet18 L1-pruned; CIFAR ResNet-20/56 L1-pruned at 32x32; EfficientNet-B0 / MnasNet
pruned; SqueezeNet / ShuffleNet / a VGG-style net), pruned with ``autoprune_edge.prune(method="l1",
finetune_epochs=0)`` with varied ``round_to``. Each is exported to ONNX and converted to fp32 TFLite
with onnx2tf; converted files are cached in ``benchmarks/_work/host_fidelity/`` (gitignored), so a
rerun only re-measures.

Timing (the method of research/host-speed.md, made robust to a shared 2-core machine): 1 thread;
every model is visited once per round, paired back-to-back with the reference (mobilenet_v2 1.0/224)
in alternating order; the order of models is reshuffled every round. A visit creates the interpreter,
runs warm-up invokes and times ``runs`` invokes, recording median, p10 and min, and how many cores
*other* processes used during the visit (/proc/stat minus this process's CPU time).

Measured latency of a model = the minimum over its visits of the per-visit p10: the undisturbed
machine, the same statistic the host microbenchmark keeps (its fastest round). On this shared VM whole
visits run up to ~2x slower in phases that no in-VM load counter sees; the median over visits is
reported as a second view.

The headline predictor is the ``host`` target calibrated in this session by ``autoprune-edge calibrate
--target host`` (the microbenchmark of synthetic networks, re-run every round; no real model is used to
fit it). Beside it: the shipped profile as committed, the shipped profile times one session scale,
``calibrate`` fed the ``fit`` models (the architectures the shipped numbers were first fitted on,
host-speed.md §3: MobileNetV2 widths/resolutions and dense ResNet18), and the MACs-only proxy.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.common
# the "shipped" row is host.toml as committed, not the calibration `host` makes of itself on another CPU
# (profiles/host_calibration.py); this benchmark fits its own from the suite timed in its rounds
os.environ["AUTOPRUNE_EDGE_HOST_PROFILE"] = "shipped"

from autoprune_edge.cpu import cpu_signature  # noqa: E402  (torch-free)
from benchmarks.common import code_commit  # noqa: E402  (torch-free)
WORK = ROOT / "benchmarks" / "_work" / "host_fidelity"
RESULTS = ROOT / "benchmarks" / "results"
REF = "mbv2_w1.0_r224"


# --------------------------------------------------------------------------------------------------
# model specs
# --------------------------------------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    family: str
    arch: str  # torchvision name, zoo name, or "vgg_small"
    size: int  # input side
    role: str  # fit | holdout
    kwargs: dict = field(default_factory=dict)
    budget: str | None = None  # L1 prune to this budget
    round_to: int = 1
    in_ch: int = 3


SPECS: list[Spec] = [
    # family 1: MobileNetV2 width / resolution (host-speed.md §3 = fit) and L1-pruned (holdout)
    Spec("mbv2_w1.0_r224", "mobilenet_v2", "mobilenet_v2", 224, "fit", {"width_mult": 1.0}),
    Spec("mbv2_w0.75_r224", "mobilenet_v2", "mobilenet_v2", 224, "fit", {"width_mult": 0.75}),
    Spec("mbv2_w0.5_r224", "mobilenet_v2", "mobilenet_v2", 224, "fit", {"width_mult": 0.5}),
    Spec("mbv2_w0.35_r224", "mobilenet_v2", "mobilenet_v2", 224, "fit", {"width_mult": 0.35}),
    Spec("mbv2_w1.0_r160", "mobilenet_v2", "mobilenet_v2", 160, "fit", {"width_mult": 1.0}),
    Spec("mbv2_w0.75_r160", "mobilenet_v2", "mobilenet_v2", 160, "holdout", {"width_mult": 0.75}),
    Spec("mbv2_l1_200M_rt8", "mobilenet_v2", "mobilenet_v2", 224, "holdout", budget="200MFLOPs", round_to=8),
    Spec("mbv2_l1_120M_rt32", "mobilenet_v2", "mobilenet_v2", 224, "holdout", budget="120MFLOPs", round_to=32),
    Spec("mbv2_l1_80M_rt1", "mobilenet_v2", "mobilenet_v2", 224, "holdout", budget="80MFLOPs", round_to=1),
    # family 2: ResNet18 (dense = fit; L1-pruned = holdout)
    Spec("rn18_dense_r224", "resnet18", "resnet18", 224, "fit"),
    Spec("rn18_l1_900M_rt8", "resnet18", "resnet18", 224, "holdout", budget="900MFLOPs", round_to=8),
    Spec("rn18_l1_450M_rt32", "resnet18", "resnet18", 224, "holdout", budget="450MFLOPs", round_to=32),
    Spec("rn18_l1_250M_rt1_r160", "resnet18", "resnet18", 160, "holdout", budget="250MFLOPs", round_to=1),
    # family 3: CIFAR ResNets at 32x32 (option-A shortcuts)
    Spec("cifar_rn20_dense", "cifar_resnet", "cifar_resnet20", 32, "holdout"),
    Spec("cifar_rn20_l1_20M_rt8", "cifar_resnet", "cifar_resnet20", 32, "holdout", budget="20MFLOPs", round_to=8),
    Spec("cifar_rn56_dense", "cifar_resnet", "cifar_resnet56", 32, "holdout"),
    Spec("cifar_rn56_l1_60M_rt16", "cifar_resnet", "cifar_resnet56", 32, "holdout", budget="60MFLOPs", round_to=16),
    Spec("cifar_rn56_l1_35M_rt1", "cifar_resnet", "cifar_resnet56", 32, "holdout", budget="35MFLOPs", round_to=1),
    # family 4: EfficientNet-B0 / MnasNet (SE blocks, SiLU, 5x5 depthwise)
    Spec("effb0_r224", "efficientnet", "efficientnet_b0", 224, "holdout"),
    Spec("effb0_l1_200M_rt8", "efficientnet", "efficientnet_b0", 224, "holdout", budget="200MFLOPs", round_to=8),
    Spec("mnasnet1.0_l1_150M_rt16", "efficientnet", "mnasnet1_0", 224, "holdout", budget="150MFLOPs", round_to=16),
    Spec("mnasnet0.5_r224", "efficientnet", "mnasnet0_5", 224, "holdout"),
    # family 5: other shapes (fire modules / concat, channel shuffle / transposes, plain 3x3 stacks)
    Spec("squeezenet1.1_r224", "other", "squeezenet1_1", 224, "holdout"),
    Spec("squeezenet1.1_l1_150M_rt8", "other", "squeezenet1_1", 224, "holdout", budget="150MFLOPs", round_to=8),
    Spec("shufflenetv2_x1.0_r224", "other", "shufflenet_v2_x1_0", 224, "holdout"),
    Spec("vgg_small_r64", "other", "vgg_small", 64, "holdout"),
    Spec("vgg_small_l1_60M_rt4_r64", "other", "vgg_small", 64, "holdout", budget="60MFLOPs", round_to=4),
]


#: NAS-Bench-201 cell networks at 32x32 (the small-tensor regime: thin convs, 3x3 average pools and adds in
#: cells). Drawn uniformly from the connected architectures of the space; none of them fits any predictor.
NB201_CELLS = 220
NB201_SEED = 2026


def nb201_specs(n: int = NB201_CELLS) -> list[Spec]:
    from autoprune_edge.zoo.nb201 import sample_archs

    return [Spec(f"nb201_{i:03d}", "nb201", "nb201", 32, "holdout", {"arch": a})
            for i, a in enumerate(sample_archs(n, seed=NB201_SEED))]


def _vgg_small():
    from torch import nn

    layers, c_in = [], 3
    for c in (32, 64, "M", 128, 128, "M", 256, 256, "M"):
        if c == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10))


def _build_arch(spec: Spec):
    import torch
    import torchvision

    torch.manual_seed(0)
    if spec.arch == "vgg_small":
        return _vgg_small()
    if spec.arch.startswith("cifar_resnet") or spec.arch == "nb201":
        from autoprune_edge.zoo import build_zoo

        return build_zoo(spec.arch, **spec.kwargs)
    return getattr(torchvision.models, spec.arch)(**spec.kwargs)


def _recalibrate_bn(model, shape) -> None:
    """Random-init nets collapse activations (denormals would slow XNNPACK): re-estimate BN on N(0,1)."""
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, *shape[1:], generator=g))
    model.eval()


def build_model(spec: Spec):
    """The (pruned) torch model of a spec, cached as a pickled module in the work dir."""
    import torch

    d = WORK / spec.name
    cached = d / "model.pt"
    if cached.is_file():
        return torch.load(cached, weights_only=False)
    shape = (1, spec.in_ch, spec.size, spec.size)
    model = _build_arch(spec).eval()
    _recalibrate_bn(model, shape)
    if spec.budget:
        from autoprune_edge.pruning import prune

        res = prune(model, None, budget=spec.budget, method="l1", input_shape=shape, finetune_epochs=0,
                    round_to=spec.round_to, evaluate_accuracy=False, seed=0)
        model = res.model.eval()
        _recalibrate_bn(model, shape)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(model, cached)
    return model


def convert_model(spec: Spec, model) -> Path:
    import torch

    from autoprune_edge.converters.onnx_export import export_onnx
    from autoprune_edge.converters.tflite import onnx_to_tflite

    d = WORK / spec.name
    out = d / "model_fp32.tflite"
    if out.is_file():
        return out
    shape = (1, spec.in_ch, spec.size, spec.size)
    onnx_path = export_onnx(model, torch.zeros(shape), d / "model.onnx")
    onnx_to_tflite(onnx_path, d, precisions=("fp32",), work_dir=d / "onnx2tf")
    import shutil

    shutil.rmtree(d / "onnx2tf", ignore_errors=True)  # the SavedModel is large; keep only the .tflite
    return out


def stage_build(specs: list[Spec]) -> None:
    for s in specs:
        t0 = time.perf_counter()
        try:
            m = build_model(s)
            p = convert_model(s, m)
            print(f"[build] {s.name}: {p.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", flush=True)
        except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
            (WORK / s.name).mkdir(parents=True, exist_ok=True)
            (WORK / s.name / "FAILED").write_text(f"{type(e).__name__}: {e}\n")
            print(f"[build] {s.name}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)


# --------------------------------------------------------------------------------------------------
# measurement (torch-free: numpy + ai-edge-litert)
# --------------------------------------------------------------------------------------------------


def _cpu_jiffies() -> tuple[float, float]:
    """(busy seconds of all CPUs, this process's CPU seconds)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(v) for v in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    busy = sum(vals[:8]) - idle
    hz = os.sysconf("SC_CLK_TCK")
    t = os.times()
    return busy / hz, t.user + t.system


def visit(path: Path, runs: int, warmup: int) -> dict:
    import numpy as np

    from autoprune_edge.profiles.host import LiveInterpreter

    b0, own0 = _cpu_jiffies()
    w0 = time.perf_counter()
    ms = LiveInterpreter(path).times_ms(runs, warmup=warmup)
    wall = time.perf_counter() - w0
    b1, own1 = _cpu_jiffies()
    others = max(0.0, ((b1 - b0) - (own1 - own0)) / wall) if wall > 0 else 0.0
    return {"median": float(np.median(ms)), "p10": float(np.percentile(ms, 10)), "min": float(ms.min()),
            "others_cores": round(others, 3), "t": time.time()}


def stage_measure(specs: list[Spec], rounds: int, runs: int, warmup: int) -> dict:
    ready = [s for s in specs if (WORK / s.name / "model_fp32.tflite").is_file()]
    ref = next(s for s in ready if s.name == REF)
    others = [s for s in ready if s.name != REF]
    visits: dict[str, list[dict]] = {s.name: [] for s in ready}
    rng = random.Random(0)
    t_start = time.time()
    from autoprune_edge.profiles.calibrate import host_microbenchmark, keep_fastest
    from autoprune_edge.targets import load_target

    host = load_target("host")
    micro: dict[str, dict] = {}
    suite_s: list[float] = []
    for r in range(rounds):
        order = others[:]
        rng.shuffle(order)
        for i, s in enumerate(order):
            a_first = (r + i) % 2 == 0
            seq = [s, ref] if a_first else [ref, s]
            for x in seq:
                visits[x.name].append(visit(WORK / x.name / "model_fp32.tflite", runs, warmup))
        t_suite = time.perf_counter()
        keep_fastest(micro, host_microbenchmark(host, runs=20, rounds=1)["measurements"])
        suite_s.append(time.perf_counter() - t_suite)
        loads = [v["others_cores"] for vs in visits.values() for v in vs[-1:]]
        print(f"[measure] round {r + 1}/{rounds} done ({time.time() - t_start:.0f} s; other load now "
              f"≈{sorted(loads)[len(loads) // 2]:.2f} cores)", flush=True)
    return {"visits": visits, "rounds": rounds, "runs": runs, "warmup": warmup,
            "microbenchmark": list(micro.values()), "suite_seconds_per_round": round(_median(suite_s), 2),
            "date": _dt.datetime.now().isoformat(timespec="seconds")}


# --------------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------------


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return float("nan")
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b."""
    n = len(a)
    conc = disc = ta = tb = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ta) * (conc + disc + tb))
    return (conc - disc) / denom if denom else float("nan")


def mape(pred: list[float], meas: list[float]) -> float:
    return 100.0 * sum(abs(p - m) / m for p, m in zip(pred, meas)) / len(meas)


#: predictors compared, in report order: (row key, label, what it was fitted on)
PREDICTORS = [
    ("calibrated_micro_ms", "`host` calibrated here by the microbenchmark",
     "`autoprune-edge calibrate --target host` run in this session: synthetic networks only, no real model"),
    ("predicted_ms", "shipped `host` profile", "autoprune_edge/targets/host.toml as committed"),
    ("session_scaled_ms", "shipped × session scale", "one factor fitted on the `fit` models in this session"),
    ("calibrated_fit_ms", "calibrate(fit models)", "`calibrate` fed the `fit` models' measurements (kernels read "
                                                   "from their .tflite files)"),
    ("macs_proxy_ms", "MACs / k", "k fitted on the `fit` models"),
    ("macs_proxy_all_ms", "MACs / k (oracle)", "k fitted on all models (a lower bound for any MACs proxy)"),
]
HEADLINE = "calibrated_micro_ms"


def stage_analyze(specs: list[Spec], meas: dict) -> dict:
    import torch

    from autoprune_edge.profiles.calibrate import fit
    from autoprune_edge.profiles.measure import new_document
    from autoprune_edge.profiles.profile import profile
    from autoprune_edge.profiles.tflite_ops import read_kernels
    from autoprune_edge.targets import load_target

    host = load_target("host")
    visits = meas["visits"]
    done = [s for s in specs if visits.get(s.name)]
    rows = []
    for s in done:
        vs = visits[s.name]
        if s.name == REF:
            # the reference is visited beside every model (~250 times a round): its minimum over all of them
            # would be an extreme value the other models never get; keep one visit per round, like theirs
            per_round = max(1, len(vs) // max(1, meas["rounds"]))
            vs = vs[::per_round][: meas["rounds"]]
        p10s = [v["p10"] for v in vs]
        rows.append({
            "model": s.name, "family": s.family, "role": s.role, "input": s.size,
            "budget": s.budget, "round_to": s.round_to if s.budget else None,
            # the undisturbed machine: the fastest visit (the microbenchmark keeps its fastest round too)
            "measured_ms": round(min(p10s), 4),
            "measured_median_visit_ms": round(_median(p10s), 4),
            "visit_spread": round(max(p10s) / min(p10s), 3),
            "visits": len(vs),
        })
    records = []
    for r in rows:
        if r["role"] != "fit":
            continue
        kernels, summ = read_kernels(WORK / r["model"] / "model_fp32.tflite")
        records.append({"model": r["model"], "precision": "fp32", "threads": 1, "median_ms": r["measured_ms"],
                        "macs": summ["macs"], "io_elements": summ["io_elements"],
                        "kernels": [dataclasses.asdict(k) for k in kernels]})
    cal_fit = fit(host, new_document(records, device={}), source="fit models, this session").target
    cal_micro = fit(host, new_document(meas["microbenchmark"], device={}), statistic="p10_ms",
                    source="microbenchmark, this session")
    for r, s in zip(rows, done):
        model = build_model(s)
        shape = (1, s.in_ch, s.size, s.size)
        with torch.no_grad():
            t0 = time.perf_counter()
            p = profile(model, shape, host, precision="fp32", threads=1)
            r["profile_s"] = round(time.perf_counter() - t0, 3)
            r.update(macs=p.macs, padded_macs=p.padded_macs, params=p.params, predicted_ms=round(p.latency_ms, 4))
            r["calibrated_fit_ms"] = round(profile(model, shape, cal_fit, threads=1).latency_ms, 4)
            r["calibrated_micro_ms"] = round(profile(model, shape, cal_micro.target, threads=1).latency_ms, 4)
    fit_rows = [r for r in rows if r["role"] == "fit"]
    k_scale = math.exp(_mean([math.log(r["measured_ms"] / r["predicted_ms"]) for r in fit_rows]))
    # MACs-only proxy: latency = MACs / k (least squares on log latency)
    k_fit = math.exp(_mean([math.log(r["macs"] / r["measured_ms"]) for r in fit_rows]))
    k_all = math.exp(_mean([math.log(r["macs"] / r["measured_ms"]) for r in rows]))
    for r in rows:
        r["session_scaled_ms"] = round(r["predicted_ms"] * k_scale, 4)
        r["macs_proxy_ms"] = round(r["macs"] / k_fit, 4)
        r["macs_proxy_all_ms"] = round(r["macs"] / k_all, 4)
        r["error_pct"] = round(100 * (r[HEADLINE] - r["measured_ms"]) / r["measured_ms"], 2)

    def metrics(sub: list[dict], truth: str = "measured_ms") -> dict:
        out: dict = {"n": len(sub)}
        if len(sub) < 2:
            return out
        m = [r[truth] for r in sub]
        for key, _, _ in PREDICTORS:
            pred = [r[key] for r in sub]
            k = math.exp(_mean(math.log(y / p) for p, y in zip(pred, m)))  # one global scale (oracle)
            out[key] = {"tau": round(kendall_tau(pred, m), 4), "mape": round(mape(pred, m), 2),
                        "scaled_mape": round(mape([k * p for p in pred], m), 2), "scale": round(k, 4),
                        "max_abs_error_pct": round(max(abs(p - y) / y * 100 for p, y in zip(pred, m)), 2)}
        return out

    families = list(dict.fromkeys(r["family"] for r in rows))
    summary = {
        "all": metrics(rows),
        "fit": metrics(fit_rows),
        "holdout": metrics([r for r in rows if r["role"] == "holdout"]),
        "by_family": {f: metrics([r for r in rows if r["family"] == f]) for f in families},
        # the two regimes of issue 16: ImageNet-size models and NAS-Bench-201 cells at 32x32
        "by_set": {"imagenet": metrics([r for r in rows if r["family"] != "nb201"]),
                   "nb201": metrics([r for r in rows if r["family"] == "nb201"])},
        "all_vs_median_visit": metrics(rows, "measured_median_visit_ms"),
        "session_scale": round(k_scale, 4),
        "macs_proxy_gmacs_fit": round(k_fit / 1e6, 3),
        "macs_proxy_gmacs_all": round(k_all / 1e6, 3),
        "calibrated_fit_params": _cal_params(cal_fit),
        "calibrated_micro_params": _cal_params(cal_micro.target),
        "microbenchmark_fit_mape": round(cal_micro.mape(), 2),
        "microbenchmark_networks": len(meas["microbenchmark"]),
        "visit_spread_median": round(_median([r["visit_spread"] for r in rows]), 3),
        "visit_spread_max": round(max(r["visit_spread"] for r in rows), 3),
        "profile_s_mbv2": next((r["profile_s"] for r in rows if r["model"] == REF), None),
    }
    all_loads = [v["others_cores"] for vs in visits.values() for v in vs]
    summary["load"] = {"others_cores_median": round(_median(all_loads), 3),
                       "others_cores_p90": round(sorted(all_loads)[int(0.9 * (len(all_loads) - 1))], 3)}
    return {"rows": rows, "summary": summary}


def _cal_params(t) -> dict:
    out = {"compute.fp32.gmacs_per_core": round(t.precision("fp32").gmacs_per_core, 3),
           "memory.bandwidth_gbps": round(t.memory.bandwidth_gbps, 2),
           "ops.fixed_overhead_us": round(t.ops.fixed_overhead_us, 3)}
    for c in ("conv3x3", "depthwise", "grouped", "fc", "pool", "elementwise"):
        out[f"ops.{c}"] = round(t.efficiency(c, "fp32"), 3)
    return out


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def _cell(m: dict, key: str) -> str:
    x = m.get(key)
    return f"{x['tau']:.3f} / {x['mape']:.1f}%" if x else "–"


def write_results(result: dict, meas: dict, command: str, name: str = "host_fidelity") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    import importlib.metadata as md

    cpu = cpu_signature()
    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "ai_edge_litert": md.version("ai-edge-litert"), "onnx2tf": md.version("onnx2tf"), "cpu": cpu,
           "commit": code_commit()}
    out = {"command": command, "date": meas.get("date"), "environment": env,
           "method": {"threads": 1, "rounds": meas["rounds"], "runs_per_visit": meas["runs"],
                      "warmup": meas["warmup"], "measured_ms": "minimum over visits of the per-visit p10",
                      "reference": REF, "headline_predictor": HEADLINE},
           **result,
           "microbenchmark": [{k: v for k, v in m.items() if k != "kernels"} for m in meas["microbenchmark"]],
           "visits": meas["visits"]}
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    s = result["summary"]
    head = s["all"][HEADLINE]

    def set_line(name: str, label: str) -> str:
        m = s["by_set"][name]
        h = m.get(HEADLINE)
        if not h:
            return f"- {label}: not measured in this run"
        ok = h["tau"] >= 0.90 and h["scaled_mape"] <= 10 and h["mape"] <= 20
        return (f"- {label} ({m['n']} models): τ {h['tau']:.3f}, scaled MAPE {h['scaled_mape']:.1f} %, unscaled MAPE "
                f"{h['mape']:.1f} % — **{'goal met' if ok else 'goal missed'}** (MACs/k oracle: τ "
                f"{m['macs_proxy_all_ms']['tau']:.3f}, scaled MAPE {m['macs_proxy_all_ms']['scaled_mape']:.1f} %)")

    lines = [
        "# Host fidelity: predicted vs measured LiteRT latency on this machine",
        "",
        f"Commands: build (cached) `nice -n 5 python benchmarks/host_fidelity.py --stage build`; measure and "
        f"analyse `{meas.get('command', command)}`"
        + (f"; re-analysed with `{command}`" if command != meas.get("command") else "")
        + " (the default `--stage all` builds, measures and analyses).  ",
        f"Date: {meas.get('date')}; ai-edge-litert {env['ai_edge_litert']}, onnx2tf {env['onnx2tf']}, "
        f"{env['cpus']} CPUs: {cpu['name']} (family/model {cpu['family_model']}; {cpu['speed_flags']}); code "
        f"{env['commit']}.",
        "",
        f"**Goal (issue 16): for each set τ ≥ 0.90, scaled MAPE ≤ 10 %, unscaled MAPE ≤ 20 %. Headline predictor — "
        f"the `host` target calibrated in this session by its suite alone (`measure --suite` + `calibrate`: "
        f"{s['microbenchmark_networks']} synthetic networks, no real model, "
        f"{meas.get('suite_seconds_per_round', '?')} s per timing round): τ {head['tau']:.3f}, MAPE "
        f"{head['mape']:.1f}% over {s['all']['n']} models.**",
        "",
        set_line("imagenet", "ImageNet-size set (five families, 32-224 px)"),
        set_line("nb201", "NAS-Bench-201 cells at 32×32"),
        "",
        "`scaled MAPE` = after one global factor fitted on the set itself (rank-and-shape error only).",
        "",
        f"Measured = the minimum over visits of the per-visit p10 of {meas['runs']} invokes (1 thread, "
        f"{meas['rounds']} rounds, models in shuffled order, each visit paired with {REF}, the microbenchmark "
        "re-run every round and its fastest round kept). The minimum is the undisturbed machine: on this shared "
        f"VM the same model's visits differ by a median factor of {s['visit_spread_median']:.2f} "
        f"(max {s['visit_spread_max']:.2f}) while processes inside the VM used a median of "
        f"{s['load']['others_cores_median']} other cores (p90 {s['load']['others_cores_p90']}), so the slow "
        "phases come from outside the VM and no in-VM load filter can see them. The median over visits is "
        "reported as a second view below.",
        "",
        "`fit` = architectures the shipped profile's numbers were originally fitted on (research/host-speed.md "
        "§3: the MobileNetV2 width/resolution family and dense ResNet18); `holdout` = everything else. "
        "The headline predictor used none of them.",
        "",
        "| predictor | fitted on | τ / MAPE all | τ / MAPE holdout | τ / MAPE fit | max error | "
        "τ / MAPE vs median visit |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label, how in PREDICTORS:
        a = s["all"][key]
        lines.append(f"| {label} | {how} | {_cell(s['all'], key)} | {_cell(s['holdout'], key)} | "
                     f"{_cell(s['fit'], key)} | {a['max_abs_error_pct']:.1f}% | "
                     f"{_cell(s['all_vs_median_visit'], key)} |")
    lines += ["", "Per family (τ / MAPE):", "",
              "| family | n | " + " | ".join(label for _, label, _ in PREDICTORS) + " |",
              "|---|---|" + "---|" * len(PREDICTORS)]
    for f, m in s["by_family"].items():
        if m.get("n", 0) < 2:
            continue
        lines.append(f"| {f} | {m['n']} | " + " | ".join(_cell(m, k) for k, _, _ in PREDICTORS) + " |")
    lines += ["", f"Session scale (measured / shipped on the fit models): {s['session_scale']}. MACs/k: "
              f"{s['macs_proxy_gmacs_fit']} GMAC/s (fit), {s['macs_proxy_gmacs_all']} GMAC/s (oracle).", "",
              f"Fitted numbers — microbenchmark (its own fit MAPE {s['microbenchmark_fit_mape']:.1f}%): "
              + json.dumps(s["calibrated_micro_params"]) + "; fit models: " + json.dumps(s["calibrated_fit_params"])
              + ".", "",
              f"`profile()` on mobilenet_v2 took {s['profile_s_mbv2']} s here.", "",
              "| model | family | role | input | MACs (M) | padded MACs (M) | measured (ms) | median visit (ms) | "
              "spread | calibrated here (ms) | error | shipped (ms) | calibrate(fit) (ms) | MACs/k (ms) | visits |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(result["rows"], key=lambda r: (r["family"], r["measured_ms"])):
        lines.append(f"| {r['model']} | {r['family']} | {r['role']} | {r['input']} | {r['macs'] / 1e6:.1f} | "
                     f"{r['padded_macs'] / 1e6:.1f} | {r['measured_ms']:.3f} | {r['measured_median_visit_ms']:.3f} | "
                     f"{r['visit_spread']:.2f} | {r[HEADLINE]:.3f} | {r['error_pct']:+.1f}% | {r['predicted_ms']:.3f} | "
                     f"{r['calibrated_fit_ms']:.3f} | {r['macs_proxy_ms']:.3f} | {r['visits']} |")
    lines += ["", "Microbenchmark (fastest round, p10 ms):", "",
              "| network | MACs (M) | p10 (ms) |", "|---|---|---|"]
    for m in meas["microbenchmark"]:
        lines.append(f"| {m['model']} | {m['macs'] / 1e6:.1f} | {m['p10_ms']:.3f} |")
    failed = sorted(p.parent.name for p in WORK.glob("*/FAILED"))
    if failed:
        lines += ["", "Models that failed to build or convert (not measured): " + ", ".join(
            f"{n} ({(WORK / n / 'FAILED').read_text().strip()[:120]})" for n in failed)]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:24]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=["all", "build", "measure", "analyze"], default="all")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--only", help="comma list of model names")
    ap.add_argument("--set", choices=["all", "imagenet", "nb201"], default="all",
                    help="imagenet: the 27 models of five families; nb201: NAS-Bench-201 cells at 32x32")
    ap.add_argument("--results", default="host_fidelity", metavar="NAME",
                    help="results file name (another CPU: another name; the measurements cache is shared)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    specs = {"all": SPECS + nb201_specs(), "imagenet": SPECS, "nb201": [SPECS[0]] + nb201_specs()}[args.set]
    if args.only:
        keep = set(args.only.split(",")) | {REF}
        specs = [s for s in specs if s.name in keep]
    WORK.mkdir(parents=True, exist_ok=True)
    command = "nice -n 5 python benchmarks/host_fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.stage in ("all", "build"):
        stage_build(specs)
    meas_path = WORK / "measurements.json"
    if args.stage in ("all", "measure"):
        meas = stage_measure(specs, args.rounds, args.runs, args.warmup)
        meas["command"] = command.strip()
        meas_path.write_text(json.dumps(meas))
    if args.stage in ("all", "analyze", "measure"):
        meas = json.loads(meas_path.read_text())
        write_results(stage_analyze(specs, meas), meas, command.strip(), args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
