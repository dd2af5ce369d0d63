"""Resume after kill -9, and torchrun with 2 CPU processes giving the one-process result (CPU, fp32: the
GPU is hidden from these runs, since `prune` defaults to device auto); torchrun on 2 GPUs with nccl."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TESTS = Path(__file__).parent
ARGS = ["prune", "--model", "toy_models:SmallCNN", "--data", "synthetic?train=384&val=64", "--input-size", "12",
        "--budget", "0.5MFLOPs", "--epochs", "3", "--finetune-epochs", "2", "--seed", "3"]


def _env(cpu=True):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TESTS) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _cli(args, cpu=True, **kw):
    return subprocess.run([sys.executable, "-m", "autoprune_edge", *args], env=_env(cpu), capture_output=True,
                          text=True, **kw)


def _weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def test_resume_after_kill9_matches_uninterrupted_run(tmp_path):
    ref = _cli([*ARGS, "--out", str(tmp_path / "ref"), "--json"])
    assert ref.returncode == 0, ref.stderr
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-m", "autoprune_edge", *ARGS, "--out", str(tmp_path / "run"),
                             "--checkpoint-dir", str(ck)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (ck / "gates.pt").exists():  # first gate-training epoch checkpointed
        assert proc.poll() is None, "run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run").exists()  # nothing half-written
    first = torch.load(ck / "gates.pt", weights_only=True)
    assert first["epoch"] < 3
    res = _cli([*ARGS, "--out", str(tmp_path / "run"), "--checkpoint-dir", str(ck), "--resume"])
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stderr
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    assert not ck.exists()  # removed after success


def test_resume_without_checkpoint_is_a_user_error(tmp_path):
    r = _cli([*ARGS, "--out", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "none"), "--resume"])
    assert r.returncode == 2 and "--resume" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_match_one(tmp_path):
    one = _cli([*ARGS, "--out", str(tmp_path / "one"), "--json"])
    assert one.returncode == 0, one.stderr
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "autoprune_edge", *ARGS, "--out",
                          str(tmp_path / "two"), "--json"], env=_env(), capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    p1 = json.loads((tmp_path / "one" / "plan.json").read_text())
    p2 = json.loads((tmp_path / "two" / "plan.json").read_text())
    assert p1["widths"] == p2["widths"]  # the same channels survive
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-3, worst  # float noise from summation order only


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_torchrun_two_gpus_with_nccl(tmp_path):
    """device auto puts each process on its own GPU (cuda:LOCAL_RANK) and the collectives go through nccl."""
    one = _cli([*ARGS, "--out", str(tmp_path / "one"), "--json"], cpu=False)
    assert one.returncode == 0, one.stderr
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "autoprune_edge", *ARGS, "--out",
                          str(tmp_path / "two"), "--json"], env=_env(cpu=False), capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    p1 = json.loads((tmp_path / "one" / "plan.json").read_text())
    p2 = json.loads((tmp_path / "two" / "plan.json").read_text())
    assert p1["widths"].keys() == p2["widths"].keys()
