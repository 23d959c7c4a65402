"""ai.graphkiln::FakeQuantize(x, scale, zero_point; axis): QuantizeLinear then DequantizeLinear in
one op, the form training sees (the JAX lowering passes gradients straight through). Its
decomposition is the standard Q/DQ pair, so graphs holding it still export as plain ONNX."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from compiler.builder import OpBuilder
from compiler.custom_ops import GRAPHKILN_DOMAIN, CustomOp, register_custom_op
from compiler.ir import Node, TensorType, Value, ValueType

OP_TYPE = "FakeQuantize"


def _infer(node: Node) -> Sequence[ValueType | None]:
    source = node.inputs[0].type
    return [TensorType(source.dtype, source.shape) if isinstance(source, TensorType) else None]


def _decompose(op: OpBuilder, node: Node) -> Sequence[Value]:
    x, scale, zero_point = node.inputs[:3]
    axis = node.attr("axis", 1)
    quantized = op.QuantizeLinear(x, scale, zero_point, axis=axis)
    return [op.DequantizeLinear(quantized, scale, zero_point, axis=axis)]


def code_limits(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def broadcast_parameter(parameter: np.ndarray, rank: int, axis: int):
    """A per-channel (1-D) scale/zero point reshaped to broadcast along `axis` of a rank-`rank` x."""
    if getattr(parameter, "ndim", 0) != 1 or rank == 0:
        return parameter
    shape = [1] * rank
    shape[axis % rank] = -1
    return parameter.reshape(shape)


def _kernel(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> list[np.ndarray]:
    low, high = code_limits(zero_point.dtype)
    scale_b = broadcast_parameter(np.asarray(scale, np.float32), x.ndim, axis)
    zero_b = broadcast_parameter(np.asarray(zero_point, np.float32), x.ndim, axis)
    codes = np.clip(np.rint(x / scale_b) + zero_b, low, high)
    return [((codes - zero_b) * scale_b).astype(x.dtype)]


FAKE_QUANTIZE = register_custom_op(CustomOp(
    OP_TYPE, _infer, _decompose, _kernel, domain=GRAPHKILN_DOMAIN,
    doc="QuantizeLinear followed by DequantizeLinear with the same scale and zero point",
    attributes={"axis": "channel axis of per-channel parameters (default 1)"},
))
