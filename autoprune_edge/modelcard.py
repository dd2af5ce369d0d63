"""The model card: what a build made and how it was checked, as one typed record.

`ModelCard.to_dict()` is the model_card.json a build writes (keys in the order users have seen since
the first version); `ModelCard.from_dict` / `load_card` read a saved one back so the reports can be
regenerated from a build folder. Missing keys take neutral defaults, so a hand-written or older card
still renders.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .converters.artifact import Artifact, Int8Info
from .profiles.compare import TargetPrediction

WIDTHS_WHAT = "per layer [in channels, out channels] (features for linear layers)"
EQUIVALENCE_WHAT = "compacted model vs the original with pruned channels masked, same inputs"


def _take(cls: type, d: dict[str, Any] | None) -> Any:
    """A flat dataclass from the keys of ``d`` it knows (others ignored, missing ones defaulted)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (d or {}).items() if k in names})


@dataclass
class BudgetLine:
    text: str
    kind: str
    value: float
    achieved: float | None = None
    met: bool = False


@dataclass
class BeforeAfter:
    before: Any = None
    after: Any = None


@dataclass
class Widths:
    before: Any = field(default_factory=dict)  # layer -> [in, out]
    after: Any = field(default_factory=dict)
    what: str = WIDTHS_WHAT


@dataclass
class Equivalence:
    max_abs: float = 0.0
    rel: float = 0.0
    what: str = EQUIVALENCE_WHAT


@dataclass
class DataSource:
    spec: str = ""
    seed: int = 0
    name: str = ""
    train_images: int = 0
    val_images: int = 0
    input_shape_chw: list[int] = field(default_factory=list)


@dataclass
class Accuracy:
    metric: str = "top-1"  # tasks.Task.metric: top-1, mIoU, mAP@0.5
    before: float | None = None
    pruned_no_finetune: float | None = None
    after: float | None = None
    data: str = ""
    synthetic: bool = False
    split: str = ""


@dataclass
class Outputs:
    """What the exported file's output tensors are and how to read them."""

    meaning: str = ""
    tensors: list[dict[str, Any]] = field(default_factory=list)  # {"name": ..., "shape": [...]}, in file order


@dataclass
class Training:
    dense_pretrain_epochs: float = 0.0
    dense_pretrain_log: list[Any] = field(default_factory=list)
    gate_log: list[Any] = field(default_factory=list)
    finetune_epochs: float = 0.0
    finetune_log: list[Any] = field(default_factory=list)
    device: str = "cpu"  # where gate training and fine-tuning ran
    precision: str = "fp32"  # fp32, or the bf16 / fp16 autocast they ran under
    granularity: str = "structured"
    quantisation_aware: dict[str, Any] | None = None  # qat.QatInfo of `build --qat-epochs`, when it ran


@dataclass
class Preprocessing:
    input_shape_nchw: list[int] = field(default_factory=list)
    resize: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    pixel_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    formula: str = "x = (pixel / 255 - mean) / std per channel"
    channels: str = "RGB"
    torch_layout: str = "NCHW"
    onnx_layout: str = "NCHW"
    coreml_layout: str = "NCHW"
    tflite_layout: str | None = None
    tflite_input_shape: list[int] | None = None
    class_names: list[str] = field(default_factory=list)


@dataclass
class Formats:
    shipped: list[str] = field(default_factory=list)
    chosen_by: str = ""


@dataclass
class ParityInfo:
    thresholds: dict[str, float] = field(default_factory=dict)  # ParityThresholds.to_dict()
    inputs: str = "held-out inputs"
    n: int = 0
    overlap_with_calibration: int = 0
    dropped_overlapping: int = 0
    policy: str = ""
    failing: list[str] = field(default_factory=list)
    all_ok: bool = True


@dataclass
class Calibration:
    samples: int = 0
    split: str = "train"
    seed: int = 0
    unique: int = 0
    layout_given_to_converter: str = "NHWC"
    what: str = ""


@dataclass
class Quantization:
    """How to feed the int8 model: its calibration and the input/output quantisation of the file."""

    calibration: Calibration | None
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    how_to_feed: str = ""
    recipe: Int8Info | None = None  # I/O type, recipe chosen, what each recipe tried

    def to_dict(self) -> dict[str, Any]:
        calib = asdict(self.calibration) if self.calibration is not None else {}
        return {**calib, "input": self.input, "output": self.output, "how_to_feed": self.how_to_feed,
                "recipe": asdict(self.recipe) if self.recipe is not None else {}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Quantization:
        calib = _take(Calibration, d) if "samples" in d else None
        return cls(calib, d.get("input") or {}, d.get("output") or {}, d.get("how_to_feed", ""),
                   Int8Info.from_dict(d["recipe"]) if d.get("recipe") else None)


@dataclass
class ModelCard:
    autoprune_edge: str = ""  # version that built it
    name: str = ""
    architecture: dict[str, Any] = field(default_factory=dict)  # the model spec, as built
    target: str = ""
    target_description: str = ""
    flops_convention: str = "FLOPs = multiply-accumulates (MACs)"
    budget: list[BudgetLine] = field(default_factory=list)
    method: str = ""
    macs: BeforeAfter = field(default_factory=BeforeAfter)
    params: BeforeAfter = field(default_factory=BeforeAfter)
    channel_round_to: int = 1
    widths: Widths = field(default_factory=Widths)
    equivalence: Equivalence = field(default_factory=Equivalence)
    data: DataSource | None = None
    accuracy: Accuracy = field(default_factory=Accuracy)
    training: Training = field(default_factory=Training)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    formats: Formats = field(default_factory=Formats)
    parity: ParityInfo = field(default_factory=ParityInfo)
    quantization: Quantization | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    edgetpu: dict[str, Any] | None = None  # readiness of the int8 file when the target is an Edge TPU
    tflite_metadata: str | None = None
    predicted: dict[str, TargetPrediction] = field(default_factory=dict)
    reproduce: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    build_seconds: float = 0.0
    task: str = "classify"  # tasks.TASKS key
    outputs: Outputs | None = None

    @property
    def budgets_met(self) -> bool:
        return all(b.met for b in self.budget)

    @property
    def failing(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.failures]

    def budget_limit(self, kind: str) -> float | None:
        """The tightest limit of one budget kind, if any was given."""
        vals = [b.value for b in self.budget if b.kind == kind]
        return min(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """A card from its JSON form (a saved model_card.json, or a dict written by hand)."""
        nested = {"macs": BeforeAfter, "params": BeforeAfter, "widths": Widths, "equivalence": Equivalence,
                  "accuracy": Accuracy, "training": Training, "preprocessing": Preprocessing, "formats": Formats,
                  "parity": ParityInfo}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        for key, typ in nested.items():
            if isinstance(kw.get(key), dict):
                kw[key] = _take(typ, kw[key])
        kw["budget"] = [_take(BudgetLine, b) for b in d.get("budget") or []]
        kw["data"] = _take(DataSource, d["data"]) if d.get("data") else None
        kw["quantization"] = Quantization.from_dict(d["quantization"]) if d.get("quantization") else None
        kw["artifacts"] = [Artifact.from_dict(a) for a in d.get("artifacts") or []]
        kw["predicted"] = {k: TargetPrediction.from_dict(v) for k, v in (d.get("predicted") or {}).items()}
        return cls(**kw)


def load_card(path: str | Path) -> ModelCard:
    """The card of a build folder (or a model_card.json path)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model_card.json"
    return ModelCard.from_dict(json.loads(path.read_text()))


def _plain(v: Any) -> Any:
    if hasattr(v, "to_dict") and not isinstance(v, dict):
        return v.to_dict()
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
