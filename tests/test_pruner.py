"""The loop-agnostic Pruner: a detector with a dict output, a custom loss and the user's own optimiser."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import autoprune_edge as ape
from autoprune_edge.errors import ConfigError
from autoprune_edge.profiles.counting import count_macs


class TinyDetector(nn.Module):
    """Backbone + neck + two heads on one feature map; returns {"boxes": N x A*4 x H x W, "scores": ...}."""

    def __init__(self, anchors: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.neck = nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.box = nn.Conv2d(64, anchors * 4, 1)
        self.cls = nn.Sequential(nn.Conv2d(64, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, anchors * classes, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.neck(self.backbone(x))
        return {"boxes": self.box(f), "scores": self.cls(f)}


def _task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A learnable toy: each image has one bright square; boxes regress its centre, scores its colour."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.1
    colour = torch.randint(0, 3, (n,), generator=g)
    pos = torch.randint(0, 24, (n, 2), generator=g)
    for i in range(n):
        r, c = pos[i].tolist()
        x[i, colour[i], r:r + 8, c:c + 8] += 1.0
    return x, colour, pos.float() / 24


def _loss(out: dict[str, torch.Tensor], colour: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """A custom detection-style loss: class scores pooled over the map, box offsets pooled too."""
    n = colour.shape[0]
    scores = out["scores"].view(n, 3, 5, -1).mean(dim=(1, 3))
    boxes = out["boxes"].view(n, 3, 4, -1).mean(dim=(1, 3))[:, :2]
    return nn.functional.cross_entropy(scores, colour) + nn.functional.mse_loss(boxes, pos)


def test_pruner_drives_a_detector_in_the_users_loop():
    torch.manual_seed(0)
    model = TinyDetector()
    example = torch.zeros(1, 3, 32, 32)
    dense_macs = count_macs(model, example).macs
    steps = 60
    pruner = ape.Pruner(model, example, f"{dense_macs / 2e6:.6f}MFLOPs", total_steps=steps, ignore=[model.cls[0]])
    gate_ids = {id(p) for p in pruner.params}
    assert not gate_ids & {id(p) for p in model.parameters()}  # the user's optimiser never sees the gates
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, colour, pos = _task(256, 1)
    model.train()
    first = None
    for step in range(steps):
        i = (step * 32) % 256
        task = _loss(model(x[i:i + 32]), colour[i:i + 32], pos[i:i + 32])
        first = first if first is not None else float(task.detach())
        (task + pruner.penalty()).backward()
        rec = pruner.step(opt)
        opt.step()
        opt.zero_grad()
    assert rec["macs"] <= dense_macs / 2 * 1.001  # the gated model landed on the budget
    small = pruner.compact()
    r = pruner.report
    assert r.macs_after <= dense_macs / 2 and r.macs_after == count_macs(small, example).macs
    assert r.equivalence_rel < 1e-4 and r.steps == steps
    # heads keep their contract channels; the ignored layer keeps its width; something else was pruned
    assert set(r.head_layers) == {"box", "cls.2"} and r.ignored_layers == ["cls.0"]
    assert small.box.out_channels == 12 and small.cls[2].out_channels == 15 and small.cls[0].out_channels == 32
    assert small.backbone[0].out_channels < 32 or small.neck[0].out_channels < 64
    out = small(x[:4])
    assert out["boxes"].shape == (4, 12, 8, 8) and out["scores"].shape == (4, 15, 8, 8)
    with torch.no_grad():
        assert float(_loss(small(x), colour, pos)) < first  # it still learned the task
    with pytest.raises(ConfigError, match="already compacted"):
        pruner.penalty()


def test_pruner_rejects_bad_arguments():
    model = TinyDetector()
    example = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="total_steps"):
        ape.Pruner(model, example, "1MFLOPs", total_steps=0)
    with pytest.raises(ConfigError, match="no module named 'nope'"):
        ape.Pruner(model, example, "1MFLOPs", total_steps=5, ignore=["nope"])
    with pytest.raises(ape.AutoPruneEdgeError, match="target"):
        ape.Pruner(model, example, "5ms", total_steps=5)


def test_a_pruned_detector_exports_with_parity_on_every_output(tmp_path):
    """ONNX and TFLite fp32/int8 of a two-output detector, each output checked against torch."""
    torch.manual_seed(0)
    model = TinyDetector()
    example = torch.zeros(1, 3, 32, 32)
    macs = count_macs(model, example).macs
    pruner = ape.Pruner(model, example, f"{macs / 2e6:.6f}MFLOPs", total_steps=4)
    x, colour, pos = _task(96, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for step in range(4):
        (_loss(model(x[:32]), colour[:32], pos[:32]) + pruner.penalty()).backward()
        pruner.step(opt)
        opt.step()
        opt.zero_grad()
    small = pruner.compact()
    arts = ape.convert(small, example, tmp_path, formats="tflite-fp32,tflite-int8", calib=x[32:96], heldout=x[:16],
                       measure=False)
    by = {a.format: a for a in arts}
    assert set(by) == {"onnx", "tflite-fp32", "tflite-int8"}
    for fmt in ("onnx", "tflite-fp32"):
        p = by[fmt].parity
        assert by[fmt].ok and p["outputs"] == 2 and len(p["per_output"]) == 2 and p["rel"] < 1e-4, (fmt, p)
    q = by["tflite-int8"].parity
    assert q["outputs"] == 2 and not q["top1_judged"] and min(o["cosine"] for o in q["per_output"]) > 0.98, q
    assert by["tflite-int8"].ok and len(by["tflite-int8"].io["outputs"]) == 2
    with pytest.raises(ape.AutoPruneEdgeError, match="Core ML"):
        ape.convert(small, example, tmp_path / "c", formats="coreml", heldout=x[:4], measure=False)


def test_torchvision_ssdlite_prunes_with_its_heads_intact():
    """A real detector from the zoo (raw heads, no NMS): 2x fewer MACs, exact, every head conv kept."""
    from autoprune_edge.heads import flatten_outputs
    from autoprune_edge.models import build_model

    torch.manual_seed(0)
    model, spec = build_model("ssdlite320_mobilenet_v3_large", num_classes=7)
    assert spec.source == "zoo"
    example = torch.zeros(1, 3, 160, 160)
    before = [tuple(t.shape) for t in flatten_outputs(model.eval()(example))]
    macs = count_macs(model, example).macs
    pruner = ape.Pruner(model, example, f"{macs / 2e6:.6f}MFLOPs", total_steps=2)
    model.train()
    for _ in range(2):
        out = model(torch.randn(2, 3, 160, 160))
        (sum(t.pow(2).mean() for t in flatten_outputs(out)) + pruner.penalty()).backward()
        pruner.step()
    small = pruner.compact()
    r = pruner.report
    assert r.macs_after <= macs / 2 and r.equivalence_rel < 1e-4
    assert len(r.head_layers) == 12 and all(n.startswith("head.") for n in r.head_layers)
    assert [tuple(t.shape) for t in flatten_outputs(small(example))] == before


def test_pruner_step_is_loss_scale_free_and_skips_overflow():
    """Under AMP the loss is scaled (GradScaler): the gate step must not depend on the scale, and an
    overflowed step (inf gradients) must leave the gates alone."""
    def run(scale: float, overflow: bool = False) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = TinyDetector()
        example = torch.zeros(1, 3, 32, 32)
        pruner = ape.Pruner(model, example, "1MFLOPs", total_steps=10)
        x, colour, pos = _task(8, 3)
        loss = (_loss(model(x), colour, pos) + pruner.penalty()) * scale
        loss.backward()
        if overflow:
            pruner.params[0].grad[0] = float("inf")
        before = [p.detach().clone() for p in pruner.params]
        pruner.step()
        return [p.detach() - b for p, b in zip(pruner.params, before)]

    a, b, c = run(1.0), run(1024.0), run(1.0, overflow=True)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b)) and any(bool(x.abs().sum()) for x in a)
    assert all(not bool(x.abs().sum()) for x in c)


class TwinHeads(nn.Module):
    """Two outputs of the same shape (as FPN levels of equal size give): order must survive conversion."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU())
        self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return self.b(f) * 3.0, self.a(f), f.mean(dim=(2, 3))


def test_same_shape_outputs_keep_their_order_through_tflite(tmp_path):
    torch.manual_seed(0)
    arts = ape.convert(TwinHeads().eval(), torch.zeros(1, 3, 8, 8), tmp_path, formats="tflite-fp32",
                       heldout=torch.randn(4, 3, 8, 8), measure=False)
    fp32 = arts[-1]
    assert fp32.format == "tflite-fp32" and fp32.ok and fp32.parity["outputs"] == 3, fp32.parity
    assert all(p["rel"] < 1e-5 for p in fp32.parity["per_output"])
