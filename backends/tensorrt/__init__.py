"""The TensorRT backend: ONNX restricted to what TensorRT 10 parses, Q/DQ for explicit quantization,
shape profiles, and an engine build where tensorrt and a GPU exist."""

from . import backend  # noqa: F401
