"""The per-layer error report of quantization: SQNR and max abs error of every quantized tensor
against fp32 (weights directly, activations on the calibration data), for report.json."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.pass_infra import PassContext

from .calibration import observe
from .numerics import INT8_RANGE, UINT8_RANGE, ErrorAccumulator, activation_parameters, dequantize, fake_quantize, quantize

SQNR_CAP_DB = 200.0  # exact reconstructions are reported as this (JSON has no infinity)


def _finite(value: float) -> float:
    if math.isnan(value):
        return 0.0
    return float(max(-SQNR_CAP_DB, min(SQNR_CAP_DB, value)))


def _listed(array: np.ndarray | float | int) -> Any:
    array = np.asarray(array)
    return array.item() if array.ndim == 0 else array.tolist()


class QuantizationReport:
    """Collects the "quantization" section: mode, profile, calibration and one entry per tensor."""

    def __init__(self, mode: str, profile: str, calibration: dict[str, Any] | None):
        self.mode = mode
        self.profile = profile
        self.calibration = calibration
        self.layers: list[dict[str, Any]] = []

    def add_activation(self, node: Node, tensor: str, parameters: tuple, errors: ErrorAccumulator | None) -> None:
        scale, zero_point = parameters[0], parameters[1]
        self.layers.append({
            "node": node.name, "op": node.op_type, "tensor": tensor, "kind": "activation",
            "scale": float(scale), "zero_point": int(zero_point),
            "sqnr_db": _finite(errors.sqnr_db) if errors else None,
            "max_abs_error": errors.max_abs_error if errors else None,
        })

    def add_weight(self, node: Node, weight: Value, scales: np.ndarray, axis: int, *, original: np.ndarray | None = None,
                   zero_points: np.ndarray | None = None, restored: np.ndarray | None = None) -> None:
        """One weight entry; `original` is the float array when `weight` now holds codes."""
        original = (weight.const_value.numpy() if original is None else original).astype(np.float32)
        if restored is None:
            shape = [1] * original.ndim
            shape[axis] = -1
            restored = fake_quantize(original, np.asarray(scales).reshape(shape), 0, (-127, 127))
        errors = ErrorAccumulator()
        errors.update(original, restored)
        self.layers.append({
            "node": node.name, "op": node.op_type, "tensor": weight.name, "kind": "weight",
            "scale": _listed(np.asarray(scales, dtype=np.float32)),
            "zero_point": _listed(np.zeros(np.asarray(scales).shape, dtype=np.int64) if zero_points is None else zero_points),
            "sqnr_db": _finite(errors.sqnr_db), "max_abs_error": errors.max_abs_error,
        })

    def to_json(self) -> dict[str, Any]:
        weights = [l["sqnr_db"] for l in self.layers if l["kind"] == "weight"]
        activations = [l["sqnr_db"] for l in self.layers if l["kind"] == "activation" and l["sqnr_db"] is not None]
        return {
            "mode": self.mode, "profile": self.profile, "calibration": self.calibration, "layers": self.layers,
            "summary": {
                "tensors": len(self.layers),
                "min_weight_sqnr_db": min(weights) if weights else None,
                "min_activation_sqnr_db": min(activations) if activations else None,
            },
        }


def activation_errors(graph: Graph, ranges: dict[str, tuple[float, float]], signed: bool, ctx: PassContext) -> dict[str, ErrorAccumulator]:
    """Fake-quantize each calibrated activation with its final parameters and measure the error
    against fp32 over the calibration data (a second streamed pass)."""
    parameters = {name: activation_parameters(low, high, signed) for name, (low, high) in ranges.items()}
    limits = INT8_RANGE if signed else UINT8_RANGE
    errors = {name: ErrorAccumulator() for name in ranges}
    for tensors, _ in observe(graph, list(ranges), ctx.option("calibration"), batch_size=ctx.option("calibration_batch_size", 32),
                              max_samples=ctx.option("calibration_samples")):
        for name, array in tensors.items():
            scale, zero_point = parameters[name]
            errors[name].update(array, dequantize(quantize(array, scale, zero_point, limits), scale, zero_point))
    return errors
