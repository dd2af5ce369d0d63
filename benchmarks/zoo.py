"""Every torchvision classifier and every built-in model (autoprune_edge.zoo) through the whole pipeline: graph -> gates -> prune ~30 % of MACs ->
compact -> equality with the gated model -> ONNX -> onnxruntime parity -> TFLite fp32 (onnx2tf) -> LiteRT
parity. Random init, batch 1, one model per subprocess (a crash or hang costs one row, not the run).

    python benchmarks/zoo.py                      # all models, all stages, 2 workers
    python benchmarks/zoo.py --models resnet18,vit_b_16 --stop-after ort
    python benchmarks/zoo.py --render-only        # rebuild the Markdown from the JSON

Input size: 224 for every torchvision model (299 for inception_v3), the resolution every torchvision
constructor builds for (ViT's image_size default); the larger evaluation crops of some weight recipes are
not used. Built-in models use their own input size and channels (CIFAR ResNets 3x32x32, LeNets 1x28x28).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, md_table, write_results  # noqa: E402

STAGES = ["graph", "gates", "prune", "compact", "equal", "onnx", "ort", "tflite", "litert"]
EQUAL_TOL = 1e-4
PARITY_TOL = 1e-3
TARGET_KEEP = 0.70  # prune ~30 % of MACs


def run_one(name: str, stop_after: str, work: Path, tflite_max_mparams: float = math.inf) -> dict[str, Any]:
    """All stages for one model, in this process. Records the first failure and stops there."""
    import torch

    from autoprune_edge.budget import Budget
    from autoprune_edge.cost import GroupCostModel
    from autoprune_edge.gates import ChannelGates, GateConfig
    from autoprune_edge.graph import PruningGraph
    from autoprune_edge.methods.selection import select
    from autoprune_edge.models import build_model, default_input_size
    from autoprune_edge.profiles.counting import count_macs
    from autoprune_edge.zoo import ZOO
    from autoprune_edge.pruning import check_equivalence

    torch.manual_seed(0)
    torch.set_num_threads(1)
    row: dict[str, Any] = {"model": name, "times": {}, "passed": [], "failed_stage": None, "error": None}
    t_stage = time.perf_counter()
    stage = "build"

    def done(st: str) -> None:
        nonlocal t_stage
        now = time.perf_counter()
        row["times"][st] = round(now - t_stage, 2)
        row["passed"].append(st)
        t_stage = now

    try:
        model, _ = build_model(name)
        model.eval()
        size = default_input_size(name)
        channels = ZOO[name].in_channels if name in ZOO else 3
        row["input"] = size
        x = torch.randn(1, channels, size, size)
        probe = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))
        dense = count_macs(model, x)
        row["macs_before"], row["params_before"] = dense.macs, dense.params
        with torch.no_grad():
            ref_dense = model(probe)
        row["times"]["build"] = round(time.perf_counter() - t_stage, 2)
        t_stage = time.perf_counter()

        stage = "graph"
        graph = PruningGraph(model, x)
        row["groups"] = len(graph.groups)
        done(stage)

        stage = "gates"
        gates = ChannelGates(graph, GateConfig())
        gates.attach()
        with torch.no_grad():
            open_out = model(probe)
        diff = float((open_out - ref_dense).abs().max()) / (float(ref_dense.abs().max()) or 1.0)
        if diff > EQUAL_TOL:
            raise RuntimeError(f"model with all gates open differs from dense by {diff:.3g} (relative)")
        row["ungated"] = dict(graph.left_dense)
        row["ungated"].update({graph.groups[i].root: why for i, why in sorted(gates.ungated.items())})
        done(stage)

        stage = "prune"
        cost = GroupCostModel(graph)
        budget = Budget("macs", math.floor(TARGET_KEEP * dense.macs), f"{TARGET_KEEP:.0%} of dense MACs")
        keep = select(graph, gates.scores(), [budget],
                      lambda k: {"macs": float(cost.macs(k)), "params": float(cost.params(k))})
        with torch.no_grad():
            for m, k in zip(gates.m, keep):
                m.copy_(torch.where(k, torch.ones_like(m), -torch.ones_like(m)))
            gated_out = model(probe)
        row["groups_pruned"] = sum(1 for k in keep if not bool(k.all()))
        done(stage)

        stage = "compact"
        gates.detach()
        graph.compact(keep)
        after = count_macs(model, x)
        row["macs_after"], row["params_after"] = after.macs, after.params
        row["macs_kept"] = after.macs / dense.macs
        done(stage)

        stage = "equal"
        max_abs, rel = check_equivalence(_Fixed(gated_out), model, probe)
        row["equal_rel"] = rel
        if rel > EQUAL_TOL:
            raise RuntimeError(f"compacted model differs from the gated one by {rel:.3g} of the output scale")
        if after.macs > budget.value:
            raise RuntimeError(f"compacted model has {after.macs} MACs, above the budget {budget.value}")
        done(stage)
        if stop_after == "equal":
            return row

        from autoprune_edge.converters.litert import run_tflite
        from autoprune_edge.converters.onnx_export import export_onnx, run_onnx
        from autoprune_edge.converters.parity import compare
        from autoprune_edge.converters.tflite import onnx_to_tflite

        stage = "onnx"
        onnx_path = export_onnx(model, x, work / "model.onnx")
        done(stage)

        stage = "ort"
        ref = gated_out.numpy()
        p = compare(ref, run_onnx(onnx_path, probe.numpy()))
        row["ort_rel"] = p.rel
        if not p.ok(PARITY_TOL):
            raise RuntimeError(f"onnxruntime differs from torch: {p}")
        done(stage)
        if stop_after == "ort":
            return row
        if after.params > tflite_max_mparams * 1e6:
            row["skipped"] = (f"TFLite/LiteRT not run: {after.params / 1e6:.0f}M params after pruning > "
                              f"--tflite-max-mparams {tflite_max_mparams:g} (time)")
            return row

        stage = "tflite"
        # The conversion subprocess needs ~10x the weights in RAM; give it back what torch holds.
        model = graph = gates = cost = None
        gc.collect()
        files = onnx_to_tflite(onnx_path, work / "tflite", precisions=("fp32",), work_dir=work / "onnx2tf",
                               timeout_s=1200)
        row["tflite_mb"] = round(files["fp32"].stat().st_size / 2**20, 1)
        done(stage)

        stage = "litert"
        p = compare(ref, run_tflite(files["fp32"], probe.numpy()))
        row["litert_rel"] = p.rel
        if not p.ok(PARITY_TOL):
            raise RuntimeError(f"LiteRT differs from torch: {p}")
        done(stage)
    except BaseException as e:  # noqa: BLE001 - every failure is a result here
        row["failed_stage"] = stage
        row["times"][stage] = round(time.perf_counter() - t_stage, 2)
        tb = traceback.extract_tb(e.__traceback__)
        where = f" [at {Path(tb[-1].filename).name}:{tb[-1].lineno}]" if tb else ""
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}{where}"
    return row


class MemorySlots:
    """Run models side by side only while their estimated peak RAM fits: onnx2tf plus the TFLite converter
    hold about ten copies of the weights (AlexNet, 61M params: 3.7 GB peak), so two ViT-L at once would be
    killed for memory where either alone converts."""

    BASE_GB = 1.5  # TensorFlow + torch + onnxruntime in one worker
    BYTES_PER_PARAM = 50.0

    def __init__(self, capacity_gb: float) -> None:
        self.capacity = capacity_gb
        self.free = capacity_gb
        self.cv = threading.Condition()

    def need_gb(self, params: int) -> float:
        return min(self.capacity, self.BASE_GB + self.BYTES_PER_PARAM * params / 1e9)

    @contextmanager
    def hold(self, gb: float):  # noqa: ANN201
        with self.cv:
            self.cv.wait_for(lambda: self.free >= gb - 1e-9)
            self.free -= gb
        try:
            yield
        finally:
            with self.cv:
                self.free += gb
                self.cv.notify_all()


def total_ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 16.0


def dense_params(name: str) -> int:
    """Parameter count, without allocating weights where the constructor allows (meta device)."""
    import torch

    from autoprune_edge.models import build_model

    for device in ("meta", "cpu"):  # RegNet's constructor computes widths with real tensors
        try:
            with torch.device(device):
                model, _ = build_model(name)
            return sum(p.numel() for p in model.parameters())
        except Exception:  # noqa: BLE001 - only a scheduling hint; the worker reports real failures
            continue
    return 0


def run_all(names: list[str], a: argparse.Namespace, stop_after: str, on_row=None) -> list[dict[str, Any]]:  # noqa: ANN001
    """Largest models first (they bound the wall time), as many at once as --jobs and RAM allow; rows come
    back in the order of `names`."""
    params = {n: dense_params(n) for n in names}
    slots = MemorySlots(0.8 * total_ram_gb())
    order = sorted(names, key=lambda n: -params[n])

    def one(n: str) -> dict[str, Any]:
        with slots.hold(slots.need_gb(params[n])):
            row = run_subprocess(n, stop_after, a.timeout, a.tflite_max_mparams)
        if on_row is not None:
            on_row(row)
        return row

    with ThreadPoolExecutor(a.jobs) as pool:
        done = dict(zip(order, pool.map(one, order)))
    return [done[n] for n in names]


class _Fixed:
    """A stand-in 'model' that returns recorded outputs, for check_equivalence."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def eval(self) -> "_Fixed":
        return self

    def __call__(self, _x: Any) -> Any:
        return self.out


