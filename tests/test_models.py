"""models.py and the zoo: building, specs, safe weight loading, classifier replacement."""
from __future__ import annotations

import json
import pickle
import sys
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoprune_edge.errors import GraphError, UnknownModelError, WeightsError
from autoprune_edge.models import (
    ModelSpec,
    build_model,
    default_input_size,
    input_channels,
    load_weights,
    replace_classifier,
)

torch.set_num_threads(1)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_torchvision_models_build_and_rebuild(name):
    model, spec = build_model(name, num_classes=10)
    assert spec.source == "torchvision" and spec.name == name and spec.kwargs["num_classes"] == 10
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).build()
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)


def test_torchvision_default_classes_and_aux_heads():
    model, spec = build_model("googlenet")
    assert spec.kwargs["num_classes"] == 1000 and spec.kwargs["aux_logits"] is False
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1000)  # no aux tuple in train mode


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean mobilenet_v2") as info:
        build_model("mobilenetv2")
    assert "\n" not in str(info.value)
    with pytest.raises(UnknownModelError, match="unknown model 'qwertyuiop'"):
        build_model("qwertyuiop")
    with pytest.raises(UnknownModelError, match="3-channel"):
        build_model("resnet18", in_channels=4)


def test_default_input_size():
    assert default_input_size("mobilenet_v2") == 224
    assert default_input_size("inception_v3") == 299
    assert default_input_size("cifar_resnet56") == 32
    assert default_input_size("lenet5") == 28
    assert default_input_size("lenet300") == 28


# --------------------------------------------------------------------------------------------------- zoo


def test_cifar_resnet20_matches_akamaster():
    model, spec = build_model("cifar_resnet20")
    assert spec.source == "zoo" and spec.kwargs == {"num_classes": 10, "in_channels": 3}
    assert _n_params(model) == 269_722
    keys = list(model.state_dict())
    assert "layer1.0.conv1.weight" in keys and "layer3.2.bn2.running_var" in keys
    assert "linear.weight" in keys and "linear.bias" in keys
    no_counters = [k for k in keys if not k.endswith("num_batches_tracked")]
    assert len(no_counters) == 97  # the akamaster checkpoint has 97 entries
    assert model.state_dict()["layer2.0.conv1.weight"].shape == (32, 16, 3, 3)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("depth, params", [(32, 464_154), (44, 658_586), (56, 853_018)])
def test_cifar_resnet_param_counts(depth, params):
    model, _ = build_model(f"cifar_resnet{depth}")
    assert _n_params(model) == params


def test_option_a_shortcut_is_parameter_free_pad():
    model, _ = build_model("cifar_resnet20")
    block = model.layer2[0]
    assert list(block.shortcut.parameters()) == []
    x = torch.randn(2, 16, 32, 32)
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8), "constant", 0)
    assert torch.equal(block.shortcut(x), expected)
    assert torch.equal(model.layer3[0].shortcut(torch.ones(1, 32, 16, 16))[:, :16], torch.zeros(1, 16, 8, 8))


