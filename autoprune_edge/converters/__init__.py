"""Export and conversion. `formats` is the table of output formats (one row each: precision, file,
exporter, verifier, what it needs); `convert` runs one exporter per format (`export_onnx`,
`export_tflite`, `export_coreml`, all ``(ExportJob, formats) -> list[Artifact]``) and returns
`Artifact`s checked against torch (`parity`, `divergence`). Below them: torch -> ONNX (onnx_export),
ONNX -> TFLite via onnx2tf in a subprocess (tflite), running .tflite with LiteRT (litert), reading the
.tflite graph (tflite_graph), Core ML (coreml), Edge TPU readiness (edgetpu), embedded metadata
(tflite_metadata).

Submodules are imported on demand so that litert/tflite_graph/formats work without torch (e.g. on a
Raspberry Pi).
"""
