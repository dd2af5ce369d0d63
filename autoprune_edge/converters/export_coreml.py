"""The `coreml` format: torch -> model.mlpackage (ML program, fp16), checked by its spec (prediction
needs macOS)."""
from __future__ import annotations

import json

from .. import progress
from ..layers import export_form
from ..profiles.counting import count_macs
from .artifact import Artifact, file_bytes
from .coreml import inspect_mlpackage, torch_to_coreml, verify
from .formats import Format
from .job import ExportJob


def export_coreml(job: ExportJob, formats: tuple[Format, ...]) -> list[Artifact]:
    (fmt,) = formats
    path = job.out_dir / fmt.suffix
    example, ref = job.example, job.reference
    desc = {"description": f"{job.name}, pruned by autoprune-edge",
            "input": f"NCHW {list(example.shape)} float32, pixels in [0, 1] normalised with mean {job.mean} "
                     f"std {job.std}",
            "output": f"{ref.shape[-1]} class logits", "mean": json.dumps(job.mean), "std": json.dumps(job.std)}
    with progress.task("convert to Core ML (mlprogram, fp16) with coremltools", total=None):
        torch_to_coreml(job.model, example, path, description=desc, labels=job.labels)
    info = inspect_mlpackage(path)
    with export_form():  # the MACs of the model as converted (ChannelScatter becomes a 1x1 convolution)
        macs = count_macs(job.model, example).macs
    problems = verify(info, input_shape=list(example.shape), output_shape=[1, *ref.shape[1:]], macs=macs)
    return [Artifact(fmt.name, path.name, file_bytes(path), parity=None, parity_ok=None, macs_counted=info.macs,
                     precision=fmt.precision, failures=problems, coreml=info.to_dict(), verified_by=fmt.verifier)]
