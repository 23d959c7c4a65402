"""Elementwise arithmetic, comparison, logic and bitwise ops (numpy broadcasting = ONNX
multidirectional broadcasting); static inputs are computed with numpy at trace time."""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import native_rows
from ._helpers import all_static, array_module, lowering_and_static


def _is_integer(value: Any) -> bool:
    return np.issubdtype(np.asarray(value).dtype if all_static(value) else value.dtype, np.integer)


def _is_object(*values: Any) -> bool:
    return any(isinstance(v, np.ndarray) and v.dtype == object for v in values)


def _result_dtype(a: Any, b: Any) -> Any:
    return np.asarray(a).dtype if all_static(a) else a.dtype


def _binary(op_type: str, numpy_function: Any, jax_function: Any, native: Any = None) -> None:
    """Register op_type: numpy on static inputs, else `native(ctx, a, b)` where it returns a result
    (a native CPU kernel), else jax_function."""
    def rule(ctx, a, b, **_attrs):
        if all_static(a, b):
            result = numpy_function(np.asarray(a), np.asarray(b))
            return result if _is_object(a, b) else np.asarray(result).astype(_result_dtype(a, b))
        if native is not None and (result := native(ctx, a, b)) is not None:
            return result
        return jax_function(jnp.asarray(a), jnp.asarray(b))

    lowering_and_static(op_type)(rule)


def _integer_division(xp: Any, a: Any, b: Any) -> Any:
    """C-style truncating division for integers (ONNX Div on ints)."""
    if xp is jnp:
        return lax.div(*jnp.broadcast_arrays(a, b))
    if a.dtype == object or b.dtype == object:
        return a // b
    quotient = a // b
    return quotient + ((quotient < 0) & (quotient * b != a))


def _divide(a: Any, b: Any) -> Any:
    xp = np if all_static(a, b) else jnp
    if _is_integer(a) or (xp is np and np.asarray(a).dtype == object):
        return _integer_division(xp, xp.asarray(a), xp.asarray(b))
    return xp.divide(a, b)


_binary("Add", np.add, jnp.add)
_binary("Sub", np.subtract, jnp.subtract)
_binary("Mul", np.multiply, jnp.multiply, native_rows.scaled_rows)
_binary("Div", lambda a, b: _divide(a, b), lambda a, b: _divide(a, b))
_binary("And", np.logical_and, jnp.logical_and)
_binary("Or", np.logical_or, jnp.logical_or)
_binary("Xor", np.logical_xor, jnp.logical_xor)
_binary("BitwiseAnd", np.bitwise_and, jnp.bitwise_and)
_binary("BitwiseOr", np.bitwise_or, jnp.bitwise_or)
_binary("BitwiseXor", np.bitwise_xor, jnp.bitwise_xor)


def _comparison(op_type: str, numpy_function: Any, jax_function: Any) -> None:
    def rule(ctx, a, b, **_attrs):
        if all_static(a, b):
            return np.asarray(numpy_function(np.asarray(a), np.asarray(b))).astype(bool)
        return jax_function(jnp.asarray(a), jnp.asarray(b))

    lowering_and_static(op_type)(rule)


_comparison("Equal", np.equal, jnp.equal)
_comparison("Less", np.less, jnp.less)
_comparison("Greater", np.greater, jnp.greater)
_comparison("LessOrEqual", np.less_equal, jnp.less_equal)
_comparison("GreaterOrEqual", np.greater_equal, jnp.greater_equal)


@lowering_and_static("Not")
def not_(ctx, x):
    return np.logical_not(x) if all_static(x) else jnp.logical_not(x)


@lowering_and_static("BitwiseNot")
def bitwise_not(ctx, x):
    return np.invert(x) if all_static(x) else jnp.invert(x)


@lowering_and_static("Mod")
def mod(ctx, a, b, fmod=0):
    xp = array_module(a, b)
    a, b = xp.asarray(a), xp.asarray(b)
    if fmod:
        return xp.fmod(a, b)
    if _is_object(a, b):
        return a % b
    if xp is np and np.issubdtype(a.dtype, np.integer):
        with np.errstate(divide="ignore"):
            return np.mod(a, b)
    return xp.mod(a, b)


@lowering_and_static("Pow")
def power(ctx, base, exponent):
    xp = array_module(base, exponent)
    base, exponent = xp.asarray(base), xp.asarray(exponent)
    if base.dtype == exponent.dtype:
        return xp.power(base, exponent)
    if np.issubdtype(base.dtype, np.integer) and np.issubdtype(exponent.dtype, np.integer):
        return xp.power(base, exponent.astype(base.dtype))
    wide = np.float64 if base.dtype == np.float64 or exponent.dtype == np.float64 else np.float32
    return xp.power(base.astype(wide), exponent.astype(wide)).astype(base.dtype)


@lowering_and_static("BitShift")
def bit_shift(ctx, x, shift, direction="LEFT"):
    xp = array_module(x, shift)
    x, shift = xp.asarray(x), xp.asarray(shift)
    if direction == "LEFT":
        return xp.left_shift(x, shift.astype(x.dtype))
    return xp.right_shift(x, shift.astype(x.dtype))


def _variadic(op_type: str, numpy_function: Any, jax_function: Any, mean: bool = False) -> None:
    def rule(ctx, *values):
        static = all_static(*values)
        function = numpy_function if static else jax_function
        result = functools.reduce(function, values)
        if mean:
            result = result / len(values)
        return np.asarray(result).astype(np.asarray(values[0]).dtype) if static and not _is_object(*values) else result

    lowering_and_static(op_type)(rule)


_variadic("Sum", np.add, jnp.add)
_variadic("Mean", np.add, jnp.add, mean=True)
_variadic("Max", np.maximum, jnp.maximum)
_variadic("Min", np.minimum, jnp.minimum)


@lowering_and_static("Where")
def where(ctx, condition, a, b):
    if all_static(condition, a, b):
        return np.where(np.asarray(condition).astype(bool), a, b)
    return jnp.where(condition, a, b)


@lowering_and_static("Clip")
def clip(ctx, x, low=None, high=None, min=None, max=None):  # noqa: A002  (ONNX attribute names)
    low = min if low is None else low
    high = max if high is None else high
    xp = array_module(x, low, high)
    x = xp.asarray(x)
    if low is not None:
        x = xp.maximum(x, xp.asarray(low).astype(x.dtype))
    if high is not None:
        x = xp.minimum(x, xp.asarray(high).astype(x.dtype))
    return x
