"""The human-readable summary of a build (Markdown), written from the model card alone."""
from __future__ import annotations

from pathlib import Path

from .converters.formats import parity_notes
from .converters.parity import top1_text
from .modelcard import ModelCard


def _m(x: float | None) -> str:
    return "–" if x is None else f"{x / 1e6:.2f} M"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def render_report(card: ModelCard) -> str:
    acc = card.accuracy
    lines = [
        f"# {card.name} for {card.target}",
        "",
        f"Built by autoprune-edge {card.autoprune_edge} in {card.build_seconds} s. "
        f"Pruning method: `{card.method}` ({card.training.granularity}); channels rounded to multiples of "
        f"{card.channel_round_to}. Trained on `{card.training.device}` in {card.training.precision}.",
        "",
        "FLOPs in this report means multiply-accumulates (MACs).",
        "",
        "## Budget",
        "",
        "| budget | achieved | met |",
        "|---|---|---|",
    ]
    for b in card.budget:
        a = b.achieved
        shown = "–" if a is None else (_m(a) + (" MACs" if b.kind == "macs" else "") if b.kind in
                                        ("macs", "params") else f"{a:.2f}")
        lines.append(f"| {b.text} | {shown} | {'yes' if b.met else 'NO'} |")
    lines += [
        "",
        "## Model",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| MACs | {_m(card.macs.before)} | {_m(card.macs.after)} |",
        f"| parameters | {_m(card.params.before)} | {_m(card.params.after)} |",
        f"| {'accuracy' if acc.metric == 'top-1' else acc.metric} | {_pct(acc.before)} | {_pct(acc.after)} |",
        "",
        f"Accuracy is {acc.metric} on the {acc.split} of: {acc.data}. "
        f"Right after compaction, before fine-tuning: {_pct(acc.pruned_no_finetune)}.",
    ]
    if acc.synthetic:
        lines += ["", "**These accuracies are on synthetic data generated in-process, not on real images.** "
                      "Pass `--data` and `--weights` for numbers that mean something for your task."]
    eq = card.equivalence
    lines += ["", f"Compaction check: the physically smaller model matches the masked original within "
                  f"{eq.max_abs:.2e} max abs ({eq.rel:.2e} of the output scale).", ""]
    if card.outputs is not None:
        lines += ["## Outputs", "", f"Task `{card.task}`: {card.outputs.meaning}.", "",
                  *(f"- `{t['name']}`: {t['shape']}" for t in card.outputs.tensors), ""]
    lines += ["## Artifacts", ""]
    par_info = card.parity
    if par_info.thresholds:
        t = par_info.thresholds
        lines += [f"Parity against torch on {par_info.inputs}: fp32 rel <= "
                  f"{t['fp32_rel']:g}; fp16 top-1 >= {t['fp16_top1']:g} and cosine >= {t['fp16_cosine']:g}; int8 "
                  f"top-1 >= {t['int8_top1']:g} and cosine >= {t['int8_cosine']:g} (int8 top-1 counted on the "
                  "decidable inputs, whose reference top-1 leads the runner-up by at least one step of the file's "
                  "quantised output, when they are at least half; the file cannot order closer logits). "
                  f"{parity_notes()}", ""]
    lines += ["| file | format | size | parity vs torch (max abs / rel / cos / top-1) | MACs in file | host latency "
              "(median ms, by threads) |",
              "|---|---|---|---|---|---|"]
    for a in card.artifacts:
        p = a.parity or {}
        status = ("FAIL: " if a.written else "FAIL, not written: ") + "; ".join(a.failures) if a.failures else "ok"
        par = (f"{p['max_abs']:.2e} / {p['rel']:.2e} / {p['cosine']:.5f} / {top1_text(p)}"
               f" ({status})") if p else f"spec check ({status})"
        lat = ", ".join(f"{t}T: {ms:.2f}" for t, ms in a.host_latency_ms.items()) or "–"
        lines.append(f"| `{a.path}` | {a.format} | {a.bytes / 1e6:.2f} MB | {par} | "
                     f"{_m(a.macs_counted)} | {lat} |")
    for a in card.artifacts:
        if a.divergence:
            lines += ["", f"**{a.format} diverges**: {a.divergence.get('summary')}"]
    q = card.quantization
    if q:
        i, o = q.input, q.output
        c = q.calibration
        lines += ["", f"int8: calibrated on {c.samples if c else None} {c.split if c else None}-split images "
                      f"(disjoint from the parity inputs); input {i['dtype']} {i['layout']} scale {i['scale']:.6g} "
                      f"zero point {i['zero_point']}, output scale {o['scale']:.6g} zero point {o['zero_point']}."]
        r = q.recipe
        if r:
            tried = ", ".join(f"{t.recipe} ({'pass' if t.passed else 'fail'}: top-1 {100 * t.top1_agreement:.1f} %"
                              + ("" if t.top1_decided is None else
                                 f", {100 * t.top1_decided:.1f} % on {t.decided} decidable")
                              + f", cosine {t.cosine:.4f})" for t in r.tried)
            lines += ["", f"int8 recipe: **{r.recipe}** (tried cheapest first: {tried}); "
                          f"{r.batchnorms_folded} BatchNorms folded, {r.equalised_pairs} conv pairs equalised, "
                          f"{r.bias_corrected_layers} biases corrected, {r.clipped_activations} activations clamped to "
                          f"percentile ranges. Feed it: {q.how_to_feed}."]
            if r.input_step:
                lines += ["", f"int8 {r.input_step}."]
    qat = card.training.quantisation_aware
    if qat:
        acc = "" if qat.get("accuracy_before") is None or qat.get("accuracy_after") is None else (
            f"; accuracy {100 * qat['accuracy_before']:.2f} % -> {100 * qat['accuracy_after']:.2f} %")
        lines += ["", f"Quantisation-aware fine-tune before conversion: {qat['epochs']:g} epoch(s), int8 rounding "
                      f"simulated on {qat['weights_simulated']} conv/linear weights ({qat['batchnorms_folded']} with "
                      f"their BatchNorm folded) and {qat['activations_simulated']} activation outputs{acc}."]
    for a in card.artifacts:
        if a.edgetpu:
            lines += ["", f"Edge TPU ({a.path}): {a.edgetpu.summary()}."]
    if card.predicted:
        lines += ["", "## Predicted on target devices", "",
                  "| target | precision | latency | peak RAM | model size |", "|---|---|---|---|---|"]
        for t, row in card.predicted.items():
            if row.error is not None:
                lines.append(f"| {t} | – | {row.error} | | |")
                continue
            for prec, p in row.rows.items():
                lines.append(f"| {t}{' (target)' if row.chosen else ''} | {prec} | {p.latency_text} | "
                             f"{p.peak_memory_bytes / 1024:.0f} KiB | {p.model_bytes / 1e6:.2f} MB |")
        lines += ["", "Predicted numbers come from the target profile's cost model; ± is that profile's mean error "
                      "on measurements held out of its fit (`latency_error_pct`); ±? where none was measured at this "
                      "input size (`latency_error_inputs`). Host latencies above are "
                      "measured with the LiteRT interpreter on the machine that ran the build."]
        warned = [f"- {t}: {w}" for t, row in card.predicted.items() for w in row.warnings]
        lines += [""] + warned if warned else []
    if card.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in card.notes]
    pre = card.preprocessing
    lines += ["", "## Using the model", "",
              f"Input: {pre.input_shape_nchw} (N, C, H, W) in torch/ONNX/Core ML; the TFLite files take "
              f"{pre.tflite_layout or 'NHWC'}. "
              f"Scale pixels to [0, 1], then normalise with mean {pre.mean} and std {pre.std}. "
              "Class names are in `labels.txt`, one per line, in output order (also embedded in every .tflite). "
              "The pruned torch model "
              "(`pruned/plan.json` + `pruned/model.safetensors`) reloads with "
              "`autoprune_edge.load_pruned('pruned')`. Plots: `report.html`.", ""]
    return "\n".join(lines)


def write_report(path: Path, card: ModelCard) -> Path:
    Path(path).write_text(render_report(card))
    return Path(path)
