"""Build models by name, load weights safely, swap the classifier.

Names: any torchvision classification model (``torchvision.models.list_models(module=torchvision.models)``,
random init), a zoo model (``cifar_resnet20/32/44/56``, ``lenet5``, ``lenet300``) or ``pkg.module:factory``
(imported with the current directory on ``sys.path`` and called with the keyword arguments).

Input channels: torchvision models take 3-channel images and are never modified; 1-channel data (MNIST) is
repeated to 3 channels by ``data.load_data(..., channels=3)`` instead. Zoo models take ``in_channels``.
"""
from __future__ import annotations

import difflib
import importlib
import json
import os
import pickle
import re
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from .classifier import classifier_name, find_classifier
from .errors import GraphError, UnknownModelError, WeightsError
from .zoo import ZOO, build_zoo

WEIGHT_SUFFIXES = (".pt", ".pth", ".th", ".safetensors", ".bin", ".ckpt")
_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict")
# Builders whose random-init defaults add auxiliary heads (tuple outputs in train mode) or warn.
_TV_DEFAULTS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


@dataclass
class ModelSpec:
    """Everything needed to rebuild the same (unpruned) architecture: ``spec.build()``. JSON-serialisable."""

    source: str  # "torchvision" | "zoo" | "factory"
    name: str  # torchvision/zoo name, or "pkg.module:factory"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return _build(self.source, self.name, dict(self.kwargs))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(source=d["source"], name=d["name"], kwargs=dict(d.get("kwargs", {})))


def torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def zoo_names() -> list[str]:
    return list(ZOO)


