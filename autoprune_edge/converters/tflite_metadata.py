"""Embed labels and input normalisation into a .tflite file, without tflite-support.

tflite-support (the official metadata writer) needs protobuf < 4 and cannot join this stack
(onnx2tf pins protobuf 4.25.5), so this module writes the same thing itself:

* a ``TFLITE_METADATA`` entry: a ``ModelMetadata`` flatbuffer (file identifier ``M001``) laid out per
  tensorflow/tflite-support ``metadata_schema.fbs`` (schema 1.0/1.1 field order, fields used here exist
  since 1.0.0): model name/description/version, the input as an RGB/grayscale image with
  ``NormalizationOptions`` and the output with a ``TENSOR_AXIS_LABELS`` associated file ``labels.txt``;
* the label file itself, appended to the model as a zip archive (``ZIP_STORED``), which is how
  tflite-support packs associated files — LiteRT ignores the trailing bytes;
* an ``autoprune_edge`` entry with the same facts as JSON (layout, shape, mean/std on [0, 1] pixels,
  quantisation), for readers that do not parse the metadata schema.

Normalisation in the metadata schema applies to raw pixel values, which image pipelines feed as 0..255,
so mean/std are stored multiplied by 255: ``(p/255 - m)/s == (p - 255 m)/(255 s)``.

The model flatbuffer is re-serialised with LiteRT's own object API (ai_edge_litert.tools.flatbuffer_utils,
the same route tflite-support takes); tests check that outputs are bit-identical afterwards.

Checked once against the official reader: in a throw-away venv with tflite-support 0.4.4,
``MetadataDisplayer.with_model_file(...)`` returns the expected JSON (ImageProperties RGB, the
normalisation, labels.txt as TENSOR_AXIS_LABELS) and unpacks labels.txt from the appended zip.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from flatbuffers import encode, packer
from flatbuffers import number_types as N
from flatbuffers.table import Table

from autoprune_edge.errors import ConversionError

from .tflite_graph import load_model

METADATA_NAME = "TFLITE_METADATA"
CUSTOM_NAME = "autoprune_edge"
LABELS_FILE = "labels.txt"
_TENSOR_AXIS_LABELS = 2
_COLOR = {"RGB": 1, "GRAYSCALE": 2}


def _strings(b, items: list[str]) -> int:
    offs = [b.CreateString(s) for s in items]
    b.StartVector(4, len(offs), 4)
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _offsets(b, offs: list[int]) -> int:
    b.StartVector(4, len(offs), 4)
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _floats(b, vals: list[float]) -> int:
    b.StartVector(4, len(vals), 4)
    for v in reversed(vals):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _table(b, fields: list[tuple[str, int, Any]]) -> int:
    """A table from (kind, slot, value) with kind 'off' (offset), 'i8' (byte) or 'u32'."""
    b.StartObject(max(s for _, s, _ in fields) + 1 if fields else 0)
    for kind, slot, val in fields:
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(slot, val, 0)
        elif kind == "i8":
            b.PrependInt8Slot(slot, int(val), 0)
        elif kind == "u8":
            b.PrependUint8Slot(slot, int(val), 0)
        elif kind == "u32":
            b.PrependUint32Slot(slot, int(val), 0)
    return b.EndObject()


def build_model_metadata(*, name: str, description: str, version: str, input_name: str, input_description: str,
                         color_space: str, height: int, width: int, mean_255: list[float], std_255: list[float],
                         output_name: str, output_description: str, labels_file: str = LABELS_FILE) -> bytes:
    """A ModelMetadata flatbuffer (metadata_schema.fbs) for a one-input image classifier."""
    b = flatbuffers.Builder(1024)
    # AssociatedFile { name:0, description:1, type:2 (byte), locale:3 }
    af = _table(b, [("off", 0, b.CreateString(labels_file)),
                    ("off", 1, b.CreateString("class names, one per line, in output order")),
                    ("i8", 2, _TENSOR_AXIS_LABELS)])
    # NormalizationOptions { mean:0, std:1 }; ProcessUnit { options_type:0 (ubyte), options:1 }
    norm = _table(b, [("off", 0, _floats(b, mean_255)), ("off", 1, _floats(b, std_255))])
    pu = _table(b, [("u8", 0, 1), ("off", 1, norm)])  # 1 = NormalizationOptions
    # ImageSize { width:0, height:1 }; ImageProperties { color_space:0, default_size:1 }
    size = _table(b, [("u32", 0, width), ("u32", 1, height)])
    img = _table(b, [("i8", 0, _COLOR[color_space]), ("off", 1, size)])
    # Content { content_properties_type:0, content_properties:1, range:2 }
    in_content = _table(b, [("u8", 0, 2), ("off", 1, img)])  # 2 = ImageProperties
    feat = _table(b, [])
    out_content = _table(b, [("u8", 0, 1), ("off", 1, feat)])  # 1 = FeatureProperties
    # TensorMetadata { name:0, description:1, dimension_names:2, content:3, process_units:4, stats:5,
    #                  associated_files:6 }
    tin = _table(b, [("off", 0, b.CreateString(input_name)), ("off", 1, b.CreateString(input_description)),
                     ("off", 3, in_content), ("off", 4, _offsets(b, [pu]))])
    tout = _table(b, [("off", 0, b.CreateString(output_name)), ("off", 1, b.CreateString(output_description)),
                      ("off", 3, out_content), ("off", 6, _offsets(b, [af]))])
    # SubGraphMetadata { name:0, description:1, input_tensor_metadata:2, output_tensor_metadata:3, ... }
    sg = _table(b, [("off", 0, b.CreateString(name)), ("off", 2, _offsets(b, [tin])),
                    ("off", 3, _offsets(b, [tout]))])
    # ModelMetadata { name:0, description:1, version:2, subgraph_metadata:3, author:4, license:5,
    #                 associated_files:6, min_parser_version:7 }
    root = _table(b, [("off", 0, b.CreateString(name)), ("off", 1, b.CreateString(description)),
                      ("off", 2, b.CreateString(version)), ("off", 3, _offsets(b, [sg])),
                      ("off", 4, b.CreateString("autoprune-edge")), ("off", 7, b.CreateString("1.0.0"))])
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def embed_metadata(path: Path, *, name: str, description: str, version: str, labels: list[str],
                   mean: list[float], std: list[float], info: dict[str, Any],
                   input_description: str | None = None) -> dict[str, Any]:
    """Rewrite ``path`` in place with TFLITE_METADATA + labels.txt + an autoprune_edge JSON entry.

    ``mean``/``std`` are per channel on [0, 1] pixels (a model that takes raw 0..255 pixels passes mean 0,
    std 1/255: identity normalisation); ``info`` is any JSON-able dict (layout, shape, quantisation...).
    Returns what was embedded, for the model card.
    """
    # LiteRT is an optional heavy runtime: loaded only when a file is written
    from ai_edge_litert import schema_py_generated as s
    from ai_edge_litert.tools import flatbuffer_utils as fu

    path = Path(path)
    try:
        model = fu.read_model(str(path))
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"cannot read {path} to add metadata: {str(e).splitlines()[0][:200]}") from e
    g = model.subgraphs[0]
    in_t = g.tensors[g.inputs[0]]
    shape = [int(v) for v in in_t.shape]
    nhwc = len(shape) == 4 and shape[3] in (1, 3) and shape[1] > 4
    h, w, c = (shape[1], shape[2], shape[3]) if nhwc else (shape[-2], shape[-1], shape[1]) if len(shape) == 4 \
        else (0, 0, len(mean))
    color = "GRAYSCALE" if c == 1 else "RGB"
    meta = build_model_metadata(
        name=name, description=description, version=version,
        input_name="image", input_description=input_description or (
            f"{'NHWC' if nhwc else 'NCHW'} {shape}; pixels scaled to [0, 1] then normalised with mean {list(mean)} "
            f"and std {list(std)}"),
        color_space=color, height=h, width=w, mean_255=[255.0 * m for m in mean], std_255=[255.0 * v for v in std],
        output_name="logits", output_description=f"{len(labels)} class logits (apply softmax for probabilities)")
    custom = json.dumps({"labels": labels, "mean": list(mean), "std": list(std), **info}, sort_keys=True).encode()
    keep = [m for m in (model.metadata or []) if _name(m.name) not in (METADATA_NAME, CUSTOM_NAME)]
    for nm, data in ((METADATA_NAME, meta), (CUSTOM_NAME, custom)):
        buf = s.BufferT()
        buf.data = np.frombuffer(data, dtype=np.uint8).copy()
        model.buffers.append(buf)
        md = s.MetadataT()
        md.name = nm
        md.buffer = len(model.buffers) - 1
        keep.append(md)
    model.metadata = keep
    out = io.BytesIO(fu.convert_object_to_bytearray(model))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(LABELS_FILE, "\n".join(labels) + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(out.getvalue())
    os.replace(tmp, path)
    return {"embedded": True, "entries": [METADATA_NAME, CUSTOM_NAME], "associated_files": [LABELS_FILE],
            "normalization_mean_255": [round(255.0 * m, 6) for m in mean],
            "normalization_std_255": [round(255.0 * v, 6) for v in std], "color_space": color}


def _name(n: Any) -> str:
    return n.decode("utf-8", "replace") if isinstance(n, (bytes, bytearray)) else str(n or "")


# ---------------------------------------------------------------------------------------------- read
def read_metadata(path: Path) -> dict[str, Any]:
    """What embed_metadata wrote: {'entries': [...], 'autoprune_edge': {...}, 'model_metadata': {...},
    'associated_files': {name: text}}. Parses the ModelMetadata flatbuffer with the generic table reader."""
    path = Path(path)
    _, model = load_model(path)
    raw = path.read_bytes()
    out: dict[str, Any] = {"entries": []}
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        nm = _name(md.Name())
        out["entries"].append(nm)
        data = model.Buffers(md.Buffer()).DataAsNumpy()
        blob = bytes(np.asarray(data, dtype=np.uint8)) if not isinstance(data, int) else b""
        if nm == CUSTOM_NAME:
            out[CUSTOM_NAME] = json.loads(blob.decode())
        elif nm == METADATA_NAME:
            out["model_metadata"] = _parse_model_metadata(blob)
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            out["associated_files"] = {n: zf.read(n).decode("utf-8", "replace") for n in zf.namelist()}
    except zipfile.BadZipFile:
        out["associated_files"] = {}
    return out


def _parse_model_metadata(buf: bytes) -> dict[str, Any]:
    if buf[4:8] != b"M001":
        raise ConversionError("TFLITE_METADATA entry is not a ModelMetadata flatbuffer (no M001 identifier)")

    def tab(pos: int) -> Table:
        return Table(bytearray(buf), pos)

    def field_off(t: Table, slot: int) -> int:
        return t.Offset(4 + 2 * slot)

    def string(t: Table, slot: int) -> str | None:
        o = field_off(t, slot)
        return t.String(o + t.Pos).decode() if o else None

    def sub(t: Table, slot: int) -> Table | None:
        o = field_off(t, slot)
        return tab(t.Indirect(o + t.Pos)) if o else None

    def vec_tables(t: Table, slot: int) -> list[Table]:
        o = field_off(t, slot)
        if not o:
            return []
        start, n = t.Vector(o), t.VectorLen(o)
        return [tab(t.Indirect(start + 4 * k)) for k in range(n)]

    def vec_floats(t: Table, slot: int) -> list[float]:
        o = field_off(t, slot)
        if not o:
            return []
        start, n = t.Vector(o), t.VectorLen(o)
        return [encode.Get(packer.float32, t.Bytes, start + 4 * k) for k in range(n)]

    root = tab(encode.Get(packer.uoffset, buf, 0))
    res: dict[str, Any] = {"name": string(root, 0), "description": string(root, 1), "version": string(root, 2),
                           "min_parser_version": string(root, 7), "inputs": [], "outputs": []}
    for sg in vec_tables(root, 3):
        for key, slot in (("inputs", 2), ("outputs", 3)):
            for tm in vec_tables(sg, slot):
                entry: dict[str, Any] = {"name": string(tm, 0), "description": string(tm, 1)}
                for pu in vec_tables(tm, 4):
                    o = field_off(pu, 0)
                    if o and pu.Get(N.Uint8Flags, o + pu.Pos) == 1:  # NormalizationOptions
                        norm = sub(pu, 1)
                        entry["mean"], entry["std"] = vec_floats(norm, 0), vec_floats(norm, 1)
                entry["associated_files"] = [string(af, 0) for af in vec_tables(tm, 6)]
                res[key].append(entry)
    return res
