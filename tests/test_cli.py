"""The command line end to end on a tiny model, and every user error it must turn into one line + exit 2."""
import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from autoprune_edge.cli import main
from autoprune_edge.outputs import staged_dir

TOY = "toy_models:SmallCNN"  # 3x16x16 -> 10 classes, ~1.9M MACs


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real build (synthetic data, fp32 TFLite) shared by the tests that inspect its outputs."""
    out = tmp_path_factory.mktemp("build")
    rc = main(["build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--input-size", "16",
               "--pretrain-epochs", "1", "--epochs", "1", "--finetune-epochs", "1", "--out", str(out),
               "--name", "toy", "--json"])
    assert rc == 0
    return out / "toy"


def test_build_writes_a_complete_verified_folder(built):
    names = {p.name for p in built.iterdir()}
    assert {"model.onnx", "model_fp32.tflite", "labels.txt", "model_card.json", "report.md", "pruned"} <= names
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")], "temp folders left behind"
    card = json.loads((built / "model_card.json").read_text())
    assert card["macs"]["after"] <= 1e6 < card["macs"]["before"]
    assert card["budget"][0]["met"] is True
    tfl = next(a for a in card["artifacts"] if a["format"] == "tflite-fp32")
    # MACs counted from the .tflite graph itself agree with the torch count of the compacted model
    assert tfl["macs_counted"] == card["macs"]["after"]
    assert tfl["parity_ok"] and tfl["parity"]["rel"] < 1e-3
    assert set(tfl["host_latency_ms"]) >= {"1"} and tfl["host_latency_ms"]["1"] > 0
    assert card["equivalence"]["rel"] < 1e-4
    assert card["accuracy"]["synthetic"] is True and 0 <= card["accuracy"]["after"] <= 1
    assert card["training"]["precision"] == "fp32"  # the default: bit-reproducible on every CPU
    assert len((built / "labels.txt").read_text().split()) == 10
    assert "synthetic data" in (built / "report.md").read_text()


def test_model_card_numbers_reproduce_from_files(built):
    """Reload the pruned torch model from plan + safetensors and run the .tflite: they agree."""
    from autoprune_edge.converters.litert import run_tflite
    from autoprune_edge.converters.tflite_graph import count_tflite_macs
    from autoprune_edge.plan import load_pruned
    from autoprune_edge.profiles.counting import count_macs

    model, plan = load_pruned(built / "pruned")
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref = model(x).numpy()
    got = run_tflite(built / "model_fp32.tflite", x.numpy())
    assert np.abs(ref - got).max() <= 1e-3 * np.abs(ref).max()
    card = json.loads((built / "model_card.json").read_text())
    assert count_macs(model, x[:1]).macs == card["macs"]["after"] == count_tflite_macs(
        built / "model_fp32.tflite").macs


def test_profile_and_compare_on_outputs(built, capsys):
    rc, out, _ = run(capsys, "profile", built / "model_fp32.tflite", "--runs", "5", "--json")
    assert rc == 0 and json.loads(out)["macs"] <= 1e6
    rc, out, _ = run(capsys, "profile", built / "pruned", "--target", "raspberrypi4", "--json")
    s = json.loads(out)
    assert rc == 0 and s["latency_ms"] > 0 and s["macs"] <= 1e6
    rc, out, _ = run(capsys, "compare", built / "pruned", "--targets", "host,raspberrypi4", "--json")
    rows = json.loads(out)["targets"]
    assert rc == 0 and [r["target"] for r in rows] == ["host", "raspberrypi4"]
    assert rows[1]["latency_ms"] > rows[0]["latency_ms"]  # a Pi is slower than this host


def test_convert_command_int8(built, tmp_path, capsys):
    rc, out, err = run(capsys, "convert", built / "pruned", "--formats", "tflite-fp32,tflite-int8",
                       "--calib-data", "synthetic", "--calib-samples", "32", "--no-measure", "--out", tmp_path / "c",
                       "--json")
    assert rc == 0, err
    arts = {a["format"]: a for a in json.loads(out)["artifacts"]}
    assert set(arts) == {"onnx", "tflite-fp32", "tflite-int8"}
    assert arts["tflite-int8"]["parity"]["cosine"] > 0.98
    assert arts["tflite-int8"]["bytes"] < arts["tflite-fp32"]["bytes"]


def test_prune_command_then_reload(tmp_path, capsys):
    rc, out, err = run(capsys, "prune", "--model", TOY, "--method", "l1", "--budget", "1.2MFLOPs", "--input-size",
                       "16", "--out", tmp_path / "p", "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["macs_after"] <= 1.2e6 and (tmp_path / "p" / "plan.json").exists()
    assert "\x1b" not in out and err.strip() == ""  # --json: quiet, nothing but JSON on stdout


def test_prune_l1_unstructured_is_gradual_magnitude_pruning_over_epochs(tmp_path, capsys):
    rc, out, err = run(capsys, "prune", "--model", TOY, "--method", "l1", "--granularity", "unstructured", "--epochs",
                       "1", "--finetune-epochs", "0", "--budget", "5kparams", "--data", "synthetic", "--input-size",
                       "16", "--out", tmp_path / "p", "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["method"] == "l1" and s["params_after"] <= 5_000 and s["nonzero_after"] < s["nonzero_before"]


def test_budget_above_cost_is_a_noop(tmp_path, capsys):
    rc, out, _ = run(capsys, "prune", "--model", TOY, "--method", "l1", "--budget", "1GFLOPs", "--input-size", "16",
                     "--out", tmp_path / "p", "--json")
    s = json.loads(out)
    assert rc == 0 and s["macs_after"] == s["macs_before"]
    assert any("already meets" in n for n in s["notes"])


def test_targets_list_and_show(capsys):
    rc, out, _ = run(capsys, "targets", "--json")
    names = [t["name"] for t in json.loads(out)["targets"]]
    assert rc == 0 and {"host", "raspberrypi4"} <= set(names)
    rc, out, _ = run(capsys, "targets", "show", "raspberrypi4", "--json")
    assert rc == 0 and json.loads(out)["name"] == "raspberrypi4"


def _bad_mnist(tmp_path):
    raw = tmp_path / "mn" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz"):
        (raw / n).write_bytes(gzip.compress(b"not an idx file"))
    return tmp_path / "mn"


def _bad_toml(tmp_path):
    p = tmp_path / "board.toml"
    p.write_text('name = "board"\n[compute\ncores = 4\n')
    return p


def _weights(tmp_path, kind):
    p = tmp_path / "w.pth"
    if kind == "corrupt":
        p.write_bytes(b"\x00garbage")
    else:  # weights of a different architecture
        from toy_models import ResidualNet
        torch.save(ResidualNet().state_dict(), p)
    return p


ERRORS = [
    (lambda t: ["prune", "--model", "no_such_net", "--budget", "1MFLOPs", "--out", t / "o"], "no_such_net"),
    (lambda t: ["build", "--target", "no_such_board", "--budget", "1MFLOPs", "--out", t / "o"], "no_such_board"),
    (lambda t: ["prune", "--model", TOY, "--budget", "100MFLOP", "--out", t / "o"], "100MFLOP"),
    (lambda t: ["prune", "--model", TOY, "--budget", "-5ms", "--out", t / "o"], "-5ms"),
    (lambda t: ["prune", "--model", TOY, "--budget", "abc", "--out", t / "o"], "abc"),
    (lambda t: ["prune", "--model", TOY, "--method", "l1", "--budget", "1kFLOPs", "--input-size", "16", "--out",
                t / "o"], "cannot be reached"),
    (lambda t: ["prune", "--model", TOY, "--budget", "1MFLOPs", "--input-size", "16", "--out", t / "o"], "--data"),
    (lambda t: ["prune", "--model", TOY, "--method", "l1", "--epochs", "2", "--budget", "1MFLOPs", "--out",
                t / "o"], "--epochs 0"),
    (lambda t: ["prune", "--model", TOY, "--method", "magic", "--epochs", "0", "--budget", "1MFLOPs", "--out",
                t / "o"], "magic"),
    (lambda t: ["prune", "--model", TOY, "--budget", "1MFLOPs", "--data", "mnist:/no/such/dir", "--out", t / "o"],
     "/no/such/dir"),
    (lambda t: ["prune", "--model", TOY, "--budget", "1MFLOPs", "--data", f"mnist:{_bad_mnist(t)}", "--out",
                t / "o"], "mn"),
    (lambda t: ["prune", "--model", TOY, "--budget", "1MFLOPs", "--weights", _weights(t, "corrupt"), "--out",
                t / "o"], "w.pth"),
    (lambda t: ["prune", "--model", TOY, "--method", "l1", "--budget", "1MFLOPs", "--input-size", "16", "--weights",
                _weights(t, "other"), "--out", t / "o"], "w.pth"),
    (lambda t: ["prune", "--model", TOY, "--budget", "1MFLOPs", "--out", t / "file.txt" / "sub"], "file.txt"),
    (lambda t: ["build", "--target", _bad_toml(t), "--budget", "1MFLOPs", "--out", t / "o"], "line"),
    (lambda t: ["convert", "no_such_net", "--out", t / "o"], "no_such_net"),
    (lambda t: ["prune", "--model", TOY, "--budget", "1MFLOPs", "--device", "tpu9", "--out", t / "o"], "tpu9"),
    (lambda t: ["build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--device", "cpu",
                "--precision", "fp16", "--out", t / "o"], "fp16"),
    (lambda t: ["build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--method", "l1",
                "--epochs", "2", "--out", t / "o"], "--epochs 0"),
    (lambda t: ["profile", "toy_models:NoSuchFactory", "--target", "host"], "NoSuchFactory"),
    (lambda t: ["prune", "--model", TOY, "--budget", "1MFLOPs", "--data", "synthetic", "--batch-size", "0", "--out",
                t / "o"], "batch size"),
    (lambda t: ["build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--batch-size", "-2", "--out",
                t / "o"], "batch size"),
    (lambda t: ["build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--qat-epochs", "-1",
                "--out", t / "o"], "--qat-epochs"),
    (lambda t: ["build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--qat-epochs", "1",
                "--formats", "onnx", "--out", t / "o"], "tflite-int8"),
    (lambda t: ["prune", "--model", TOY, "--budget", "1MFLOPs", "--data", "synthetic", "--regrow", "--out",
                t / "o"], "--granularity unstructured"),
    (lambda t: ["build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--method", "l1", "--epochs",
                "0", "--regrow", "--out", t / "o"], "--granularity unstructured with"),
    (lambda t: ["prune", "--model", TOY, "--budget", "5kparams", "--data", "synthetic", "--method", "taylor",
                "--granularity", "unstructured", "--out", t / "o"], "autoprune (per-weight gates) or l1"),
]


@pytest.mark.parametrize("argv,needle", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "file.txt").write_text("x")
    rc, out, err = run(capsys, *argv(tmp_path))
    lines = [ln for ln in err.splitlines() if ln.startswith("autoprune-edge")]  # others: progress lines
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("autoprune-edge: error:"), err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_interrupt_leaves_nothing(tmp_path):
    dest = tmp_path / "result"
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(dest) as tmp:
            (tmp / "model.onnx").write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_replaces_previous_result(tmp_path):
    dest = tmp_path / "result"
    for content in ("first", "second"):
        with staged_dir(dest) as tmp:
            (tmp / "f.txt").write_text(content)
    assert (dest / "f.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "autoprune_edge", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "autoprune-edge" in r.stdout
    r = subprocess.run([sys.executable, "-m", "autoprune_edge", "build"], capture_output=True, text=True)
    assert r.returncode == 2 and "--target" in r.stderr


def test_prune_bad_distillation_settings_one_line_error(tmp_path, capsys):
    from autoprune_edge.cli import main

    rc = main(["prune", "--model", "lenet5", "--budget", "100kFLOPs", "--data", "synthetic", "--method", "l1",
               "--distill", "--distill-temperature", "0", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "temperature > 0" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_prune_bad_cost_exponent_one_line_error(tmp_path, capsys):
    from autoprune_edge.cli import main

    rc = main(["prune", "--model", "lenet5", "--budget", "100kFLOPs", "--data", "synthetic", "--cost-exponent", "2",
               "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "cost exponent must be between 0" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_build_takes_the_pruning_options_and_records_device_and_precision(tmp_path, capsys):
    """build accepts prune's training flags (distillation, gate lr, batch size, device, precision)."""
    rc, out, err = run(capsys, "build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--input-size", "16",
                       "--pretrain-epochs", "0.5", "--epochs", "0.5", "--finetune-epochs", "0.5", "--distill",
                       "--distill-alpha", "0.5", "--lr-gates", "0.01", "--batch-size", "16", "--device", "cpu",
                       "--precision", "bf16", "--formats", "onnx", "--out", tmp_path, "--name", "toy", "--json")
    assert rc == 0, err
    card = json.loads((tmp_path / "toy" / "model_card.json").read_text())
    assert card["training"]["device"] == "cpu" and card["training"]["precision"] == "bf16"
    assert card["macs"]["after"] <= 1e6 and card["equivalence"]["rel"] < 1e-4
    assert "Trained on `cpu` in bf16" in (tmp_path / "toy" / "report.md").read_text()


