"""Checks shared by the fusion rules: scalar constants, float tensors, trailing reduction axes."""

from __future__ import annotations

import numpy as np

from compiler.ir import Node, Value
from compiler.rewriter import fail


def scalar(value: Value | None) -> float | None:
    """The number a one-element constant holds, else None."""
    constant = None if value is None else value.constant()
    if constant is None or np.asarray(constant).size != 1:
        return None
    return float(np.asarray(constant).reshape(-1)[0])


def is_float(value: Value, node: Node):
    """True when value is a floating-point tensor, else a match failure naming node."""
    if value.dtype is None or value.dtype.numpy.kind != "f":
        return fail("the input is not a floating-point tensor", node)
    return True


def reduction_axes(node: Node) -> list[int] | None:
    """The axes a ReduceMean reads (attribute or constant input), or None when not constant."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        constant = node.inputs[1].constant()
        return None if constant is None else [int(a) for a in np.asarray(constant).reshape(-1)]
    axes = node.attr("axes")
    return None if axes is None else [int(a) for a in axes]


def last_axis_reduction(node: Node, x: Value):
    """True when `node` is a keepdims ReduceMean over the last axis of x only, else a failure."""
    axes = reduction_axes(node)
    rank = None if x.shape is None else len(x.shape)
    if axes is None or rank is None or [a % rank for a in axes] != [rank - 1]:
        return fail("the mean is not over the last axis alone", node)
    if node.attr("keepdims", 1) != 1:
        return fail("the mean drops the reduced axis", node)
    return True


def matches_last_dim(parameter: Value, x: Value, node: Node):
    """True when a scale/bias is a constant vector the size of x's last axis (or a scalar)."""
    shape = parameter.shape
    last = None if x.shape is None else x.shape[-1]
    if shape is None or not (len(shape) == 0 or (len(shape) == 1 and shape[0] == last)) or not isinstance(last, int):
        return fail("scale/bias is not a vector over the normalized axis", node)
    return True


def nan_guarded(op, x, zero):
    """Where(IsNaN(x), zero, x): torch's sdpa guard that turns the NaN of a row masked everywhere
    into zeros, as a pattern piece or a replacement."""
    return op.Where(op.IsNaN(x), zero, x)
