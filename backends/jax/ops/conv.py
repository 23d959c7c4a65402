"""Convolutions: Conv and ConvTranspose (any spatial rank, groups, dilations, auto_pad,
output_padding/output_shape) through precision.conv, so --precision bf16|fp16 applies."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from .. import precision
from ..conv_gemm import ConvKernel, output_shape, runs_natively
from ..conv_gemm import conv_gemm as native_conv_gemm
from ..depthwise_conv import depthwise_conv as native_depthwise_conv
from ..depthwise_conv import runs_natively as depthwise_runs_natively
from ..native_rewrites import CONV_GEMM, DEPTHWISE_CONV, NATIVE_DOMAIN
from ..panel_matmul import activate
from ..registry import LoweringContext, lowering
from ._helpers import auto_pad_padding


def _spatial_defaults(rank: int, strides, dilations) -> tuple[list[int], list[int]]:
    return list(strides or [1] * rank), list(dilations or [1] * rank)


def conv_nd(ctx: Any, x: Any, w: Any, bias: Any = None, *, auto_pad: str = "NOTSET", dilations=None,
            group: int = 1, kernel_shape=None, pads=None, strides=None) -> Any:
    """ONNX Conv: X [N, C, *S], W [M, C/group, *K], optional B [M]."""
    x, w = jnp.asarray(x), jnp.asarray(w)
    rank = x.ndim - 2
    kernel = list(kernel_shape or w.shape[2:])
    strides, dilations = _spatial_defaults(rank, strides, dilations)
    padding = auto_pad_padding(auto_pad, pads, x.shape[2:], kernel, strides, dilations)
    y = precision.conv(ctx, x, w, strides, padding, rhs_dilation=dilations, feature_group_count=group)
    if bias is not None:
        y = y + jnp.asarray(bias, y.dtype).reshape((1, -1) + (1,) * rank)
    return y


@lowering("Conv")
def conv(ctx: LoweringContext, x: Any, w: Any, bias: Any = None, **attrs: Any) -> Any:
    """ONNX Conv, any spatial rank."""
    return conv_nd(ctx, x, w, bias, **attrs)


@lowering(CONV_GEMM, domain=NATIVE_DOMAIN)
def conv_gemm(ctx: LoweringContext, x: Any, w: Any, bias: Any = None, residual: Any = None, *,
              activation: Any = None, auto_pad: str = "NOTSET", dilations=None, group: int = 1, kernel_shape=None,
              pads=None, strides=None) -> Any:
    """Conv [-> Add(residual)] [-> Relu | HardSwish] as native_rewrites.fuse_conv_epilogue merged
    them: on the native kernel where the kernel arrives packed (a ConvKernel) and x is a float32 NCHW
    image with known C, H, W, the bias, residual and activation applied as each tile is stored;
    otherwise XLA's convolution and ops."""
    activation = activation.decode() if isinstance(activation, bytes) else activation
    x = jnp.asarray(x)
    if isinstance(w, ConvKernel) and runs_natively(x, w):
        rank_strides, rank_dilations = _spatial_defaults(2, strides, dilations)
        padding = auto_pad_padding(auto_pad, pads, x.shape[2:], w.shape[2:], rank_strides, rank_dilations)
        if residual is None or _fits(residual, x, w, padding, rank_strides, rank_dilations):
            return native_conv_gemm(x, w, bias, residual, activation, rank_strides, padding, rank_dilations)
        y = native_conv_gemm(x, w, bias, None, None, rank_strides, padding, rank_dilations)
    else:
        y = conv_nd(ctx, x, w.dense() if isinstance(w, ConvKernel) else w, bias, auto_pad=auto_pad,
                    dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads, strides=strides)
    if residual is not None:
        y = y + residual  # broadcasting as XLA would
    return activate(y, activation)


@lowering(DEPTHWISE_CONV, domain=NATIVE_DOMAIN)
def depthwise_conv(ctx: LoweringContext, x: Any, w: Any, bias: Any = None, *, activation: Any = None,
                   auto_pad: str = "NOTSET", dilations=None, group: int = 1, kernel_shape=None, pads=None,
                   strides=None) -> Any:
    """Depthwise Conv [-> Relu | HardSwish] as native_rewrites.fuse_depthwise_epilogue merged them:
    on the native kernel where x is a float32 NCHW image with known C, H, W (C = group); otherwise
    XLA's convolution and ops."""
    activation = activation.decode() if isinstance(activation, bytes) else activation
    x = jnp.asarray(x)
    if ctx.native and depthwise_runs_natively(x, w) and jnp.shape(x)[1] == group:
        rank_strides, rank_dilations = _spatial_defaults(2, strides, dilations)
        padding = auto_pad_padding(auto_pad, pads, x.shape[2:], jnp.shape(w)[2:], rank_strides, rank_dilations)
        return native_depthwise_conv(x, w, bias, activation, rank_strides, padding, rank_dilations)
    y = conv_nd(ctx, x, w, bias, auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                pads=pads, strides=strides)
    return activate(y, activation)