def test_bad_int8_io_is_one_line_error(tmp_path):
    for cmd in (["build", "--target", "host", "--budget", "1GFLOPs"], ["convert", "mobilenet_v2"]):
        r = subprocess.run([sys.executable, "-m", "autoprune_edge", *cmd, "--int8-io", "int4", "--out",
                            str(tmp_path / "o")], capture_output=True, text=True)
        errs = [ln for ln in r.stderr.splitlines() if "error" in ln]
        assert r.returncode == 2 and len(errs) == 1 and "--int8-io" in errs[0] and "uint8" in errs[0], r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


def test_convert_rejects_unknown_int8_io(tmp_path):
    from autoprune_edge.converters.convert import convert
    from autoprune_edge.errors import AutoPruneEdgeError

    with pytest.raises(AutoPruneEdgeError, match="--int8-io 'int4'"):
        convert(torch.nn.Conv2d(3, 4, 1), torch.zeros(1, 3, 8, 8), tmp_path, formats="onnx", int8_io="int4")


def test_build_with_qat_fine_tunes_before_converting_and_says_so(tmp_path, capsys):
    rc, out, err = run(capsys, "build", "--model", TOY, "--target", "host", "--budget", "1MFLOPs", "--input-size", "16",
                       "--pretrain-epochs", "1", "--epochs", "1", "--finetune-epochs", "0.5", "--qat-epochs", "0.5",
                       "--formats", "tflite-int8", "--out", tmp_path, "--name", "q", "--json")
    assert rc == 0, err
    card = json.loads((tmp_path / "q" / "model_card.json").read_text())
    qat = card["training"]["quantisation_aware"]
    assert qat["epochs"] == 0.5 and qat["weights_simulated"] >= 3 and qat["batchnorms_folded"] >= 1
    assert qat["accuracy_after"] == card["accuracy"]["after"] and len(qat["log"]) == 1
    assert next(a for a in card["artifacts"] if a["format"] == "tflite-int8")["parity_ok"]
    assert "Quantisation-aware fine-tune before conversion: 0.5 epoch(s)" in (tmp_path / "q" / "report.md").read_text()


