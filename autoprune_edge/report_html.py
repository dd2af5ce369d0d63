"""report.html: one self-contained page (inline CSS, figures as base64 PNG, no scripts, no external
resources), written from the model card alone so it can be regenerated from a build folder:

    python -m autoprune_edge.report_html out/mobilenet_v2-raspberrypi4
"""
from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path
from typing import Any

from .converters.parity import top1_text
from .modelcard import ModelCard, load_card
from .plots import ALL_PLOTS

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#1d2430}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.sub{color:#5b6676;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px} .card span{color:#5b6676;font-size:12px}
.ok{color:#1a7f37} .bad{color:#c62828;font-weight:600} .warn{color:#b26a00}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0;width:100%}
th,td{border:1px solid #dde1e7;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}
figure{background:#fff;border:1px solid #dde1e7;border-radius:8px;margin:12px 0;padding:10px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#5b6676;font-size:12px;margin-top:6px}
code{background:#eef1f5;padding:1px 4px;border-radius:3px}
.banner{background:#fdecea;border:1px solid #f5c2c0;border-radius:8px;padding:10px 14px;margin:12px 0}
.note{background:#fff8e1;border:1px solid #f3e0a6;border-radius:8px;padding:10px 14px;margin:12px 0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _m(x: float | None, unit: str = "") -> str:
    return "–" if x is None else f"{x / 1e6:.2f} M{(' ' + unit) if unit else ''}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _budget_value(kind: str, v: float | None) -> str:
    if v is None:
        return "–"
    if kind in ("macs", "params"):
        return _m(v, "MACs" if kind == "macs" else "params")
    if kind == "latency_ms":
        return f"{v:.2f} ms"
    if kind in ("memory_bytes", "size_bytes"):
        return f"{v / 2**20:.2f} MiB"
    return f"{v:g}"


def render_html(card: ModelCard) -> str:
    title = f"{card.name} for {card.target} — autoprune-edge report"
    acc, arts = card.accuracy, card.artifacts
    failing = card.failing
    parts = [f"<h1>{_e(card.name)} for {_e(card.target)}</h1>",
             f"<p class='sub'>Built by autoprune-edge {_e(card.autoprune_edge)} in "
             f"{_e(card.build_seconds)} s · method <code>{_e(card.method)}</code> · trained on "
             f"<code>{_e(card.training.device)}</code> in {_e(card.training.precision)} · "
             f"FLOPs here means multiply-accumulates (MACs)</p>"]
    if failing:
        parts.append("<div class='banner'><b class='bad'>Parity failures:</b><ul>" + "".join(
                         f"<li><b>{_e(a.format)}</b> ("
                         + ("written because of --allow-parity-failure" if a.written else "not written") + f"): "
                         f"{_e(', '.join(a.failures))}"
                         + (f"<br>{_e(a.divergence.get('summary', ''))}" if a.divergence else "")
                         + "</li>" for a in failing) + "</ul></div>")
    cards = [
        (_m(card.macs.after, "MACs"), f"from {_m(card.macs.before, 'MACs')}"),
        (_m(card.params.after, "params"), f"from {_m(card.params.before, 'params')}"),
        (_pct(acc.after),
         f"{'accuracy' if acc.metric == 'top-1' else _e(acc.metric)} after (before {_pct(acc.before)})"),
        ("<span class='ok'>met</span>" if card.budgets_met else "<span class='bad'>NOT met</span>",
         "budget: " + ", ".join(_e(b.text) for b in card.budget)),
        ("<span class='ok'>all pass</span>" if not failing else f"<span class='bad'>{len(failing)} fail</span>",
         f"parity of {len(arts)} artifacts"),
    ]
    parts.append("<div class='cards'>" + "".join(f"<div class='card'><b>{v}</b><span>{_e(s)}</span></div>"
                                                 for v, s in cards) + "</div>")
    if acc.synthetic:
        parts.append("<div class='note'>Accuracies are on <b>synthetic data</b> generated in-process, not on "
                     "real images. Pass <code>--data</code> and <code>--weights</code> for numbers that mean "
                     "something for your task.</div>")

    parts.append("<h2>Budget</h2>" + _table(["budget", "kind", "asked", "achieved", "met"], [
        [_e(b.text), _e(b.kind), _e(_budget_value(b.kind, b.value)), _e(_budget_value(b.kind, b.achieved)),
         "<span class='ok'>yes</span>" if b.met else "<span class='bad'>NO</span>"]
        for b in card.budget]))

    parts.append("<h2>Figures</h2>")
    for key, caption, fn in ALL_PLOTS:
        try:
            png = fn(card)
        except Exception as e:  # noqa: BLE001 - a broken figure must not cost the user the report
            parts.append(f"<p class='warn'>figure '{_e(key)}' could not be drawn: {_e(type(e).__name__)}: {_e(e)}</p>")
            continue
        parts.append(f"<figure id='fig-{_e(key)}'>{_img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>")

    par = card.parity
    th = par.thresholds
    parts.append("<h2>Artifacts and parity</h2>")
    parts.append(f"<p>Each artifact is run against torch on {_e(par.inputs)}. "
                 f"Limits: fp32 rel ≤ {_e(th.get('fp32_rel'))}; fp16 top-1 ≥ {_e(th.get('fp16_top1'))}, cosine ≥ "
                 f"{_e(th.get('fp16_cosine'))}; int8 top-1 ≥ {_e(th.get('int8_top1'))}, cosine ≥ "
                 f"{_e(th.get('int8_cosine'))}.</p>")
    rows = []
    for a in arts:
        p = a.parity or {}
        status = (f"<span class='bad'>{'FAIL' if a.written else 'FAIL, not written'}</span> "
                  + _e("; ".join(a.failures))) if a.failures else \
            ("<span class='ok'>ok</span>" if a.parity_ok else "<span class='ok'>spec ok</span>")
        par_txt = (f"{p['max_abs']:.2e} / {p['rel']:.2e} / {p['cosine']:.5f} / {top1_text(p)}"
                   if p else "–")
        lat = ", ".join(f"{t}T {ms:.2f}" for t, ms in (a.host_latency_ms or {}).items()) or "–"
        rows.append([f"<code>{_e(a.path)}</code>", _e(a.format), f"{a.bytes / 1e6:.2f} MB", _e(par_txt),
                     status, _e(_m(a.macs_counted)), _e(lat), _e(a.verified_by)])
    parts.append(_table(["file", "format", "size", "max abs / rel / cosine / top-1", "status", "MACs in file",
                         "host latency ms (threads)", "checked with"], rows))
    for a in arts:
        if a.divergence:
            d = a.divergence
            parts.append(f"<p><b>{_e(a.format)}</b> divergence: {_e(d.get('summary'))} "
                         f"({_e(d.get('matched'))} of {_e(d.get('compared'))} earlier layers matched)</p>")

    q = card.quantization
    if q:
        c = q.calibration
        parts.append("<h2>int8 quantisation</h2>" + _table(["", "value"], [
            ["scheme", _e(c.what if c else "")],
            ["calibration", _e(f"{c.samples if c else None} {c.split if c else None}-split samples (seed "
                               f"{c.seed if c else None}), {c.unique if c else None} unique, disjoint from the "
                               f"parity inputs")],
            ["input", _e(json.dumps(q.input))], ["output", _e(json.dumps(q.output))],
            ["feeding", _e(q.how_to_feed)]]))

    etpu = [(a.format, a.edgetpu) for a in arts if a.edgetpu]
    if etpu or card.edgetpu:
        parts.append("<h2>Edge TPU readiness</h2>")
        for fmt, r in etpu:
            parts.append(f"<p><b>{_e(fmt)}</b>: " + ("<span class='ok'>ready</span>" if r.ready else
                                                        "<span class='warn'>not ready</span>")
                         + f" — {_e(r.ops_on_tpu)}/{_e(r.n_ops)} ops before the first CPU op, "
                         f"{100 * r.macs_on_tpu_fraction:.0f}% of MACs; parameters "
                         f"{r.parameter_bytes / 2**20:.2f} MiB of ~{r.sram_bytes / 2**20:.0f} MiB "
                         f"SRAM.</p>")
            if r.issues:
                parts.append(_table(["op #", "op", "why it runs on the CPU"], [
                    [_e(i.op_index), _e(i.op), _e(i.reason)] for i in r.issues[:20]]))
            parts.append(f"<p class='sub'>{_e(r.source)}</p>")
        if card.edgetpu and card.edgetpu.get("error"):
            parts.append(f"<p class='bad'>{_e(card.edgetpu['error'])}</p>")

    for a in arts:  # format-specific spec summaries (Core ML's package)
        if a.coreml:
            parts.append(_coreml_section(a.coreml))
            break

    if card.predicted:
        rows = []
        for t, r in card.predicted.items():
            if r.error is not None:
                rows.append([_e(t), "–", "–", "–", "–", _e(r.error)])
                continue
            for prec, p in r.rows.items():
                rows.append([_e(t) + (" <b>(target)</b>" if r.chosen else ""), _e(prec),
                             _e(p.latency_text), f"{p.peak_memory_bytes / 1024:.0f} KiB",
                             f"{p.model_bytes / 1e6:.2f} MB", _e(p.threads)])
        parts.append("<h2>Predicted on devices</h2>" + _table(
            ["target", "precision", "latency", "peak RAM", "model size", "threads"], rows))
        parts.append("<p class='sub'>Predicted by each target profile's cost model (± its mean error on "
                     "measurements held out of its fit; ±? where none was measured at this input size); host latencies "
                     "above are "
                     "measured with the LiteRT interpreter on the machine that ran the build.</p>")
        warned = [f"<li>{_e(t)}: {_e(w)}</li>" for t, r in card.predicted.items() for w in r.warnings]
        if warned:
            parts.append("<ul class='sub'>" + "".join(warned) + "</ul>")

    pre = card.preprocessing
    parts.append("<h2>Using the model</h2>" + _table(["", "value"], [
        ["input (torch / ONNX / Core ML)", _e(f"{pre.input_shape_nchw} NCHW float32")],
        ["input (TFLite)", _e(f"{pre.tflite_input_shape} {pre.tflite_layout}")],
        ["normalisation", _e(f"{pre.formula}; mean {pre.mean}, std {pre.std}")],
        ["labels", "<code>labels.txt</code> (also embedded in every .tflite)"],
        ["pruned torch model", "<code>autoprune_edge.load_pruned('pruned')</code>"]]))
    if card.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in card.notes) + "</ul>")
    parts.append("<h2>Versions</h2><p class='sub'>" + _e(", ".join(f"{k} {v}" for k, v in
                                                                    (card.versions or {}).items())) + "</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
            + "\n".join(parts) + "</main></body></html>\n")


def _coreml_section(c: dict[str, Any]) -> str:
    return "<h2>Core ML package</h2>" + _table(["", "value"], [
        ["inputs", _e(json.dumps(c.get("inputs")))], ["outputs", _e(json.dumps(c.get("outputs")))],
        ["ops (MIL)", _e(", ".join(f"{k}×{v}" for k, v in (c.get("ops") or {}).items()))],
        ["MACs in MIL program", _e(_m(c.get("macs")))],
        ["spec / opset / compute", _e(f"{c.get('spec_version')} / {c.get('opset')} / {c.get('compute_precision')}")],
        ["problems", _e("; ".join(c.get("problems") or []) or "none")]])


def write_html_report(path: Path, card: ModelCard) -> Path:
    Path(path).write_text(render_html(card), encoding="utf-8")
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m autoprune_edge.report_html BUILD_FOLDER", file=sys.stderr)
        return 2
    folder = Path(args[0])
    print(write_html_report(folder / "report.html", load_card(folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
