"""A representative slice of the torchvision zoo through the structural path (benchmarks/zoo.py runs all).

Each model: prune ~30 % of MACs with `prune(method="l1", epochs=0)` (which itself checks the compacted
model against the masked one and raises on any difference), then ONNX export + onnxruntime parity.
Random init at a reduced resolution; the graph is the same at any resolution.
"""
import math

import pytest
import torch

from autoprune_edge.converters.onnx_export import export_onnx, run_onnx
from autoprune_edge.converters.parity import compare
from autoprune_edge.models import build_model
from autoprune_edge.profiles.counting import count_macs
from autoprune_edge.pruning import prune

SUBSET = [
    ("resnet18", {}, 128),
    ("mobilenet_v3_small", {}, 128),
    ("densenet121", {}, 96),
    ("shufflenet_v2_x0_5", {}, 128),
    ("efficientnet_b0", {}, 128),
    ("resnext50_32x4d", {}, 96),  # grouped convs: tied channels
    ("convnext_tiny", {}, 96),  # LayerNorm over channels: trunk left dense, MLP pruned
    ("vit_b_16", {"num_layers": 2, "image_size": 96}, 96),  # attention; ViT-B/16 at reduced depth
]


def _build(name, kwargs):
    if name == "vit_b_16":  # torchvision's vit_b_16() fixes num_layers; build the same class shallower
        import torchvision

        return torchvision.models.VisionTransformer(patch_size=16, num_heads=12, hidden_dim=768, mlp_dim=3072,
                                                    **kwargs)
    return build_model(name, **kwargs)[0]


@pytest.mark.parametrize("name,kwargs,size", SUBSET, ids=[s[0] for s in SUBSET])
def test_torchvision_model_prunes_compacts_exports(name, kwargs, size, tmp_path):
    torch.manual_seed(0)
    model = _build(name, kwargs).eval()
    shape = (1, 3, size, size)
    dense = count_macs(model, torch.randn(shape)).macs
    budget = math.floor(0.7 * dense)
    res = prune(model, None, [f"{budget}MACs"], method="l1", epochs=0, input_shape=shape)
    assert res.macs_after <= budget
    assert res.macs_after >= 0.6 * dense, "the selection should land close under the budget"
    assert res.equivalence_rel <= 1e-4
    assert res.groups_pruned > 0
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = res.model(x).numpy()
    path = export_onnx(res.model, x[:1], tmp_path / "m.onnx")
    p = compare(ref, run_onnx(path, x.numpy()))
    assert p.ok(1e-3), str(p)