def test_prune_ignore_keeps_a_module_whole_and_names_a_missing_one(tmp_path):
    out = tmp_path / "p"
    rc = main(["prune", "--model", TOY, "--budget", "1MFLOPs", "--input-size", "16", "--out", str(out),
               "--ignore", "features.0", "--method", "l1"])
    assert rc == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["widths"]["features.0"][1] == 16  # its output channels are all kept
    assert plan["widths"]["features.3"][1] < 32  # the rest was pruned to reach the budget
    rc = main(["prune", "--model", TOY, "--budget", "1MFLOPs", "--input-size", "16", "--out", str(tmp_path / "q"),
               "--ignore", "nosuch"])
    assert rc == 2


def test_batch_size_reaches_gate_training_when_given():
    """--batch-size sets both phases; without it gates keep AutoPruneConfig's 64 (fine-tuning 32)."""
    from autoprune_edge.cli.parser import build_parser
    from autoprune_edge.cli.ship import TrainingArgs

    base = ["prune", "--model", TOY, "--budget", "1MFLOPs", "--out", "o"]
    given = TrainingArgs.from_args(build_parser().parse_args([*base, "--batch-size", "128", "--lr", "0.02"]))
    assert given.autoprune.batch_size == 128 and given.autoprune.lr == 0.02
    assert TrainingArgs.from_args(build_parser().parse_args(base)).autoprune.batch_size == 64
