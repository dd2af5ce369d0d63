"""Export and conversion: torch -> ONNX (onnx_export), ONNX -> TFLite via onnx2tf in a subprocess (tflite),
running .tflite with LiteRT (litert), reading the .tflite graph (tflite_graph) and output parity (parity).

Submodules are imported on demand so that litert/tflite_graph work without torch (e.g. on a Raspberry Pi).
"""
