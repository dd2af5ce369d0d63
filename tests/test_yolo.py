"""Ultralytics YOLO from its YAML (optional AGPL extra; installed by the dev extra so CI runs this)."""
from __future__ import annotations

import json
import os

import pytest
import torch

if os.environ.get("CI") != "true":
    pytest.importorskip("ultralytics")

from autoprune_edge.models import build_model  # noqa: E402
from autoprune_edge.profiles.counting import count_macs  # noqa: E402


def test_yolo_loss_decoding_and_build(tmp_path):
    from autoprune_edge.pipeline import build

    model, _ = build_model("yolov8n", num_classes=4)
    out = model(torch.zeros(2, 3, 64, 64))
    assert out["scores"].shape == (2, 3, 84) and out["boxes"].shape == (2, 64, 84)  # 3 classes, 8x8+4x4+2x2 points
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([2])}
    loss = model.detection_loss(out, [target, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}],
                                (64, 64))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    dets = model.detections({k: v.detach() for k, v in out.items()}, (64, 64))
    assert len(dets) == 2 and all(bool((d["labels"] >= 1).all()) for d in dets)

    dense = count_macs(model, torch.zeros(1, 3, 64, 64)).macs
    rep = build("yolov8n", "synthetic-det?train=16&val=4", "host", f"{dense / 2e6:.6f}MFLOPs", tmp_path, input_size=64,
                epochs=1, finetune_epochs=0, batch_size=8, lr=0.01, formats=("onnx", "tflite-fp32"), measure_runs=2,
                parity_samples=4, pretrain_epochs=0, html_report=False)
    card = rep.card
    assert card.macs.after <= dense / 2 and card.equivalence.rel < 1e-4
    assert all(not a.failures for a in card.artifacts), [a.failures for a in card.artifacts]
    assert [t["name"] for t in card.outputs.tensors] == ["boxes", "scores"]
    assert card.outputs.tensors[1]["shape"] == [1, 3, 84]  # the class count is a contract: kept
    dec = json.loads((rep.out_dir / "decoding.json").read_text())
    assert dec["strides"] == [8, 16, 32] and dec["grids_hw"] == [[8, 8], [4, 4], [2, 2]]
    assert any("left whole" in n for n in card.notes)  # C2f's fixed chunk sizes: groups named, with why


def test_yolo_decoding_json_reproduces_ultralytics_boxes():
    model, _ = build_model("yolov8n", num_classes=3)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    dec = model.decoding((64, 64))
    bins = dec["dfl_bins"]
    points, strides = [], []
    for (gh, gw), s in zip(dec["grids_hw"], dec["strides"]):
        ys, xs = torch.meshgrid(torch.arange(gh) + 0.5, torch.arange(gw) + 0.5, indexing="ij")
        points.append(torch.stack([xs.flatten(), ys.flatten()], 1))
        strides.append(torch.full((gh * gw, 1), float(s)))
    p, st = torch.cat(points), torch.cat(strides)
    dist = out["boxes"][0].T.reshape(-1, 4, bins).softmax(-1) @ torch.arange(bins, dtype=torch.float32)
    mine = torch.cat([p - dist[:, :2], p + dist[:, 2:]], 1) * st  # x1 y1 x2 y2 in pixels
    n = out["boxes"].shape[0]
    ref = model.head._inference({**out, "feats": model._feats(n, (64, 64), torch.device("cpu"))})[0, :4].T
    ref_xyxy = torch.cat([ref[:, :2] - ref[:, 2:] / 2, ref[:, :2] + ref[:, 2:] / 2], 1)  # Ultralytics gives cx cy w h
    assert torch.allclose(mine, ref_xyxy, atol=1e-3)
