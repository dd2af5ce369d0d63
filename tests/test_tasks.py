"""Segmentation and detection: data sources, metrics, task selection, and `build --task` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from autoprune_edge.data import load_data
from autoprune_edge.errors import ConfigError, DataError
from autoprune_edge.tasks import DETECT, SEGMENT, get_task, output_shapes, task_for


def _png(path, size=(40, 30), colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_synthetic_task_sources_are_deterministic_and_typed():
    seg = load_data("synthetic-seg?train=4&val=2&classes=3", input_size=64)
    det = load_data("synthetic-det?train=4&val=2", input_size=64)
    assert (seg.task, det.task) == ("segment", "detect")
    x, m = seg.train[1]
    assert x.shape == (3, 64, 64) and m.shape == (64, 64) and m.dtype == torch.int64 and int(m.max()) <= 2
    assert torch.equal(seg.train[1][1], load_data("synthetic-seg?train=4&val=2&classes=3", input_size=64).train[1][1])
    x, t = det.train[0]
    assert t["boxes"].shape[1] == 4 and len(t["labels"]) == len(t["boxes"]) >= 1
    assert bool((t["labels"] >= 1).all())  # 0 is background
    b = t["boxes"]
    assert bool((b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() and (b >= 0).all() and (b <= 64).all())
    assert det.class_names[0] == "background"


def test_masks_folder(tmp_path):
    for split in ("train", "val"):
        _png(tmp_path / split / "images" / "a.png")
        mask = np.zeros((30, 40), np.uint8)
        mask[5:20, 10:30] = 2
        mask[0, 0] = 255
        Image.fromarray(mask).save(tmp_path / split / "masks" / "a.png") if (tmp_path / split / "masks").mkdir() is None else None
    with pytest.raises(DataError, match="classes.txt"):
        load_data(f"masks:{tmp_path}", input_size=32)
    b = load_data(f"masks:{tmp_path}?classes=3", input_size=32)
    x, m = b.train[0]
    assert b.task == "segment" and x.shape == (3, 32, 32) and m.shape == (32, 32)
    assert set(m.unique().tolist()) == {0, 2, 255}
    (tmp_path / "val" / "masks" / "a.png").unlink()
    with pytest.raises(DataError, match="has no mask"):
        load_data(f"masks:{tmp_path}?classes=3", input_size=32)


def test_yolo_folder_scales_boxes_and_shifts_labels(tmp_path):
    for split in ("train", "val"):
        _png(tmp_path / "images" / split / "a.jpg", size=(100, 50))
        (tmp_path / "labels" / split).mkdir(parents=True)
        (tmp_path / "labels" / split / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    (tmp_path / "data.yaml").write_text("names: {0: cat, 1: dog}\n")
    b = load_data(f"yolo:{tmp_path}", input_size=64)
    assert b.class_names == ["background", "cat", "dog"] and b.task == "detect"
    _, t = b.val[0]
    assert t["labels"].tolist() == [2]
    # 100x50 -> 64x64: x scaled by 0.64, y by 1.28; box centre (50, 25), size (20, 20) in the file
    assert torch.allclose(t["boxes"], torch.tensor([[40 * 0.64, 15 * 1.28, 60 * 0.64, 35 * 1.28]]), atol=1e-4)
    (tmp_path / "labels" / "train" / "a.txt").write_text("7 0.5 0.5 0.2 0.4\n")
    with pytest.raises(DataError, match=r"a.txt:1: class 7"):
        load_data(f"yolo:{tmp_path}", input_size=64)


def test_coco_json_maps_categories_and_skips_crowds(tmp_path):
    for split in ("train", "val"):
        _png(tmp_path / f"{split}2017" / "im.png", size=(64, 64))
    doc = {"images": [{"id": 3, "file_name": "im.png", "width": 64, "height": 64}],
           "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
           "annotations": [{"id": 1, "image_id": 3, "category_id": 18, "bbox": [10, 10, 20, 30], "iscrowd": 0},
                           {"id": 2, "image_id": 3, "category_id": 1, "bbox": [0, 0, 64, 64], "iscrowd": 1}]}
    (tmp_path / "annotations").mkdir()
    for split in ("train", "val"):
        (tmp_path / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
    b = load_data(f"coco:{tmp_path}", input_size=64)
    assert b.class_names == ["background", "person", "dog"]  # ids in order -> 1..K
    _, t = b.train[0]
    assert t["labels"].tolist() == [2] and t["boxes"].tolist() == [[10.0, 10.0, 30.0, 40.0]]
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    with pytest.raises(DataError, match="not COCO detection JSON"):
        load_data(f"coco:{tmp_path}", input_size=64)


def test_task_selection_errors():
    cls = load_data("synthetic?train=4&val=2", input_size=16)
    assert task_for(None, cls).name == "classify"
    with pytest.raises(ConfigError, match="synthetic-seg, masks:ROOT"):
        task_for("segment", cls)
    with pytest.raises(ConfigError, match="unknown task 'dance'"):
        get_task("dance")


class _OneHot(nn.Module):
    """Predicts the mask the image encodes (channel k lit where class k is): a perfect segmenter."""

    def forward(self, x):
        return {"out": x}


def test_miou_scores_a_perfect_and_a_wrong_segmenter():
    masks = torch.randint(0, 3, (6, 8, 8))
    data = [(nn.functional.one_hot(m, 3).permute(2, 0, 1).float(), m) for m in masks]
    assert SEGMENT.score(_OneHot(), data, 3) == pytest.approx(1.0)
    assert SEGMENT.score(_OneHot(), [(x.roll(1, 0), m) for x, m in data], 3) < 0.2


class _FixedDetector(nn.Module):
    def __init__(self, boxes):
        super().__init__()
        self.boxes = boxes
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return {"x": x}

    def detection_loss(self, out, targets, size):
        return self.w

    def detections(self, out, size):
        return [{"boxes": self.boxes, "scores": torch.ones(len(self.boxes)), "labels": torch.ones(len(self.boxes),
                                                                                                  dtype=torch.int64)}
                for _ in range(out["x"].shape[0])]


def test_map50_scores_right_and_wrong_boxes():
    gt = torch.tensor([[4.0, 4.0, 20.0, 20.0]])
    data = [(torch.zeros(3, 32, 32), {"boxes": gt, "labels": torch.tensor([1])}) for _ in range(3)]
    assert DETECT.score(_FixedDetector(gt), data, 2) == pytest.approx(1.0)
    assert DETECT.score(_FixedDetector(gt + 12), data, 2) == pytest.approx(0.0)  # IoU < 0.5
    with pytest.raises(ConfigError, match="detection_loss"):
        DETECT.score(_OneHot(), data, 2)


def test_output_shapes_flatten_nested_outputs():
    class Nested(nn.Module):
        def forward(self, x):
            return {"a": x, "b": [x[:, :1], (x.sum(),)]}

    names = [(o["name"], o["shape"]) for o in output_shapes(Nested(), (1, 2, 4, 4))]
    assert names == [("a", [1, 2, 4, 4]), ("b[0]", [1, 1, 4, 4]), ("b[1][0]", [])]


def test_build_segment_end_to_end(tmp_path, monkeypatch):
    from autoprune_edge import cpu
    from autoprune_edge.pipeline import build
    from autoprune_edge.profiles.counting import count_macs
    from toy_models import TinySegmenter

    dense = count_macs(TinySegmenter(3), torch.zeros(1, 3, 32, 32)).macs
    # an AVX2-only CPU: host.toml was measured on an AVX-512 one, so the card says so
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: "model name\t: Test CPU\nflags\t\t: sse2 avx2 fma\n")
    rep = build("toy_models:TinySegmenter", "synthetic-seg?train=32&val=8&classes=3", "host",
                f"{dense / 2e6:.6f}MFLOPs", tmp_path, input_size=32, epochs=1, finetune_epochs=1, batch_size=8,
                lr=0.05, formats=("onnx", "tflite-fp32", "tflite-int8"), measure_runs=2, calib_samples=8,
                parity_samples=8, pretrain_epochs=2, html_report=False, ignore=("enc1",))
    card = rep.card
    assert card.task == "segment" and card.accuracy.metric == "mIoU"
    assert card.widths.after["enc1.0"] == card.widths.before["enc1.0"]  # left whole as asked
    assert any("left whole as asked (ignore): 1 layer(s): enc1.0" in n for n in card.notes)
    assert any("host profile may not fit this machine" in n and "Test CPU" in n for n in card.notes), card.notes
    assert card.macs.after <= dense / 2 and card.equivalence.rel < 1e-4
    assert 0.0 <= card.accuracy.after <= 1.0 and card.accuracy.before is not None
    assert [t["name"] for t in card.outputs.tensors] == ["out"] and card.outputs.tensors[0]["shape"] == [1, 3, 32, 32]
    assert all(not a.failures for a in card.artifacts), [a.failures for a in card.artifacts]
    report = (rep.out_dir / "report.md").read_text()
    assert "| mIoU |" in report and "## Outputs" in report
    assert "classifier" in " ".join(card.notes) or "output layers kept whole" in " ".join(card.notes)
    assert not (rep.out_dir / "decoding.json").exists()  # a segmenter has nothing to decode


def test_build_detect_writes_decoding_and_rejects_classifier_options(tmp_path):
    from autoprune_edge.errors import AutoPruneEdgeError
    from autoprune_edge.pipeline import build

    with pytest.raises(AutoPruneEdgeError, match="--distill"):
        build("ssdlite320_mobilenet_v3_large", "synthetic-det?train=8&val=4", "host", "50MFLOPs", tmp_path,
              input_size=96, distill=True)
    rep = build("ssdlite320_mobilenet_v3_large", "synthetic-det?train=16&val=4", "host", "15MFLOPs", tmp_path,
                input_size=96, epochs=1, finetune_epochs=0, batch_size=8, lr=0.01, formats=("onnx", "tflite-fp32"),
                measure_runs=2, parity_samples=4, pretrain_epochs=0, html_report=False)
    card = rep.card
    assert card.task == "detect" and card.accuracy.metric == "mAP@0.5" and card.macs.after <= 15e6
    assert {t["name"] for t in card.outputs.tensors} == {"bbox_regression", "cls_logits"}
    assert all(not a.failures for a in card.artifacts)
    dec = json.loads((rep.out_dir / "decoding.json").read_text())
    n_anchors = card.outputs.tensors[0]["shape"][1]
    assert len(dec["anchors_cxcywh_pixels"]) == n_anchors and dec["box_coder_weights"] == [10.0, 10.0, 5.0, 5.0]


def test_top1_is_not_shown_as_a_number_for_several_outputs():
    from autoprune_edge.converters.parity import compare, top1_text

    ref = [np.random.default_rng(0).normal(size=(4, 10, 4)), np.random.default_rng(1).normal(size=(4, 10, 3))]
    p = compare(ref, [r + 0.5 for r in ref]).to_dict()
    assert top1_text(p) == "– (not judged: 2 outputs)"
    single = compare(ref[0][:, :, 0], ref[0][:, :, 0]).to_dict()
    assert top1_text(single) == "100 %"


def test_faster_rcnn_is_refused_for_the_detect_task_in_one_line(tmp_path):
    from autoprune_edge.pipeline import build

    with pytest.raises(ConfigError, match="no detection_loss"):
        build("fasterrcnn_mobilenet_v3_large_320_fpn", "synthetic-det?train=4&val=2", "host", "100MFLOPs", tmp_path,
              input_size=64, pretrain_epochs=0, formats=("onnx",))


def test_zoo_detectors_and_segmenters_pick_their_synthetic_task_or_fail_in_one_line():
    from autoprune_edge.workload import data_for_task, load_workload

    assert data_for_task("lraspp_mobilenet_v3_large", "synthetic?train=8&val=2") == "synthetic-seg?train=8&val=2"
    assert data_for_task("ssdlite320_mobilenet_v3_large", "synthetic") == "synthetic-det"
    assert data_for_task("yolov8n", "yolo:/x") == "yolo:/x"
    assert data_for_task("mobilenet_v2", "synthetic") == "synthetic"
    with pytest.raises(ConfigError, match="is a detect model, but --data cifar10:/x holds classify targets"):
        data_for_task("ssdlite320_mobilenet_v3_large", "cifar10:/x")
    # a model from outside the zoo that returns a dict is not treated as a classifier
    with pytest.raises(ConfigError, match="not class logits"):
        load_workload("toy_models:TinySegmenter", "synthetic?train=4&val=2", input_size=16)


def test_ssd_decoding_json_reproduces_torchvisions_boxes():
    """An app following decoding.json gets the boxes torchvision's own decoder gives."""
    from autoprune_edge.models import build_model

    model, _ = build_model("ssdlite320_mobilenet_v3_large", num_classes=4)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 96))
    dec = model.decoding((96, 96))
    a = np.array(dec["anchors_cxcywh_pixels"])
    d = out["bbox_regression"][0].numpy()
    wx, wy, ww, wh = dec["box_coder_weights"]
    cx, cy = a[:, 0] + d[:, 0] / wx * a[:, 2], a[:, 1] + d[:, 1] / wy * a[:, 3]
    w, h = a[:, 2] * np.exp(d[:, 2] / ww), a[:, 3] * np.exp(d[:, 3] / wh)
    mine = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    ssd = model._ssd[0]
    ref = ssd.box_coder.decode_single(out["bbox_regression"][0], model.anchors((96, 96))).numpy()
    assert len(a) == out["cls_logits"].shape[1] and np.allclose(mine, ref, atol=1e-2)