def _fits(residual: Any, x: Any, w: ConvKernel, padding, strides, dilations) -> bool:
    """Whether the kernel can add `residual`: float32 and exactly the convolution's output shape."""
    return (jnp.result_type(residual) == jnp.float32
            and tuple(jnp.shape(residual)) == output_shape(x, w, strides, padding, dilations))


def _transpose_pads(auto_pad: str, pads, output_shape, input_spatial: Sequence[int], kernel, strides,
                    dilations, output_padding) -> list[tuple[int, int]]:
    """(begin, end) padding of each spatial axis of a ConvTranspose (spec's output_shape rule)."""
    rank = len(kernel)
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [size * s for size, s in zip(input_spatial, strides)]
    if output_shape is not None:
        output_shape = list(output_shape)[-rank:]
        result = []
        for i in range(rank):
            full = strides[i] * (input_spatial[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1
            total = full - output_shape[i]
            if auto_pad == "SAME_UPPER":
                result.append((total // 2, total - total // 2))
            else:
                result.append((total - total // 2, total // 2))
        return result
    pads = list(pads) if pads is not None else [0] * (2 * rank)
    return [(pads[i], pads[i + rank]) for i in range(rank)]


def conv_transpose_nd(ctx: Any, x: Any, w: Any, bias: Any = None, *, auto_pad: str = "NOTSET", dilations=None,
                      group: int = 1, kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                      strides=None) -> Any:
    """ONNX ConvTranspose: X [N, C, *S], W [C, M/group, *K] as an input-dilated convolution with
    the spatially flipped, group-transposed kernel."""
    x, w = jnp.asarray(x), jnp.asarray(w)
    rank = x.ndim - 2
    kernel = list(kernel_shape or w.shape[2:])
    strides, dilations = _spatial_defaults(rank, strides, dilations)
    output_padding = list(output_padding or [0] * rank)
    padding = _transpose_pads(auto_pad, pads, output_shape, x.shape[2:], kernel, strides, dilations, output_padding)
    in_channels, out_per_group = w.shape[0], w.shape[1]
    grouped = w.reshape((group, in_channels // group, out_per_group) + tuple(w.shape[2:]))
    grouped = jnp.swapaxes(grouped, 1, 2).reshape((group * out_per_group, in_channels // group) + tuple(w.shape[2:]))
    flipped = jnp.flip(grouped, axis=tuple(range(2, 2 + rank)))
    conv_padding = [
        ((k - 1) * d - begin, (k - 1) * d - end + extra)
        for (begin, end), k, d, extra in zip(padding, kernel, dilations, output_padding)
    ]
    y = precision.conv(ctx, x, flipped, [1] * rank, conv_padding, lhs_dilation=strides, rhs_dilation=dilations,
                       feature_group_count=group)
    if bias is not None:
        y = y + jnp.asarray(bias, y.dtype).reshape((1, -1) + (1,) * rank)
    return y


@lowering("ConvTranspose")
def conv_transpose(ctx: LoweringContext, x: Any, w: Any, bias: Any = None, **attrs: Any) -> Any:
    """ONNX ConvTranspose, any spatial rank."""
    return conv_transpose_nd(ctx, x, w, bias, **attrs)


@lowering("CausalConvWithState", since=27)
def causal_conv_with_state(ctx: LoweringContext, x: Any, w: Any, bias: Any = None, past_state: Any = None,
                           activation: str = "none") -> Any:
    """Depthwise causal 1-D convolution over [B, C, L] with a carried state of the last k-1 inputs;
    optional SiLU ("silu"/"swish"). Returns (output, present_state)."""
    x, w = jnp.asarray(x), jnp.asarray(w)
    batch, channels, _ = x.shape
    kernel = w.shape[2]
    if past_state is None:
        past_state = jnp.zeros((batch, channels, kernel - 1), x.dtype)
    padded = jnp.concatenate([jnp.asarray(past_state, x.dtype), x], axis=2)
    y = conv_nd(ctx, padded, w, bias, group=channels).astype(x.dtype)
    if activation in ("silu", "swish"):
        work = y.astype(jnp.float32)
        y = (work * jax.nn.sigmoid(work)).astype(x.dtype)
    return y, padded[:, :, padded.shape[2] - (kernel - 1):]
