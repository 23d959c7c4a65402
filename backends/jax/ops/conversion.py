"""Type conversion and tensor creation: Cast, CastLike, BitCast, Constant, ConstantOfShape,
EyeLike, Range. Static inputs (including symbolic dims) stay numpy at trace time."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

from ..registry import lowering, static_kernel
from ._helpers import all_static, lowering_and_static, numpy_dtype, static_ints

_SATURATING = {np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2,
                                     ml_dtypes.float8_e5m2fnuz)}

SMALL_STATIC_ELEMENTS = 1024
_SUB_BYTE_INTEGERS = {"int4", "uint4", "int2", "uint2"}


def cast_to(x: Any, dtype: np.dtype, saturate: int = 1) -> Any:
    """x converted to `dtype` with ONNX Cast semantics (float8 saturation, object dims kept)."""
    dtype = np.dtype(dtype)
    static = all_static(x)
    xp = np if static else jnp
    x = np.asarray(x) if static else x
    if static and x.dtype == object:
        if np.issubdtype(dtype, np.integer):
            return x
        raise NotImplementedError("symbolic dims cast to a non-integer type")
    if x.dtype == dtype:
        return x
    if dtype in _SATURATING and saturate and np.issubdtype(x.dtype, np.floating):
        limit = float(ml_dtypes.finfo(dtype).max)
        x = xp.where(xp.isnan(x), x, xp.clip(x.astype(np.float32), -limit, limit))
    if dtype.itemsize == 1 and dtype.name in _SUB_BYTE_INTEGERS and np.issubdtype(x.dtype, np.floating):
        x = _float_to_sub_byte_integer(xp, x, dtype)
    if dtype == np.bool_:
        return x != 0
    return x.astype(dtype)


def _out_of_range_sub_byte_becomes_zero() -> bool:
    """Whether the installed ml_dtypes (which onnx's reference and test data use) maps an
    out-of-range float to 0 when casting to int4 (ml_dtypes >= 0.7) rather than wrapping it."""
    with np.errstate(invalid="ignore", over="ignore"):
        return int(np.array([-9.0], np.float32).astype(ml_dtypes.int4)[0]) == 0


_SUB_BYTE_OOR_IS_ZERO = _out_of_range_sub_byte_becomes_zero()


def _float_to_sub_byte_integer(xp: Any, x: Any, dtype: np.dtype) -> Any:
    """float -> int4/uint4/int2/uint2 as int32 codes. ONNX leaves out-of-range values undefined;
    we follow ml_dtypes, which onnx.reference uses: truncate and zero what does not fit (0.7+),
    or round and wrap (older releases)."""
    x = x.astype(np.float32)
    if not _SUB_BYTE_OOR_IS_ZERO:
        return xp.round(x).astype(np.int32)
    info = ml_dtypes.iinfo(dtype)
    truncated = xp.trunc(xp.where(xp.isfinite(x), x, 0.0))
    fits = (truncated >= info.min) & (truncated <= info.max)
    return xp.where(fits, truncated, 0.0).astype(np.int32)


def to_e8m0(x: Any, saturate: int, round_mode: str) -> Any:
    """float -> float8_e8m0fnu (a bare power-of-two exponent), rounding the mantissa as ONNX asks."""
    xp = np if all_static(x) else jnp
    bits = xp.asarray(x).astype(np.float32).view(np.uint32) if xp is np else lax.bitcast_convert_type(
        jnp.asarray(x).astype(np.float32), np.uint32)
    exponent = (bits >> 23) & 0xFF
    mantissa = bits & 0x7FFFFF
    if round_mode == "up":
        exponent = exponent + ((mantissa != 0) & (exponent < 254))
    elif round_mode == "nearest":
        exponent = exponent + ((mantissa >= 0x400000) & (exponent < 254))
    is_nan = (exponent == 255) & (mantissa != 0)
    if saturate:
        exponent = xp.where(is_nan, 255, xp.minimum(exponent, 254))
    byte = exponent.astype(np.uint8)
    dtype = np.dtype(ml_dtypes.float8_e8m0fnu)
    return byte.view(dtype) if xp is np else lax.bitcast_convert_type(byte, dtype)


@lowering_and_static("Cast")
def cast(ctx, x, to, saturate=1, round_mode="up"):
    dtype = numpy_dtype(to)
    if dtype == np.dtype(ml_dtypes.float8_e8m0fnu) and np.dtype(np.asarray(x).dtype if all_static(x) else x.dtype).kind == "f":
        return to_e8m0(x, saturate, round_mode)
    return cast_to(x, dtype, saturate)


@lowering_and_static("CastLike")
def cast_like(ctx, x, target, saturate=1, round_mode="up"):
    return cast_to(x, np.asarray(target).dtype if all_static(target) else target.dtype, saturate)


@lowering("BitCast")
def bit_cast(ctx, x, to):
    dtype = numpy_dtype(to)
    if np.dtype(dtype).itemsize != jnp.asarray(x).dtype.itemsize:
        raise ctx.fail(f"bit cast between types of different sizes ({jnp.asarray(x).dtype} -> {dtype})")
    x = jnp.asarray(x)
    if dtype == np.bool_:
        return lax.bitcast_convert_type(x, np.uint8) != 0
    if x.dtype == jnp.bool_:
        x = x.astype(np.uint8)
    return lax.bitcast_convert_type(x, dtype)


def _constant_value(ctx, attrs: dict[str, Any]) -> np.ndarray:
    if "value" in attrs:
        return np.asarray(attrs["value"])
    if "value_float" in attrs:
        return np.asarray(attrs["value_float"], np.float32)
    if "value_floats" in attrs:
        return np.asarray(attrs["value_floats"], np.float32)
    if "value_int" in attrs:
        return np.asarray(attrs["value_int"], np.int64)
    if "value_ints" in attrs:
        return np.asarray(attrs["value_ints"], np.int64)
    if "value_string" in attrs:
        return np.asarray(attrs["value_string"], object)
    if "value_strings" in attrs:
        return np.asarray(attrs["value_strings"], object)
    raise ctx.fail(f"Constant without a supported value attribute ({', '.join(attrs) or 'none'})")


@lowering_and_static("Constant")
def constant(ctx, **attrs):
    return _constant_value(ctx, attrs)


@lowering("ConstantOfShape")
def constant_of_shape(ctx, shape, value=None):
    fill = np.asarray(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    dims = static_ints(shape)
    if all(isinstance(d, int) for d in dims) and int(np.prod(dims)) <= SMALL_STATIC_ELEMENTS:
        return np.full(dims, fill[0], dtype=fill.dtype)  # stays static: it may feed a shape chain
    return jnp.full(dims, fill[0], dtype=fill.dtype)


@static_kernel("ConstantOfShape")
def constant_of_shape_static(ctx, shape, value=None):
    fill = np.asarray(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    dims = static_ints(shape)
    if not all(isinstance(d, int) for d in dims):
        raise NotImplementedError("symbolic shape")
    return np.full(dims, fill[0], dtype=fill.dtype)


@lowering("EyeLike")
def eye_like(ctx, x, dtype=None, k=0):
    target = numpy_dtype(dtype) if dtype is not None else jnp.asarray(x).dtype
    rows, columns = x.shape
    return jnp.eye(rows, columns, k=k, dtype=target)


@lowering("Range")
def range_(ctx, start, limit, delta):
    if not all_static(start, limit, delta):
        raise ctx.fail("start, limit and delta must be known while tracing (the output length depends on them)")
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if object in (start.dtype, limit.dtype, delta.dtype):
        if delta.dtype != object and int(delta) == 1 and start.dtype != object and int(start) == 0:
            return jnp.arange(limit.item(), dtype=np.int64)
        raise ctx.fail("Range over symbolic bounds other than 0..n step 1")
    return range_static(ctx, start, limit, delta)


@static_kernel("Range")
def range_static(ctx, start, limit, delta):
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if object in (start.dtype, limit.dtype, delta.dtype):
        raise NotImplementedError("Range over symbolic bounds")
    dtype = start.dtype
    count = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    return (start + np.arange(count, dtype=dtype) * delta).astype(dtype)
