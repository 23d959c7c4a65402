"""The ONNX backend: standard ONNX out, run by onnxruntime."""

from . import backend  # noqa: F401
