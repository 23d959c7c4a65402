"""Compression by quantization: calibration, Q/DQ insertion (int8, tensorrt profile), int4
block-wise weight-only, and the per-layer error report."""

from . import fake_quant, int8_kernels, qdq_insertion  # noqa: F401  (custom ops, `quantize`, `int8_kernels`)