def test_prune_command_takes_segment_data_and_names_its_metric(tmp_path, capsys):
    """`prune` with masks ran the classification loop (a traceback at `.argmax` of a dict); it now prunes with
    the task's loss, like build, and refuses the classifier-only options in one line."""
    from autoprune_edge.cli import main
    from autoprune_edge.profiles.counting import count_macs
    from toy_models import TinySegmenter

    dense = count_macs(TinySegmenter(3), torch.zeros(1, 3, 32, 32)).macs
    argv = ["prune", "--model", "toy_models:TinySegmenter", "--data", "synthetic-seg?train=16&val=4&classes=3",
            "--input-size", "32", "--budget", f"{dense * 0.7 / 1e6:.6f}MFLOPs", "--epochs", "0.5",
            "--finetune-epochs", "0.5", "--batch-size", "8"]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert s["macs_after"] <= dense * 0.7 and 0.0 <= s["accuracy_after"] <= 1.0
    assert main([*argv, "--distill", "--out", str(tmp_path / "q")]) == 2
    assert "classifier-only" in capsys.readouterr().err and not (tmp_path / "q").exists()
    assert main([*argv, "--resume", "--out", str(tmp_path / "r")]) == 2  # was silently ignored
    err = capsys.readouterr().err
    assert "--resume is not supported for segment data" in err and "Traceback" not in err
    assert main(["prune", "--model", "toy_models:TinySegmenter", "--task", "segmnt", "--method", "l1", "--budget",
                 "1MFLOPs", "--input-size", "32", "--out", str(tmp_path / "s")]) == 2
    assert "unknown task 'segmnt'" in capsys.readouterr().err and not (tmp_path / "s").exists()
