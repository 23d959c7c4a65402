"""Helpers shared by the lowering rules: numpy-or-jax dispatch for values known at trace time,
ONNX dtype mapping, axis normalisation and convolution/pool padding (auto_pad)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from onnx import helper

from ..registry import is_static, lowering, static_ints, static_kernel

__all__ = [
    "all_static", "array_module", "auto_pad_padding", "lowering_and_static", "normalize_axes",
    "normalize_axis", "numpy_dtype", "optional_ints", "static_ints", "is_static",
]


def all_static(*values: Any) -> bool:
    """True when every non-None value is known at trace time."""
    return all(v is None or is_static(v) for v in values)


def array_module(*values: Any) -> Any:
    """numpy when every value is static (so shape arithmetic stays at trace time), else jax.numpy."""
    return np if all_static(*values) else jnp


def lowering_and_static(op_type: str, *, since: int = 1, until: int | None = None, domain: str = ""):
    """Register one function as both the JAX rule and the trace-time kernel of `op_type`; it picks
    numpy or jax.numpy with array_module()."""

    def register(function):
        lowering(op_type, domain=domain, since=since, until=until)(function)
        static_kernel(op_type, domain=domain)(function)
        return function

    return register


def numpy_dtype(onnx_type: int) -> np.dtype:
    """The numpy (or ml_dtypes) dtype of an ONNX TensorProto element type."""
    return np.dtype(helper.tensor_dtype_to_np_dtype(int(onnx_type)))


def normalize_axis(axis: int, rank: int) -> int:
    """An ONNX axis in [-rank, rank) as a non-negative one."""
    axis = int(axis)
    return axis + rank if axis < 0 else axis


def normalize_axes(axes: Sequence[int] | None, rank: int) -> tuple[int, ...]:
    """ONNX axes (negatives allowed) as sorted non-negative ints."""
    return tuple(sorted(normalize_axis(a, rank) for a in (axes or ())))


def optional_ints(value: Any) -> tuple | None:
    """A static 1-D input or attribute as a tuple of ints, or None when absent."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return static_ints(value)


def auto_pad_padding(
    auto_pad: str,
    pads: Sequence[int] | None,
    input_spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool = False,
) -> list[tuple[int, int]]:
    """(low, high) padding per spatial axis for ONNX Conv/Pool attributes (NOTSET, VALID,
    SAME_UPPER, SAME_LOWER); ceil_mode adds high padding so the last partial window counts."""
    rank = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        padding = []
        for size, k, s, d in zip(input_spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            padding.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        return padding
    if auto_pad == "VALID":
        return [(0, 0)] * rank
    pads = list(pads) if pads is not None else [0] * (2 * rank)
    padding = [(pads[i], pads[i + rank]) for i in range(rank)]
    if ceil_mode:
        padding = [_ceil_mode_padding(size, k, s, d, low, high)
                   for (low, high), size, k, s, d in zip(padding, input_spatial, kernel, strides, dilations)]
    return padding


def _ceil_mode_padding(size: int, kernel: int, stride: int, dilation: int, low: int, high: int) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    span = size + low + high - effective
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= size + low:  # the last window must start inside the input or left padding
        out -= 1
    needed = (out - 1) * stride + effective - (size + low)
    return low, max(high, needed)