def _unknown(name: str) -> UnknownModelError:
    candidates = torchvision_names() + zoo_names()
    close = difflib.get_close_matches(name.lower(), candidates, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UnknownModelError(
        f"unknown model {name!r}: {hint}(use a torchvision classification model such as mobilenet_v2 or "
        f"resnet18, a zoo model {', '.join(zoo_names())}, or pkg.module:factory)"
    )


def _import_factory(name: str) -> Any:
    mod_name, _, attr = name.partition(":")
    if not mod_name or not attr:
        raise UnknownModelError(f"model {name!r} should be written pkg.module:factory")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name):
            raise UnknownModelError(
                f"cannot import module {mod_name!r} for model {name!r}: not found in {cwd} or on PYTHONPATH"
            ) from None
        raise UnknownModelError(f"importing {mod_name!r} for model {name!r} failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - user code may raise anything at import time
        raise UnknownModelError(f"importing {mod_name!r} for model {name!r} failed: {type(e).__name__}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownModelError(f"module {mod_name!r} has no attribute {attr!r} (model {name!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UnknownModelError(f"{name!r} is not callable; it must be a function or class that returns an nn.Module")
    return obj


def _build(source: str, name: str, kwargs: dict[str, Any]) -> nn.Module:
    if source == "zoo":
        if name not in ZOO:
            raise _unknown(name)
        try:
            return build_zoo(name, **kwargs)
        except (TypeError, ValueError) as e:
            raise UnknownModelError(f"cannot build {name} with {kwargs}: {e}") from None
    if source == "torchvision":
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise _unknown(name)
        try:
            return torchvision.models.get_model(name, weights=None, **kwargs)
        except (TypeError, ValueError) as e:
            raise UnknownModelError(f"cannot build torchvision {name} with {kwargs}: {e}") from None
    if source == "factory":
        factory = _import_factory(name)
        try:
            model = factory(**kwargs)
        except TypeError as e:
            raise UnknownModelError(f"factory {name} rejected the arguments {kwargs}: {e}") from None
        except Exception as e:  # noqa: BLE001
            raise UnknownModelError(f"factory {name} failed: {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise UnknownModelError(f"factory {name} returned {type(model).__name__}, not a torch.nn.Module")
        return model
    raise UnknownModelError(f"unknown model source {source!r} (expected torchvision, zoo or factory)")


def build_model(
    name: str, *, num_classes: int | None = None, in_channels: int | None = None, **kwargs: Any
) -> tuple[nn.Module, ModelSpec]:
    """Build a randomly initialised model and the spec that rebuilds it.

    ``num_classes`` defaults to the model's own (1000 for torchvision, 10 for the zoo). ``in_channels`` is
    honoured by zoo models and passed to factories; torchvision models always take 3 channels (give the
    data ``channels=3`` to repeat grey images).
    """
    name = name.strip()
    kw = dict(kwargs)
    if ":" in name:
        source = "factory"
        if num_classes is not None:
            kw["num_classes"] = num_classes
        if in_channels is not None:
            kw["in_channels"] = in_channels
    elif name in ZOO:
        source = "zoo"
        entry = ZOO[name]
        kw["num_classes"] = entry.num_classes if num_classes is None else num_classes
        kw["in_channels"] = entry.in_channels if in_channels is None else in_channels
    elif name in torchvision.models.list_models(module=torchvision.models):
        source = "torchvision"
        if in_channels not in (None, 1, 3):
            raise UnknownModelError(
                f"{name} takes 3-channel images; {in_channels}-channel input is not supported "
                f"(1-channel data is repeated to 3 channels instead)"
            )
        kw["num_classes"] = 1000 if num_classes is None else num_classes
        for k, v in _TV_DEFAULTS.get(name, {}).items():
            kw.setdefault(k, v)
    else:
        raise _unknown(name)
    if kw.get("num_classes") is not None and (not isinstance(kw["num_classes"], int) or kw["num_classes"] < 1):
        raise UnknownModelError(f"num_classes must be a positive whole number, got {kw['num_classes']!r}")
    try:
        json.dumps(kw)
    except TypeError:
        raise UnknownModelError(
            f"model options for {name} must be plain JSON values (numbers, strings, lists), got {kw!r}"
        ) from None
    spec = ModelSpec(source, name, kw)
    return spec.build(), spec


def default_input_size(name: str) -> int:
    """Side of the square input a model is designed for: 224; 299 for inception_v3; 32/28 for the zoo."""
    name = name.strip()
    if name in ZOO:
        return ZOO[name].input_size
    if name == "inception_v3":
        return 299
    if ":" in name:
        try:
            size = getattr(_import_factory(name), "default_input_size", None)
        except UnknownModelError:
            size = None
        if isinstance(size, int) and size > 0:
            return size
    return 224


def input_channels(model: nn.Module, spec: ModelSpec | None = None) -> int | None:
    """Channels the model expects: ``spec.kwargs['in_channels']``, else the first Conv2d's; None if unknown."""
    if spec is not None and isinstance(spec.kwargs.get("in_channels"), int):
        return spec.kwargs["in_channels"]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


# ------------------------------------------------------------------------------------------------ weights


def _shape(t: Any) -> str:
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ")"


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _extract_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _CONTAINER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return {_strip_prefixes(k): v for k, v in tensors.items()}
    raise WeightsError(
        f"{where} holds no state dict: expected a dict of tensors, or a dict with a "
        f"'state_dict' or 'model' entry (save it with torch.save(model.state_dict(), path))"
    )


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            return _extract_state_dict(load_file(str(path), device="cpu"), str(path))
        except WeightsError:
            raise
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            raise WeightsError(f"cannot read {path}: corrupt or not a safetensors file ({e})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported (?:global|class):? (?:GLOBAL )?([\w.]+)", str(e))
        if found:
            raise WeightsError(
                f"refusing to load {path}: it contains Python objects other than tensors ({found.group(1)}); "
                f"only plain state dicts are loaded, re-save it with torch.save(model.state_dict(), path)"
            ) from None
        raise WeightsError(
            f"cannot read {path}: corrupt or not a PyTorch weights file (not a torch.save archive or "
            f"a pickle of plain tensors)"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, UnicodeDecodeError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot read {path}: corrupt or not a PyTorch weights file ({first})") from None
    return _extract_state_dict(obj, str(path))


def _looks_like_tv_weights(text: str) -> bool:
    return re.fullmatch(r"([A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*", text) is not None


def _tv_state_dict(text: str, model_name: str | None, allow_download: bool) -> dict[str, torch.Tensor]:
    try:
        if "." in text:
            weights = torchvision.models.get_weight(text)
        elif model_name and model_name in torchvision.models.list_models(module=torchvision.models):
            weights = torchvision.models.get_model_weights(model_name)[text]
        else:
            raise WeightsError(
                f"weights {text!r} is neither a file nor a full torchvision weights name; write e.g. "
                f"MobileNet_V2_Weights.{text} or give a local .pth/.safetensors file"
            )
    except (KeyError, ValueError, AttributeError):
        raise WeightsError(f"weights {text!r} is not a file and not a torchvision weights name") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if cached.is_file():
        return _read_weights_file(cached)
    if not allow_download:
        raise WeightsError(
            f"{text} names torchvision weights that are not in the cache ({cached.parent}); downloading is off: "
            f"pass --allow-download or a local weights file"
        )
    try:
        sd = weights.get_state_dict(progress=False)
    except (URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise WeightsError(f"cannot download {text} from {weights.url}: no network ({reason}); pass a local file") from None
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"cannot load downloaded weights {text}: {type(e).__name__}: {e}") from None
    return _extract_state_dict(sd, text)


def load_weights(
    model: nn.Module, path_or_name: str, *, allow_download: bool = False, model_name: str | None = None
) -> None:
    """Load weights into ``model`` in place, strictly. Raises WeightsError with a one-line reason.

    ``path_or_name``: a local ``.pt/.pth/.th/.safetensors`` file (a raw state dict, or a dict with a
    ``state_dict``/``model`` entry; ``module.`` prefixes are stripped; loaded with ``weights_only=True`` so
    no arbitrary object is ever unpickled) or a torchvision weights name (``MobileNet_V2_Weights.IMAGENET1K_V1``,
    or ``IMAGENET1K_V1`` together with ``model_name``), used from the torch hub cache or downloaded only
    if ``allow_download``. ``model_name`` is also used in error messages.
    """
    label = model_name or type(model).__name__
    text = str(path_or_name).strip()
    path = Path(os.path.expanduser(text))
    if path.is_file():
        sd, where = _read_weights_file(path), path.name
    elif path.exists():
        raise WeightsError(f"weights path {path} is a directory; give a .pth/.pt/.th/.safetensors file")
    elif not _looks_like_tv_weights(text) or path.suffix.lower() in WEIGHT_SUFFIXES:
        raise WeightsError(f"weights file {path} not found")
    else:
        sd, where = _tv_state_dict(text, model_name, allow_download), text
    _check_and_load(model, sd, f"weights {'file ' if where != text else ''}{where}", label)


def _check_and_load(model: nn.Module, sd: dict[str, torch.Tensor], where: str, label: str) -> None:
    target = model.state_dict()
    sd = dict(sd)
    # Auxiliary heads that this model was built without (googlenet/inception_v3 aux_logits=False).
    for k in [k for k in sd if k not in target]:
        if getattr(model, k.split(".", 1)[0], "absent") is None:
            del sd[k]
    for k, v in target.items():  # old checkpoints (e.g. akamaster) have no BatchNorm counters
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v.clone()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [k for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    n_bad = len(missing) + len(unexpected) + len(mismatched)
    more = f" ({n_bad - 1} more difference{'s' if n_bad > 2 else ''})" if n_bad > 1 else ""
    if mismatched:
        k = mismatched[0]
        fshape, mshape = sd[k].shape, target[k].shape
        cls_name = classifier_name(model)
        if cls_name is not None and k.startswith(cls_name + ".") and len(fshape) == len(mshape) and fshape[1:] == mshape[1:]:
            hint = (
                f"pass --num-classes {fshape[0]} to load them as they are (the classifier can then be "
                f"replaced for {mshape[0]}-class data)"
            )
        else:
            hint = "check that the file was saved from the same architecture and options"
        raise WeightsError(
            f"{where} does not match {label}: layer {k} has shape {_shape(sd[k])} in the file but "
            f"{_shape(target[k])} in the model{more}; {hint}"
        )
    if missing:
        raise WeightsError(
            f"{where} does not match {label}: the model has {missing[0]} but the file lacks it{more}; "
            f"check that the file was saved from {label}"
        )
    if unexpected:
        raise WeightsError(
            f"{where} does not match {label}: the file has {unexpected[0]}, which the model lacks{more}; "
            f"check that the file was saved from {label}"
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{where} does not load into {label}: {str(e).splitlines()[0]}") from None


# --------------------------------------------------------------------------------------------- classifier


def replace_classifier(
    model: nn.Module,
    num_classes: int,
    *,
    spec: ModelSpec | None = None,
    example_input: torch.Tensor | None = None,
) -> str | None:
    """Give the model a fresh ``num_classes``-way final layer (the last nn.Linear in module order, or a final
    1x1 Conv2d as in SqueezeNet) if its class count differs. Returns the replaced layer's name, or None when
    nothing had to change. Updates ``spec.kwargs['num_classes']`` when a spec is given. With
    ``example_input`` it checks that the layer's output is the model's output (GraphError otherwise).
    """
    found = find_classifier(model)
    if found is None:
        raise GraphError(f"cannot find a final nn.Linear classifier in {type(model).__name__} to resize")
    name, old = found
    if example_input is not None:
        seen: list[torch.Tensor] = []
        handle = old.register_forward_hook(lambda _m, _i, out: seen.append(out))
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                out = model(example_input)
        finally:
            handle.remove()
            model.train(was_training)
        if not seen or not isinstance(out, torch.Tensor) or seen[-1].numel() != out.numel() or not torch.equal(
            seen[-1].reshape(out.shape), out
        ):
            raise GraphError(f"the last layer {name} of {type(model).__name__} does not produce the model output")
    current = old.out_features if isinstance(old, nn.Linear) else old.out_channels
    if spec is not None and (spec.source != "factory" or "num_classes" in spec.kwargs):
        spec.kwargs["num_classes"] = num_classes
    if current == num_classes:
        return None
    w = old.weight
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
    new.to(device=w.device, dtype=w.dtype)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    if isinstance(getattr(model, "num_classes", None), int):
        model.num_classes = num_classes
    return name


__all__ = [
    "ModelSpec",
    "build_model",
    "default_input_size",
    "input_channels",
    "load_weights",
    "replace_classifier",
    "torchvision_names",
    "zoo_names",
]
