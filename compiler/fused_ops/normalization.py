"""ai.graphkiln::LayerNormalization (ONNX-17 math, output Y only) and ::RMSNormalization
(ONNX-23 math) for models whose opset lacks them."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from compiler.builder import OpBuilder
from compiler.custom_ops import GRAPHKILN_DOMAIN, CustomOp, register_custom_op
from compiler.ir import DataType, Node, Value

from ._common import constant_like, numpy_axes, reduce_mean, same_as_first_input, trailing_axes


def _stash(op: OpBuilder, node: Node, x: Value) -> tuple[Value, bool]:
    """x in float32 when stash_type asks for it and x is narrower; returns (value, was_cast)."""
    if node.attr("stash_type", 1) == 1 and x.dtype is not None and x.dtype != DataType.FLOAT and x.dtype.numpy.kind == "f":
        return op.Cast(x, to=int(DataType.FLOAT)), True
    return x, False


def _decompose_layer_norm(op: OpBuilder, node: Node) -> Sequence[Value]:
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    epsilon = node.attr("epsilon", 1e-5)
    if op.graph.opset >= 17:
        return [op.LayerNormalization(x, scale, bias, axis=node.attr("axis", -1), epsilon=epsilon,
                                      stash_type=node.attr("stash_type", 1))]
    axes = trailing_axes(node, x)
    wide, cast = _stash(op, node, x)
    centered = op.Sub(wide, reduce_mean(op, wide, axes))
    variance = reduce_mean(op, op.Mul(centered, centered), axes)
    normalized = op.Div(centered, op.Sqrt(op.Add(variance, constant_like(op, wide, epsilon))))
    if cast:
        normalized = op.Cast(normalized, to=int(x.dtype))
    result = op.Mul(normalized, scale)
    return [op.Add(result, bias) if bias is not None else result]


def _decompose_rms_norm(op: OpBuilder, node: Node) -> Sequence[Value]:
    x, scale = node.inputs[0], node.inputs[1]
    epsilon = node.attr("epsilon", 1e-5)
    if op.graph.opset >= 23:
        return [op.RMSNormalization(x, scale, axis=node.attr("axis", -1), epsilon=epsilon)]
    axes = trailing_axes(node, x)
    wide, cast = _stash(op, node, x)
    mean_square = reduce_mean(op, op.Mul(wide, wide), axes)
    normalized = op.Div(wide, op.Sqrt(op.Add(mean_square, constant_like(op, wide, epsilon))))
    if cast:
        normalized = op.Cast(normalized, to=int(x.dtype))
    return [op.Mul(normalized, scale)]


def layer_norm_reference(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None, axis: int = -1,
                         epsilon: float = 1e-5, stash_type: int = 1) -> np.ndarray:
    """LayerNormalization computed in float64."""
    axes = numpy_axes(x, axis)
    wide = np.asarray(x, np.float64)
    centered = wide - wide.mean(axis=axes, keepdims=True)
    normalized = centered / np.sqrt((centered**2).mean(axis=axes, keepdims=True) + epsilon)
    result = normalized * scale + (0.0 if bias is None else bias)
    return result.astype(x.dtype)


def rms_norm_reference(x: np.ndarray, scale: np.ndarray, axis: int = -1, epsilon: float = 1e-5) -> np.ndarray:
    """RMSNormalization computed in float64."""
    wide = np.asarray(x, np.float64)
    mean_square = (wide**2).mean(axis=numpy_axes(x, axis), keepdims=True)
    return (wide / np.sqrt(mean_square + epsilon) * scale).astype(x.dtype)


def _layer_norm_kernel(x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1) -> list[np.ndarray]:
    return [layer_norm_reference(x, scale, bias, axis, epsilon, stash_type)]


def _rms_norm_kernel(x, scale, axis=-1, epsilon=1e-5) -> list[np.ndarray]:
    return [rms_norm_reference(x, scale, axis, epsilon)]


LAYER_NORMALIZATION = register_custom_op(CustomOp(
    "LayerNormalization", same_as_first_input, _decompose_layer_norm, _layer_norm_kernel, domain=GRAPHKILN_DOMAIN,
    doc="layer normalization over the axes >= axis, the math of ONNX LayerNormalization-17 (output Y only)",
    attributes={"axis": "first normalized axis (default -1)", "epsilon": "default 1e-5",
                "stash_type": "1 (default): compute in float32"},
))
RMS_NORMALIZATION = register_custom_op(CustomOp(
    "RMSNormalization", same_as_first_input, _decompose_rms_norm, _rms_norm_kernel, domain=GRAPHKILN_DOMAIN,
    doc="Y = X / sqrt(mean(X^2 over axes >= axis) + epsilon) * Scale, the math of ONNX RMSNormalization-23",
    attributes={"axis": "first normalized axis (default -1)", "epsilon": "default 1e-5"},
))
