"""Execution of quantized graphs on the JAX backend: ai.graphkiln::FakeQuantize (simulated
quantization, straight-through gradient for training) and ai.graphkiln::Int8Conv / Int8Gemm /
Int8MatMul (real int8 x int8 dot/conv with int32 accumulation, then rescaled to float)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from compiler.custom_ops import GRAPHKILN_DOMAIN

from .registry import lowering


def _limits(zero_point: Any) -> tuple[int, int]:
    info = np.iinfo(np.dtype(zero_point.dtype))
    return int(info.min), int(info.max)


def _broadcast(parameter: Any, rank: int, axis: int) -> Any:
    if getattr(parameter, "ndim", 0) != 1 or rank == 0:
        return parameter
    shape = [1] * rank
    shape[axis % rank] = -1
    return jnp.reshape(parameter, shape)


def fake_quantize(x: Any, scale: Any, zero_point: Any, axis: int = 1) -> Any:
    """round(x / scale) + zp saturated, dequantized; the gradient w.r.t. x passes straight through."""
    low, high = _limits(zero_point)
    rank = jnp.ndim(x)
    scale_b = _broadcast(jnp.asarray(scale, jnp.float32), rank, axis)
    zero_b = _broadcast(jnp.asarray(zero_point).astype(jnp.float32), rank, axis)
    codes = jnp.clip(jnp.round(x / scale_b) + zero_b, low, high)
    restored = ((codes - zero_b) * scale_b).astype(x.dtype)
    return x + lax.stop_gradient(restored - x)


@lowering("FakeQuantize", domain=GRAPHKILN_DOMAIN)
def _fake_quantize(ctx, x, scale, zero_point, axis: int = 1):
    return fake_quantize(x, scale, zero_point, axis)


# ---- real int8: int8 x int8 products accumulated in int32 ----------------------------------

def quantize_int8(x: Any, scale: Any) -> Any:
    """Symmetric per-tensor QuantizeLinear to int8 codes."""
    return jnp.clip(jnp.round(x / jnp.asarray(scale, jnp.float32)), -128, 127).astype(jnp.int8)


def _rescale(accumulator: Any, x_scale: Any, w_scale: Any, channel_axis: int, bias: Any) -> Any:
    """int32 accumulator (+ int32 bias) -> float32 output (+ float bias)."""
    rank = accumulator.ndim
    if bias is not None and jnp.issubdtype(jnp.asarray(bias).dtype, jnp.integer):
        accumulator = accumulator + _broadcast(jnp.asarray(bias, jnp.int32), rank, channel_axis)
        bias = None
    scale = jnp.asarray(x_scale, jnp.float32) * jnp.asarray(w_scale, jnp.float32)
    y = accumulator.astype(jnp.float32) * _broadcast(jnp.reshape(scale, (-1,)) if jnp.ndim(scale) else scale, rank, channel_axis)
    if bias is not None:
        y = y + _broadcast(jnp.asarray(bias, jnp.float32), rank, channel_axis)
    return y


@lowering("Int8MatMul", domain=GRAPHKILN_DOMAIN)
def _int8_matmul(ctx, x, x_scale, x_zero, weight, w_scale, bias=None, weight_axis: int = 1):
    codes = quantize_int8(x, x_scale)
    accumulator = lax.dot_general(codes, jnp.asarray(weight, jnp.int8), (((codes.ndim - 1,), (0,)), ((), ())),
                                  preferred_element_type=jnp.int32)
    return _rescale(accumulator, x_scale, w_scale, -1, bias)


@lowering("Int8Gemm", domain=GRAPHKILN_DOMAIN)
def _int8_gemm(ctx, x, x_scale, x_zero, weight, w_scale, bias=None, weight_axis: int = 1, transB: int = 0, **_):
    codes = quantize_int8(x, x_scale)
    contract = 1 if transB else 0
    accumulator = lax.dot_general(codes, jnp.asarray(weight, jnp.int8), (((1,), (contract,)), ((), ())),
                                  preferred_element_type=jnp.int32)
    return _rescale(accumulator, x_scale, w_scale, -1, bias)


@lowering("Int8Conv", domain=GRAPHKILN_DOMAIN)
def _int8_conv(ctx, x, x_scale, x_zero, weight, w_scale, bias=None, weight_axis: int = 0, auto_pad: str = "NOTSET",
               dilations=None, group: int = 1, kernel_shape=None, pads=None, strides=None):
    from .ops._helpers import auto_pad_padding

    weight = jnp.asarray(weight, jnp.int8)
    kernel = list(kernel_shape or weight.shape[2:])
    rank = len(kernel)
    strides = list(strides or [1] * rank)
    dilations = list(dilations or [1] * rank)
    padding = auto_pad_padding(auto_pad, pads, x.shape[2:], kernel, strides, dilations)
    accumulator = lax.conv_general_dilated(quantize_int8(x, x_scale), weight, strides, padding, rhs_dilation=dilations,
                                           feature_group_count=group, preferred_element_type=jnp.int32)
    return _rescale(accumulator, x_scale, w_scale, 1, bias)


# ---- QuantizeLinear / DequantizeLinear (simulated), unless the op tables already lower them ------

def _expand(parameter: Any, x: Any, axis: int, block_size: int) -> Any:
    """A scale or zero point shaped to broadcast against x: per-tensor, per-axis or per-block."""
    parameter = jnp.asarray(parameter)
    if parameter.ndim == 0:
        return parameter
    axis = axis % jnp.ndim(x)
    if block_size:
        repeated = jnp.repeat(parameter, block_size, axis=axis)
        return lax.slice_in_dim(repeated, 0, x.shape[axis], axis=axis)
    return _broadcast(parameter, jnp.ndim(x), axis)


def _quantize_linear(ctx, x, y_scale, y_zero_point=None, axis: int = 1, block_size: int = 0, output_dtype: int = 0,
                     saturate: int = 1, precision: int = 0):
    target = np.dtype(y_zero_point.dtype) if y_zero_point is not None else (ctx.output_dtype(0) or np.dtype(np.uint8))
    info = np.iinfo(target)
    scale = _expand(y_scale, x, axis, block_size).astype(jnp.float32)
    zero = 0.0 if y_zero_point is None else _expand(y_zero_point, x, axis, block_size).astype(jnp.float32)
    codes = jnp.clip(jnp.round(jnp.asarray(x, jnp.float32) / scale) + zero, int(info.min), int(info.max))
    return codes.astype(target)


def _dequantize_linear(ctx, x, x_scale, x_zero_point=None, axis: int = 1, block_size: int = 0, output_dtype: int = 0):
    x = jnp.asarray(x)
    scale = _expand(x_scale, x, axis, block_size)
    values = x.astype(jnp.float32)
    if x_zero_point is not None:
        values = values - _expand(x_zero_point, x, axis, block_size).astype(jnp.float32)
    return (values * scale.astype(jnp.float32)).astype(scale.dtype)


def _register_fallbacks() -> None:
    from .registry import has_lowering

    if not has_lowering("", "QuantizeLinear"):
        lowering("QuantizeLinear", since=10)(_quantize_linear)
    if not has_lowering("", "DequantizeLinear"):
        lowering("DequantizeLinear", since=10)(_dequantize_linear)


_register_fallbacks()