def run_subprocess(name: str, stop_after: str, timeout: float, tflite_max_mparams: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"zoo_{name}_") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--worker", name, "--stop-after", stop_after, "--work", tmp,
               "--tflite-max-mparams", str(tflite_max_mparams)]
        t0 = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, env=env)
            log = r.stdout.decode("utf-8", "replace")
            if out.exists():
                row = json.loads(out.read_text())
            else:
                row = {"model": name, "failed_stage": "?", "error": f"worker died (rc={r.returncode}): "
                       + (log.strip().splitlines() or [""])[-1][:300], "passed": [], "times": {}}
        except subprocess.TimeoutExpired:
            row = {"model": name, "failed_stage": "?", "error": f"timeout after {timeout:.0f} s", "passed": [],
                   "times": {}}
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        return row


def _macs(v: float) -> str:
    return f"{v / 1e9:.2f}G" if v >= 1e9 else f"{v / 1e6:.1f}M"


def render(rows: list[dict[str, Any]], stop_after: str, wall: float, jobs: int = 1, partial: bool = False) -> str:
    stages = STAGES[: STAGES.index(stop_after) + 1]
    ok = [r for r in rows if r.get("failed_stage") is None]
    full = [r for r in ok if not r.get("skipped")]
    skipped = [r for r in ok if r.get("skipped")]
    lines = [f"**{len(full)}/{len(rows)} models pass every stage through `{stop_after}`**"
             + (f"; {len(skipped)} more pass every stage through `ort` and were not converted to TFLite "
                f"(too big for the time limit, see the table)" if skipped else "")
             + f". Equality ≤ {EQUAL_TOL:g}, parity ≤ {PARITY_TOL:g}, both relative to the output scale. "
             f"Total wall time {wall / 60:.1f} min with {jobs} parallel worker(s)"
             + (" — **partial: the run was cut off before every model was done**" if partial else "") + ".", ""]
    fails = [r for r in rows if r.get("failed_stage") is not None]
    if fails:
        lines += ["Failures:", ""] + [f"- `{r['model']}` at **{r['failed_stage']}**: {r['error']}" for r in fails] + [""]
    table = []
    for r in rows:
        t = r.get("times", {})
        table.append({
            "model": r["model"], "input": r.get("input"),
            "result": (("PASS (to ort)" if r.get("skipped") else "PASS") if r.get("failed_stage") is None
                       else f"FAIL ({r['failed_stage']})"),
            "MACs": f"{_macs(r['macs_before'])}→{_macs(r['macs_after'])}" if "macs_after" in r else None,
            "kept": f"{r['macs_kept']:.1%}" if "macs_kept" in r else None,
            "Mparams": f"{r['params_before'] / 1e6:.1f}→{r['params_after'] / 1e6:.1f}" if "params_after" in r else None,
            "groups (pruned/left dense)": f"{r.get('groups_pruned', '–')}/{len(r.get('ungated', {}))}"
            if "groups" in r else None,
            "equal rel": r.get("equal_rel"), "ORT rel": r.get("ort_rel"), "LiteRT rel": r.get("litert_rel"),
            "times s (" + "/".join(stages) + ")": "/".join(str(t.get(s, "–")) for s in stages),
            "wall s": r.get("wall_s"),
        })
    lines.append(md_table(table, list(table[0].keys())) if table else "")
    dense = [(r["model"], root, why) for r in rows for root, why in r.get("ungated", {}).items()]
    if dense:
        lines += ["", "Groups left dense (cannot be gated), and why:", ""]
        by_model: dict[str, list[str]] = {}
        for m, root, why in dense:
            by_model.setdefault(m, []).append(f"{root} ({why})")
        for m, items in by_model.items():
            lines.append(f"- `{m}`: {len(items)} group(s): " + "; ".join(items[:4]) + (" …" if len(items) > 4 else ""))
    return "\n".join(lines)


