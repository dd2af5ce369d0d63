"""A real app API in the loop: every .tflite of a build folder loaded by MediaPipe Tasks' ImageClassifier.

MediaPipe pins its own protobuf/numpy, so it runs in its own virtual environment (created on first use
with `pip install mediapipe`; `--venv` reuses one). For each shipped .tflite it classifies validation
images that the build never calibrated on, given as uint8 RGB frames as a camera app would, and compares
MediaPipe's top-1 and scores with LiteRT run on the documented preprocessing (fp32: pixels / 255
normalised with the card's mean/std; uint8 int8 file: the raw pixels). Pass: MediaPipe loads the file
and its top-1 agrees with LiteRT on every image.

    python benchmarks/mediapipe_client.py                    # builds MobileNetV2 for raspberrypi4 first
    python benchmarks/mediapipe_client.py --build out/mobilenet_v2-raspberrypi4 --images 50
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoprune_edge.converters.litert import run_tflite  # noqa: E402
from autoprune_edge.converters.int8_prep import to_pixels  # noqa: E402
from autoprune_edge.data import load_data  # noqa: E402
from autoprune_edge.modelcard import load_card  # noqa: E402
from benchmarks.common import md_table, write_results  # noqa: E402

CLIENT = r"""
import json, sys
import numpy as np
import mediapipe as mp
from mediapipe.tasks import python as mpt
from mediapipe.tasks.python import vision
model, frames, n_classes = sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3])
out = {"version": mp.__version__, "scores": [], "error": None}
try:
    opts = vision.ImageClassifierOptions(base_options=mpt.BaseOptions(model_asset_path=model), max_results=n_classes)
    with vision.ImageClassifier.create_from_options(opts) as clf:
        for f in frames:
            res = clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(f)))
            s = [0.0] * n_classes
            for c in res.classifications[0].categories:
                s[c.index] = c.score
            out["scores"].append(s)
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"[:400]
print("MEDIAPIPE_RESULT " + json.dumps(out))
"""


def ensure_venv(path: Path) -> Path:
    py = path / "bin" / "python"
    if not py.exists():
        print(f"creating {path} with mediapipe (once) ...", flush=True)
        venv.create(path, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mediapipe"], check=True)
    return py


def frames_for(card, n: int) -> tuple[np.ndarray, torch.Tensor]:
    """uint8 NHWC RGB frames of the build's validation images (never used for calibration)."""
    spec = card.data.spec if card.data else "synthetic"
    size = card.preprocessing.input_shape_nchw[-1]
    data = load_data(spec, input_size=size)
    x = torch.stack([data.val[i][0] for i in range(min(n, len(data.val)))])
    px = to_pixels(x, list(data.mean), list(data.std)).round().clamp(0, 255)
    return px.permute(0, 2, 3, 1).to(torch.uint8).numpy(), px


def litert_scores(path: Path, px: torch.Tensor, pixel_input: bool, mean, std) -> np.ndarray:
    if pixel_input:
        return run_tflite(path, px.numpy())
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return run_tflite(path, ((px / 255 - m) / s).numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", help="a build folder (default: build MobileNetV2 for raspberrypi4 into a temp dir)")
    ap.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "ape-mediapipe-venv"))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    py = ensure_venv(Path(args.venv))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.build) if args.build else None
        if folder is None:
            from autoprune_edge.pipeline import build

            folder = build(model="mobilenet_v2", target="raspberrypi4", budget="100MFLOPs", out_dir=tmp,
                           name="m", formats="tflite-fp32,tflite-int8", allow_parity_failure=True).out_dir
        card = load_card(folder)
        frames, px = frames_for(card, args.images)
        np.save(Path(tmp) / "frames.npy", frames)
        n_classes = len(card.preprocessing.class_names) or len(card.predicted) or 10
        rows = []
        for art in card.artifacts:
            if not art.path.endswith(".tflite") or not art.written:
                continue
            r = subprocess.run([str(py), "-c", CLIENT, str(folder / art.path), str(Path(tmp) / "frames.npy"),
                                str(n_classes)], capture_output=True, text=True)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("MEDIAPIPE_RESULT ")), None)
            res = json.loads(line.removeprefix("MEDIAPIPE_RESULT ")) if line else {
                "error": (r.stderr or r.stdout)[-400:], "scores": [], "version": None}
            pixel = bool(art.int8 and art.int8.pixel_input)
            ref = litert_scores(folder / art.path, px, pixel, card.preprocessing.mean, card.preprocessing.std)
            row = {"file": art.path, "input": art.io["input"]["dtype"] if art.io else None,
                   "feeds": "raw uint8 pixels" if pixel else "pixels/255, mean/std from metadata",
                   "mediapipe": res.get("version"), "loaded": res["error"] is None, "error": res["error"]}
            if res["error"] is None:
                got = np.array(res["scores"], dtype=np.float32)
                row.update({"images": len(got), "top1_agree": float((got.argmax(1) == ref.argmax(1)).mean()),
                            "max_abs_score_diff": float(np.abs(got - ref).max())})
            rows.append(row)
            print(row, flush=True)
    ok = all(r["loaded"] and r.get("top1_agree") == 1.0 for r in rows)
    md = ["# MediaPipe Tasks ImageClassifier loads the shipped .tflite files", "",
          f"Build: {'`' + args.build + '`' if args.build else 'MobileNetV2, raspberrypi4, 100MFLOPs (default build)'}"
          f"; {args.images} validation frames as uint8 RGB. LiteRT reference on the documented preprocessing.", "",
          md_table(rows, ["file", "input", "feeds", "mediapipe", "loaded", "images", "top1_agree",
                          "max_abs_score_diff", "error"]), "",
          f"Result: {'every file loads and agrees on every image' if ok else 'NOT all files load and agree'}."]
    write_results(f"mediapipe_client{args.tag}", {"rows": rows, "ok": ok}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
