"""Helpers shared by the fused-op definitions: type rules and opset-aware reductions."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from compiler.builder import OpBuilder
from compiler.ir import Node, TensorType, Value, ValueType


def same_as_first_input(node: Node) -> Sequence[ValueType | None]:
    """Type rule of the elementwise/normalization ops: Y has X's dtype and shape."""
    source = node.inputs[0].type
    return [TensorType(source.dtype, source.shape) if isinstance(source, TensorType) else None]


def constant_like(op: OpBuilder, x: Value, number: float) -> Value:
    """A scalar initializer of x's element type (float32 when x's type is unknown)."""
    dtype = x.dtype.numpy if x.dtype is not None and x.dtype.numpy.kind == "f" else np.float32
    return op.const(np.asarray(number, dtype=dtype))


def trailing_axes(node: Node, x: Value) -> list[int]:
    """The axes from the op's `axis` attribute to the last one (needs the rank of x)."""
    shape = x.shape
    if shape is None:
        from compiler.errors import UnsupportedError

        raise UnsupportedError(f"{node.op_type} {node.name!r}: the rank of its input is unknown, so it cannot be decomposed")
    rank = len(shape)
    axis = node.attr("axis", -1)
    return list(range(axis % rank, rank))


def reduce_mean(op: OpBuilder, x: Value, axes: list[int]) -> Value:
    """ReduceMean keeping dims, with axes as an attribute (opset < 18) or an input (>= 18)."""
    if op.graph.opset >= 18:
        return op.ReduceMean(x, np.asarray(axes, np.int64), keepdims=1)
    return op.ReduceMean(x, axes=axes, keepdims=1)


def numpy_axes(x: np.ndarray, axis: int) -> tuple[int, ...]:
    return tuple(range(axis % x.ndim, x.ndim))