def update(a: argparse.Namespace, names: list[str]) -> None:
    jp = RESULTS / f"{a.name}.json"
    payload = json.loads(jp.read_text())
    t0 = time.perf_counter()
    done = run_all(names, a, payload["stop_after"])
    new = dict(zip(names, done))
    for n, row in new.items():
        print(f"{n:<22} {row['wall_s']:>7.1f} s  " + ("PASS" if row.get("failed_stage") is None
                                                       else f"FAIL at {row['failed_stage']}: {row['error']}"))
    rows = [new.pop(r["model"], r) for r in payload["rows"]] + list(new.values())
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0], Path(__file__).resolve().parent.parent), *sys.argv[1:]])
    reruns = payload.get("reruns", []) + [{"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                           "models": names, "jobs": a.jobs, "tflite_max_mparams": a.tflite_max_mparams,
                                           "wall_s": round(time.perf_counter() - t0, 1)}]
    payload.update(rows=rows, reruns=reruns)
    jp.write_text(json.dumps(payload, indent=1, default=str))
    write_markdown(a.name, payload)


def write_markdown(name: str, payload: dict[str, Any]) -> None:
    """The Markdown of a results JSON, re-runs included (used by --update and --render-only)."""
    md = render(payload["rows"], payload["stop_after"], payload["wall_s"], payload.get("jobs", 1),
                payload.get("partial", False))
    reruns = payload.get("reruns", [])
    if reruns:
        md += "\n\nRows re-run after the main run (their times are not in the total above):\n\n" + "\n".join(
            f"- `{r['command']}` ({r['date']}, {len(r['models'])} models, {r['wall_s'] / 60:.1f} min with "
            f"{r.get('jobs', 1)} worker(s), TFLite size limit "
            f"{'none' if r.get('tflite_max_mparams', math.inf) == math.inf else str(r['tflite_max_mparams']) + 'M'})"
            + (f"; cut off for time before these finished, so their main-run rows are kept: "
               f"{', '.join(r['cut_off_for_time'])}" if r.get("cut_off_for_time") else "")
            for r in reruns)
    (RESULTS / f"{name}.md").write_text(f"<!-- generated by {payload['command']} -->\n\n"
                                        f"Command: `{payload['command']}` ({payload['date']})\n\n" + md + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="",
                    help="comma-separated names (default: all torchvision classifiers and every built-in model)")
    ap.add_argument("--stop-after", default="litert", choices=["equal", "ort", "litert"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument("--name", default="zoo", help="results file stem")
    ap.add_argument("--tflite-max-mparams", type=float, default=math.inf,
                    help="skip TFLite/LiteRT for models with more parameters (millions) after pruning, for time")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--update", action="store_true",
                    help="re-run only --models and replace their rows in the existing results (the rerun is logged)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        row = run_one(a.worker, a.stop_after, Path(a.work), a.tflite_max_mparams)
        Path(a.work, "row.json").write_text(json.dumps(row, default=str))
        return
    if a.render_only:
        write_markdown(a.name, json.loads((RESULTS / f"{a.name}.json").read_text()))
        return
    import torchvision

    from autoprune_edge.zoo import list_zoo

    names = [n for n in a.models.split(",") if n] or (
        torchvision.models.list_models(module=torchvision.models) + list_zoo())
    if a.update:
        update(a, names)
        return
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    def save(partial: bool) -> None:  # after every model, so a cut-off run still leaves its rows
        wall = time.perf_counter() - t0
        write_results(a.name, {"stop_after": a.stop_after, "jobs": a.jobs, "wall_s": wall, "partial": partial,
                               "tflite_max_mparams": a.tflite_max_mparams, "rows": rows},
                      render(rows, a.stop_after, wall, a.jobs, partial))

    lock = threading.Lock()

    def on_row(row: dict[str, Any]) -> None:
        with lock:
            rows.append(row)
            status = "PASS" if row.get("failed_stage") is None else f"FAIL at {row['failed_stage']}: {row['error']}"
            print(f"{row['model']:<22} {row['wall_s']:>7.1f} s  {status} {row.get('skipped', '')}", flush=True)
            save(partial=len(rows) < len(names))

    final = run_all(names, a, a.stop_after, on_row)
    rows[:] = final
    save(partial=False)


if __name__ == "__main__":
    main()
