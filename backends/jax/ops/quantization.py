"""Quantization ops with ONNX's fake-quant semantics: QuantizeLinear / DequantizeLinear (per-tensor,
per-axis, per-block; int8/uint8/int16/int4/int2 and float8/float4 targets), DynamicQuantizeLinear,
QLinearMatMul, QLinearConv, and the exact int32-accumulating MatMulInteger / ConvInteger."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

from ..registry import lowering
from ._helpers import auto_pad_padding, numpy_dtype


def _expand(parameter: Any, x: Any, axis: int, block_size: int) -> Any:
    """A scale or zero point shaped to broadcast against x: per-tensor, per-axis or per-block."""
    parameter = jnp.asarray(parameter)
    rank = jnp.ndim(x)
    if parameter.ndim == 0 or (parameter.ndim == 1 and parameter.shape[0] == 1 and not block_size):
        return parameter.reshape(())
    axis = axis % rank
    if block_size:
        repeated = jnp.repeat(parameter, block_size, axis=axis)
        return lax.slice_in_dim(repeated, 0, x.shape[axis], axis=axis)
    shape = [1] * rank
    shape[axis] = parameter.shape[0]
    return parameter.reshape(shape)


def _target_dtype(ctx, zero_point: Any, output_dtype: int) -> np.dtype:
    if zero_point is not None:
        return np.dtype(zero_point.dtype)
    if output_dtype:
        return numpy_dtype(output_dtype)
    return ctx.output_dtype(0) or np.dtype(np.uint8)


def _is_integer(dtype: np.dtype) -> bool:
    try:
        ml_dtypes.iinfo(dtype)
        return True
    except (ValueError, TypeError):
        return False


def _compute_dtype(*values: Any) -> Any:
    dtype = jnp.result_type(*[jnp.asarray(v).dtype for v in values if v is not None])
    return dtype if jnp.issubdtype(dtype, jnp.floating) and jnp.dtype(dtype).itemsize >= 4 else jnp.float32


def quantize(x: Any, scale: Any, zero_point: Any, target: np.dtype, saturate: bool = True) -> Any:
    """saturate(round(x / scale) + zero_point) in the target type (no rounding for float targets)."""
    dtype = _compute_dtype(x, scale)
    scaled = jnp.asarray(x, dtype) / jnp.asarray(scale, dtype)
    zero = 0 if zero_point is None else jnp.asarray(zero_point).astype(dtype)
    if _is_integer(target):
        info = ml_dtypes.iinfo(target)
        return jnp.clip(jnp.round(scaled) + zero, int(info.min), int(info.max)).astype(target)
    values = scaled + zero
    if saturate:
        limit = float(ml_dtypes.finfo(target).max)
        values = jnp.where(jnp.isnan(values), values, jnp.clip(values, -limit, limit))
    return values.astype(target)


def dequantize(x: Any, scale: Any, zero_point: Any) -> Any:
    """(x - zero_point) * scale in float32 (or the scale's wider type)."""
    dtype = _compute_dtype(scale)
    values = jnp.asarray(x).astype(dtype)
    if zero_point is not None:
        values = values - jnp.asarray(zero_point).astype(dtype)
    return values * jnp.asarray(scale).astype(dtype)


@lowering("QuantizeLinear", since=10)
def quantize_linear(ctx, x, y_scale, y_zero_point=None, axis: int = 1, block_size: int = 0, output_dtype: int = 0,
                    saturate: int = 1, precision: int = 0):
    target = _target_dtype(ctx, y_zero_point, output_dtype)
    scale = _expand(y_scale, x, axis, block_size)
    zero = None if y_zero_point is None else _expand(y_zero_point, x, axis, block_size)
    return quantize(x, scale, zero, target, bool(saturate))


@lowering("DequantizeLinear", since=10)
def dequantize_linear(ctx, x, x_scale, x_zero_point=None, axis: int = 1, block_size: int = 0, output_dtype: int = 0):
    scale = _expand(x_scale, x, axis, block_size)
    zero = None if x_zero_point is None else _expand(x_zero_point, x, axis, block_size)
    result = dequantize(x, scale, zero)
    wanted = numpy_dtype(output_dtype) if output_dtype else np.dtype(jnp.asarray(x_scale).dtype)
    return result.astype(wanted)


@lowering("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(ctx, x):
    """uint8 codes with a scale and zero point from the input's range (which always includes 0)."""
    x = jnp.asarray(x, jnp.float32)
    low = jnp.minimum(jnp.min(x), 0.0)
    high = jnp.maximum(jnp.max(x), 0.0)
    scale = (high - low) / 255.0
    zero_point = jnp.clip(jnp.round(-low / scale), 0, 255).astype(jnp.uint8)
    return quantize(x, scale, zero_point, np.dtype(np.uint8)), scale, zero_point


def _row_scale(scale: Any, rank: int) -> Any:
    """A per-row ([M]) scale or zero point of a matmul's left operand, broadcast over columns."""
    scale = jnp.asarray(scale)
    return scale.reshape(scale.shape + (1,)) if scale.ndim == 1 and scale.shape[0] > 1 and rank >= 2 else scale


@lowering("QLinearMatMul", since=10)
def qlinear_matmul(ctx, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    a_real = dequantize(a, _row_scale(a_scale, jnp.ndim(a)), _row_scale(a_zero_point, jnp.ndim(a)))
    b_real = dequantize(b, b_scale, b_zero_point)
    product = jnp.matmul(a_real, b_real, precision=lax.Precision.HIGHEST)
    return quantize(product, y_scale, y_zero_point, np.dtype(jnp.asarray(y_zero_point).dtype))


@lowering("MatMulInteger", since=10)
def matmul_integer(ctx, a, b, a_zero_point=None, b_zero_point=None):
    """Exact integer matmul: int32 accumulation of the zero-point-shifted operands."""
    a = jnp.asarray(a).astype(jnp.int32)
    b = jnp.asarray(b).astype(jnp.int32)
    if a_zero_point is not None:
        a = a - _row_scale(a_zero_point, a.ndim).astype(jnp.int32)
    if b_zero_point is not None:
        b = b - jnp.asarray(b_zero_point).astype(jnp.int32)
    return jnp.matmul(a, b, preferred_element_type=jnp.int32)


def _conv(x, w, accumulate, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
          strides=None):
    spatial = jnp.ndim(x) - 2
    kernel = list(kernel_shape or w.shape[2:])
    strides = list(strides or [1] * spatial)
    dilations = list(dilations or [1] * spatial)
    padding = auto_pad_padding(auto_pad, pads, x.shape[2:], kernel, strides, dilations)
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilations, feature_group_count=group,
                                    preferred_element_type=accumulate,
                                    precision=lax.Precision.HIGHEST if accumulate == jnp.float32 else None)


@lowering("ConvInteger", since=10)
def conv_integer(ctx, x, w, x_zero_point=None, w_zero_point=None, **attributes):
    x = jnp.asarray(x).astype(jnp.int32)
    w = jnp.asarray(w).astype(jnp.int32)
    if x_zero_point is not None:
        x = x - jnp.asarray(x_zero_point).astype(jnp.int32)
    if w_zero_point is not None:
        zero = jnp.asarray(w_zero_point).astype(jnp.int32)
        w = w - (zero.reshape((-1,) + (1,) * (w.ndim - 1)) if zero.ndim == 1 else zero)
    return _conv(x, w, jnp.int32, **attributes)


@lowering("QLinearConv", since=10)
def qlinear_conv(ctx, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None,
                 **attributes):
    w_rank = jnp.ndim(w)
    per_channel = (lambda v: jnp.asarray(v).reshape((-1,) + (1,) * (w_rank - 1))
                   if jnp.ndim(v) == 1 and jnp.shape(v)[0] > 1 else v)
    x_real = dequantize(x, x_scale, x_zero_point)
    w_real = dequantize(w, per_channel(w_scale), per_channel(w_zero_point))
    result = _conv(x_real, w_real, jnp.float32, **attributes)
    if B is not None:
        bias_scale = jnp.asarray(x_scale, jnp.float32) * jnp.asarray(w_scale, jnp.float32)
        bias = jnp.asarray(B).astype(jnp.float32) * bias_scale
        result = result + bias.reshape((-1,) + (1,) * (result.ndim - 2))
    return quantize(result, y_scale, y_zero_point, np.dtype(jnp.asarray(y_zero_point).dtype))