def test_lenets():
    lenet5, spec = build_model("lenet5")
    assert _n_params(lenet5) == 431_080 and spec.kwargs["in_channels"] == 1
    assert input_channels(lenet5, spec) == 1
    assert lenet5(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    lenet300, _ = build_model("lenet300")
    assert _n_params(lenet300) == 266_610
    assert lenet300(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    rgb, spec3 = build_model("lenet5", in_channels=3, num_classes=4)
    assert rgb(torch.randn(1, 3, 28, 28)).shape == (1, 4) and input_channels(rgb) == 3
    assert spec3.build().conv1.in_channels == 3


# ----------------------------------------------------------------------------------------------- factory


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    (tmp_path / "my_models_for_test.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(num_classes=2, width=4):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(12, width), nn.ReLU(), nn.Linear(width, num_classes))\n"
        "tiny.default_input_size = 2\n"
        "def not_a_model(**kw):\n"
        "    return 42\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_models_for_test", None)


def test_factory_models(factory_dir):
    model, spec = build_model("my_models_for_test:tiny", num_classes=3, width=5)
    assert spec.source == "factory" and spec.kwargs == {"width": 5, "num_classes": 3}
    assert model(torch.randn(2, 3, 2, 2)).shape == (2, 3)
    assert spec.build()[1].out_features == 5
    assert default_input_size("my_models_for_test:tiny") == 2
    with pytest.raises(UnknownModelError, match="cannot import module 'nope_mod'"):
        build_model("nope_mod:tiny")
    with pytest.raises(UnknownModelError, match="has no attribute 'missing'"):
        build_model("my_models_for_test:missing")
    with pytest.raises(UnknownModelError, match="returned int, not a torch.nn.Module"):
        build_model("my_models_for_test:not_a_model")
    with pytest.raises(UnknownModelError, match="rejected the arguments"):
        build_model("my_models_for_test:tiny", bogus=1)


# ----------------------------------------------------------------------------------------------- weights


def test_load_weights_round_trip_pth_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    src, _ = build_model("lenet5")
    torch.save(src.state_dict(), tmp_path / "w.pth")
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        dst, _ = build_model("lenet5")
        assert not torch.equal(dst.conv1.weight, src.conv1.weight)
        load_weights(dst, str(tmp_path / name))
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), k


def test_load_akamaster_style_checkpoint(tmp_path):
    """{'state_dict': {'module.*': ...}, 'best_prec1': float} without BatchNorm counters loads strictly."""
    src, _ = build_model("cifar_resnet20")
    sd = {f"module.{k}": v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": sd, "best_prec1": 91.78}, tmp_path / "resnet20-fake.th")
    dst, _ = build_model("cifar_resnet20")
    load_weights(dst, str(tmp_path / "resnet20-fake.th"))
    assert torch.equal(dst.layer3[2].bn2.running_var, src.layer3[2].bn2.running_var)
    assert torch.equal(dst.linear.weight, src.linear.weight)


def test_load_weights_mismatch_messages(tmp_path):
    big, _ = build_model("mobilenet_v2", num_classes=1000)
    torch.save({"model": big.state_dict()}, tmp_path / "x.pth")
    small, _ = build_model("mobilenet_v2", num_classes=10)
    with pytest.raises(WeightsError) as info:
        load_weights(small, str(tmp_path / "x.pth"), model_name="mobilenet_v2")
    msg = str(info.value)
    assert "x.pth does not match mobilenet_v2" in msg
    assert "classifier.1.weight has shape (1000, 1280) in the file but (10, 1280) in the model" in msg
    assert "--num-classes 1000" in msg and "\n" not in msg

    lenet, _ = build_model("lenet5")
    sd = lenet.state_dict()
    del sd["fc1.bias"]
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(WeightsError, match="the model has fc1.bias but the file lacks it"):
        load_weights(lenet, str(tmp_path / "missing.pt"))
    sd = lenet.state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match="the file has extra.weight, which the model lacks"):
        load_weights(lenet, str(tmp_path / "extra.pt"))


def test_load_weights_bad_files(tmp_path):
    model, _ = build_model("lenet300")
    (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(WeightsError, match="corrupt.pth: corrupt or not a PyTorch weights file"):
        load_weights(model, str(tmp_path / "corrupt.pth"))
    (tmp_path / "corrupt.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="corrupt or not a safetensors file"):
        load_weights(model, str(tmp_path / "corrupt.safetensors"))
    with pytest.raises(WeightsError, match="not found"):
        load_weights(model, str(tmp_path / "absent.pth"))
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(WeightsError, match="holds no state dict"):
        load_weights(model, str(tmp_path / "nostate.pth"))
    good = model.state_dict()
    torch.save(good, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="trunc.pth"):
        load_weights(model, str(tmp_path / "trunc.pth"))


class _NotATensor:
    def __init__(self):
        self.x = 1


def test_load_weights_refuses_arbitrary_objects(tmp_path):
    model, _ = build_model("lenet300")
    torch.save({"state_dict": model.state_dict(), "extra": _NotATensor()}, tmp_path / "obj.pth")
    with pytest.raises(WeightsError, match="refusing to load .*obj.pth: it contains Python objects .*_NotATensor"):
        load_weights(model, str(tmp_path / "obj.pth"))

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"fc1.weight": Evil()}, protocol=2))
    with pytest.raises(WeightsError, match="refusing to load .*evil.pth.*io.open"):
        load_weights(model, str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_torchvision_weight_names_need_download_flag(tmp_path, monkeypatch):
    import torchvision.models._api as tv_api

    old_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        model, _ = build_model("mobilenet_v2")
        with pytest.raises(WeightsError, match="allow-download"):
            load_weights(model, "MobileNet_V2_Weights.IMAGENET1K_V1")
        with pytest.raises(WeightsError, match="allow-download"):
            load_weights(model, "IMAGENET1K_V1", model_name="mobilenet_v2")

        def offline(*args, **kwargs):
            raise URLError("[Errno -3] Temporary failure in name resolution")

        monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
        with pytest.raises(WeightsError, match="cannot download .*no network.*pass a local file"):
            load_weights(model, "MobileNet_V2_Weights.IMAGENET1K_V1", allow_download=True)
        with pytest.raises(WeightsError, match="not a torchvision weights name"):
            load_weights(model, "NoSuch_Weights.FOO")
    finally:
        torch.hub.set_dir(old_dir)


# -------------------------------------------------------------------------------------------- classifier


def test_replace_classifier_linear():
    model, spec = build_model("mobilenet_v2", num_classes=1000)
    x = torch.randn(1, 3, 64, 64)
    assert replace_classifier(model, 1000, spec=spec, example_input=x) is None
    old = model.classifier[1]
    assert replace_classifier(model, 10, spec=spec, example_input=x) == "classifier.1"
    assert model.classifier[1] is not old and model.classifier[1].out_features == 10
    assert spec.kwargs["num_classes"] == 10 and spec.build().classifier[1].out_features == 10
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 10)
    resnet, _ = build_model("cifar_resnet20")
    assert replace_classifier(resnet, 100) == "linear" and resnet.linear.weight.shape == (100, 64)


def test_replace_classifier_conv_and_errors():
    squeeze, _ = build_model("squeezenet1_0")
    assert replace_classifier(squeeze, 7) == "classifier.1"
    squeeze.eval()
    with torch.no_grad():
        assert squeeze(torch.randn(1, 3, 64, 64)).shape == (1, 7)

    class LinearThenSoftmaxFeature(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * 2

    with pytest.raises(GraphError, match="does not produce the model output"):
        replace_classifier(LinearThenSoftmaxFeature(), 5, example_input=torch.randn(1, 4))
    with pytest.raises(GraphError, match="cannot find a final nn.Linear"):
        replace_classifier(nn.Sequential(nn.ReLU()), 5)
