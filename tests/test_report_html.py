"""report.html renders in a real browser: headless Chromium driven over the DevTools protocol (pipe).

The report is built from a synthetic model card (no conversion needed), so this file runs in seconds.
On CI (CI=true) a missing Chromium is a failure, not a skip: .ci/run installs it with apt-get.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from autoprune_edge.modelcard import ModelCard
from autoprune_edge.report import render_report
from autoprune_edge.report_html import render_html, write_html_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--mute-audio"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _chromium()
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is not installed on CI; .ci/run must 'apt-get install -y chromium'")
        pytest.skip("chromium not installed (apt-get install -y chromium); set CI=true to make this fail")
    return path


class _CDP:
    """Minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str, user_data_dir: str) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def _fds() -> None:  # runs in the child: its fd 3 reads commands, fd 4 writes replies
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, "--remote-debugging-pipe",
                                      f"--user-data-dir={user_data_dir}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     preexec_fn=_fds, close_fds=False)  # close_fds would close 3 and 4
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from chromium")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while True:
            ev = self._read_message(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort; the process is killed below
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


def render_in_chromium(binary: str, html_file: Path) -> dict:
    """Load ``html_file`` and return title, images (naturalWidth), console errors and failed requests."""
    with tempfile.TemporaryDirectory(prefix="ape-chromium-") as ud:
        cdp = _CDP(binary, ud)
        try:
            target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                cdp.send(f"{domain}.enable", session=session)
            cdp.send("Page.navigate", {"url": html_file.resolve().as_uri()}, session=session)
            cdp.wait_event("Page.loadEventFired", timeout=60)
            state = cdp.send("Runtime.evaluate", {"returnByValue": True, "expression": """(() => ({
                title: document.title,
                h1: (document.querySelector('h1') || {}).textContent || '',
                images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
                                                                w: i.naturalWidth, h: i.naturalHeight})),
                scripts: document.scripts.length,
                external: Array.from(document.querySelectorAll('[src],[href]'))
                    .map(e => e.getAttribute('src') || e.getAttribute('href'))
                    .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
            }))()"""}, session=session)["result"]["value"]
            time.sleep(0.2)  # let late console/log events arrive
            cdp.send("Runtime.evaluate", {"expression": "1"}, session=session)
            errors = []
            for ev in cdp.events:
                m, p = ev.get("method"), ev.get("params", {})
                if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    errors.append(json.dumps(p.get("args"))[:300])
                elif m == "Runtime.exceptionThrown":
                    d = p.get("exceptionDetails", {})
                    errors.append(str(d.get("exception", {}).get("description") or d.get("text"))[:300])
                elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                    errors.append(p["entry"].get("text", "")[:300])
                elif m == "Network.loadingFailed":
                    errors.append(f"request failed: {p.get('errorText')}")
            state["errors"] = errors
            return state
        finally:
            cdp.close()


def _card(n_layers: int = 12, failing: bool = False) -> dict:
    widths_before = {f"features.{i}": [8 * i or 3, 16 + 8 * i] for i in range(n_layers)}
    widths_after = {k: [v[0] // 2 or 3, v[1] // 2] for k, v in widths_before.items()}
    art = lambda fmt, path, b, **kw: {"format": fmt, "path": path, "bytes": b, "parity": {  # noqa: E731
        "max_abs": 1e-7, "rel": 1e-7, "cosine": 1.0, "top1_agreement": 1.0, "n": 64}, "parity_ok": True,
        "macs_counted": 9_000_000, "host_latency_ms": {"1": 1.5, "2": 0.9}, "io": None, "failures": [],
        "divergence": None, "metadata": None, "edgetpu": None, "coreml": None, "verified_by": "test", **kw}
    arts = [art("onnx", "model.onnx", 400_000), art("tflite-fp32", "model_fp32.tflite", 410_000),
            art("tflite-int8", "model_int8.tflite", 120_000, edgetpu={
                "ready": False, "n_ops": 30, "ops_on_tpu": 28, "macs_on_tpu_fraction": 0.97, "first_cpu_op": "x",
                "issues": [{"op_index": 28, "op": "TRANSPOSE", "reason": "TRANSPOSE is not mapped"}],
                "warnings": [], "parameter_bytes": 100_000, "sram_bytes": 7 * 2**20, "fits_sram": True,
                "n_subgraphs": 1, "source": "test"})]
    if failing:
        arts[2]["failures"] = ["top-1 agreement 50.0% < 90% on 64 inputs"]
        arts[2]["parity_ok"] = False
        arts[2]["divergence"] = {"summary": "int8 quantisation: first diverging layer '/a/Conv' (Conv)",
                                 "matched": 3, "compared": 9}
    return {
        "autoprune_edge": "0.1.0", "name": "tiny<net>", "target": "board", "build_seconds": 12.0, "method": "l1",
        "budget": [{"text": "10MFLOPs", "kind": "macs", "value": 1e7, "achieved": 9e6, "met": True},
                   {"text": "5ms", "kind": "latency_ms", "value": 5.0, "achieved": 3.0, "met": True},
                   {"text": "1MB", "kind": "memory_bytes", "value": 2**20, "achieved": 5e5, "met": True}],
        "macs": {"before": 2e7, "after": 9e6}, "params": {"before": 2e5, "after": 1e5}, "channel_round_to": 8,
        "widths": {"before": widths_before, "after": widths_after},
        "equivalence": {"max_abs": 1e-7, "rel": 1e-8},
        "accuracy": {"before": 0.9, "pruned_no_finetune": 0.5, "after": 0.88, "data": "synthetic", "synthetic": True,
                     "split": "validation split (256 images)"},
        "training": {"dense_pretrain_log": [{"loss": 2 - i / 3, "train_acc": 0.3 + i / 10} for i in range(4)],
                     "gate_log": [{"step": 4 * i, "epoch": i / 4, "loss": 1.2, "macs": 2e7 - 1e6 * i,
                                   "open_fraction": 1 - i / 20} for i in range(1, 9)],
                     "finetune_log": [{"loss": 1.0, "train_acc": 0.8}]},
        "preprocessing": {"input_shape_nchw": [1, 3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3,
                          "formula": "x = (pixel / 255 - mean) / std", "tflite_layout": "NHWC",
                          "tflite_input_shape": [1, 32, 32, 3]},
        "parity": {"thresholds": {"fp32_rel": 1e-3, "fp16_cosine": 0.999, "fp16_top1": 0.95, "int8_cosine": 0.98,
                                  "int8_top1": 0.9}, "inputs": "64 validation images"},
        "artifacts": arts,
        "predicted": {"board": {"latency_ms": 3.0, "peak_memory_bytes": 500_000, "model_bytes": 400_000,
                                "precision": "fp32", "threads": 4, "chosen": True,
                                "by_precision": {"fp32": {"latency_ms": 3.0, "peak_memory_bytes": 500_000,
                                                          "model_bytes": 400_000, "threads": 4},
                                                 "int8": {"latency_ms": 1.2, "peak_memory_bytes": 150_000,
                                                          "model_bytes": 120_000, "threads": 4}}},
                      "other": {"latency_ms": 30.0, "peak_memory_bytes": 500_000, "model_bytes": 400_000,
                                "precision": "fp32", "threads": 1,
                                "warnings": ["error measured on 128-300 px <inputs>, not 32 px"]},
                      "broken": {"error": "no cost model"}},
        "notes": ["a <note> with markup"], "versions": {"torch": "2.14.1"},
    }


def test_report_renders_in_chromium(chromium, tmp_path):
    card = _card(n_layers=60)
    page = write_html_report(tmp_path / "report.html", ModelCard.from_dict(card))
    state = render_in_chromium(chromium, page)
    assert state["title"] == "tiny<net> for board — autoprune-edge report"
    assert state["h1"] == "tiny<net> for board"  # escaped in the source, shown literally
    assert len(state["images"]) == 4, state["images"]
    for img in state["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, img
    assert state["errors"] == []
    assert state["scripts"] == 0 and state["external"] == []  # self-contained


def test_checker_detects_broken_pages(chromium, tmp_path):
    """The checker itself must be able to fail: a corrupt image and a script error are both caught."""
    html = render_html(ModelCard.from_dict(_card()))
    start = html.index("data:image/png;base64,") + len("data:image/png;base64,")
    page = tmp_path / "broken.html"
    page.write_text((html[:start] + "AAAA" + html[start + 40:]).replace(
        "</main>", "<script>console.error('boom'); undefinedFunction();</script></main>"))
    state = render_in_chromium(chromium, page)
    assert any(img["w"] == 0 for img in state["images"])
    assert any("boom" in e for e in state["errors"]) and any("undefinedFunction" in e for e in state["errors"])


def test_failing_artifacts_and_markdown(tmp_path):
    card = _card(failing=True)
    html = render_html(ModelCard.from_dict(card))
    assert "Parity failures" in html and "top-1 agreement 50.0%" in html and "/a/Conv" in html
    assert "<note>" not in html and "&lt;note&gt;" in html
    assert html.count("<img ") == 4 and "<script" not in html
    md = render_report(ModelCard.from_dict(card))
    assert "FAIL: top-1 agreement" in md and "diverges" in md and "| board (target) | int8 |" in md
    assert "Edge TPU (model_int8.tflite): not Edge TPU ready" in md
    # a prediction's warning (here: an error never measured at this input size) is shown under the table
    assert "| other | fp32 | 30.00 ms ±? |" in md and "- other: error measured on 128-300 px <inputs>, not 32 px" in md
    assert "other: error measured on 128-300 px &lt;inputs&gt;, not 32 px" in html


def test_figure_failure_does_not_lose_the_report():
    card = _card()
    card["widths"] = {"before": {"a": "not a list"}, "after": None}
    card["training"] = {"finetune_log": [{"loss": float("nan")}]}
    html = render_html(ModelCard.from_dict(card))
    assert "<h1>" in html and "Artifacts and parity" in html
