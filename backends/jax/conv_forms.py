"""Cheaper forms of two common convolutions for XLA (measured on its CPU backend):

- depthwise (one group per input channel): a sum of shifted, strided slices times per-channel
  weights, one fused loop; XLA runs feature_group_count == C convolutions 20-50x slower
  (MobileNet/EfficientNet spend most of their time there);
- pointwise (1x1 kernel, no padding, one group): a matrix product over the channel axis, which
  XLA hands to its matmul library without the NCHW <-> NHWC layout copies a convolution gets;
- patchify (stride equal to the kernel, no padding or dilation, one group: ViT's patch embedding):
  the input cut into non-overlapping patches by a reshape and a transpose, then one matrix product
  (XLA:CPU's convolution takes 2.3x onnxruntime's time on ViT-B/16's 16x16/16 one)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
from jax import lax

MAX_TAPS = 64  # larger kernels keep lax.conv (one slice per tap would bloat the program)


def is_depthwise(lhs: Any, rhs: Any, padding: Any, lhs_dilation: Sequence[int] | None, dimension_numbers: Any,
                 feature_group_count: int, batch_group_count: int) -> bool:
    """Whether a conv_general_dilated call is a plain NC* x OI* depthwise convolution this module handles."""
    if dimension_numbers is not None or batch_group_count != 1 or lhs.ndim < 3:
        return False
    channels = lhs.shape[1]
    if feature_group_count != channels or channels == 1 or rhs.shape[1] != 1 or rhs.shape[0] % channels:
        return False
    if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
        return False
    if isinstance(padding, str) or any(low < 0 or high < 0 for low, high in padding):
        return False
    taps = 1
    for size in rhs.shape[2:]:
        taps *= int(size)
    return taps <= MAX_TAPS


def depthwise_conv(lhs: Any, rhs: Any, window_strides: Sequence[int], padding: Sequence[tuple[int, int]],
                   rhs_dilation: Sequence[int] | None, accumulate: Any) -> Any:
    """y[n, o, *p] = sum over taps k of x[n, o // m, *(p * stride + k * dilation)] * w[o, 0, *k]
    (m = output channels per input channel), products and sums in `accumulate`."""
    rank = lhs.ndim - 2
    dilation = tuple(rhs_dilation or (1,) * rank)
    strides = tuple(window_strides)
    multiplier = rhs.shape[0] // lhs.shape[1]
    if multiplier > 1:
        lhs = jnp.repeat(lhs, multiplier, axis=1)
    padded = jnp.pad(lhs.astype(accumulate), ((0, 0), (0, 0), *[tuple(p) for p in padding]))
    kernel = rhs[:, 0].astype(accumulate)  # [O, *K]
    kernel_shape = kernel.shape[1:]
    out_shape = [(padded.shape[2 + a] - (kernel_shape[a] - 1) * dilation[a] - 1) // strides[a] + 1 for a in range(rank)]
    result = None
    for tap in _taps(kernel_shape):
        window = tuple(slice(tap[a] * dilation[a], tap[a] * dilation[a] + (out_shape[a] - 1) * strides[a] + 1, strides[a])
                       for a in range(rank))
        patch = padded[(slice(None), slice(None), *window)]  # a strided slice; the batch may be symbolic
        weight = kernel[(slice(None), *tap)].reshape((1, -1) + (1,) * rank)
        term = patch * weight
        result = term if result is None else result + term
    return result


def _taps(kernel_shape: Sequence[int]) -> list[tuple[int, ...]]:
    taps: list[tuple[int, ...]] = [()]
    for size in kernel_shape:
        taps = [tap + (index,) for tap in taps for index in range(int(size))]
    return taps


def is_pointwise(lhs: Any, rhs: Any, padding: Any, lhs_dilation: Sequence[int] | None, dimension_numbers: Any,
                 feature_group_count: int, batch_group_count: int) -> bool:
    """Whether a conv_general_dilated call is an NC* x OI* convolution with a 1x1 kernel and no padding."""
    if dimension_numbers is not None or batch_group_count != 1 or feature_group_count != 1 or lhs.ndim < 3:
        return False
    if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
        return False
    if isinstance(padding, str) or any(low != 0 or high != 0 for low, high in padding):
        return False
    return all(int(size) == 1 for size in rhs.shape[2:])


def pointwise_conv(lhs: Any, rhs: Any, window_strides: Sequence[int], **dot_options: Any) -> Any:
    """y[n, o, *p] = sum over c of w[o, c] * x[n, c, *(p * stride)], as one dot_general."""
    if any(s != 1 for s in window_strides):
        lhs = lhs[(slice(None), slice(None), *[slice(None, None, s) for s in window_strides])]
    weight = rhs.reshape(rhs.shape[:2])  # [O, C]
    result = lax.dot_general(weight, lhs, (((1,), (1,)), ((), ())), **dot_options)  # [O, N, *S]
    return jnp.moveaxis(result, 0, 1)


def is_patchify(lhs: Any, rhs: Any, window_strides: Sequence[int], padding: Any, lhs_dilation: Sequence[int] | None,
                rhs_dilation: Sequence[int] | None, dimension_numbers: Any, feature_group_count: int,
                batch_group_count: int) -> bool:
    """Whether a conv_general_dilated call is an NC* x OI* convolution over non-overlapping patches
    (stride equal to a kernel larger than 1x1, no padding or dilation, one group)."""
    if dimension_numbers is not None or batch_group_count != 1 or feature_group_count != 1 or lhs.ndim < 3:
        return False
    if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
        return False
    if isinstance(padding, str) or any(low != 0 or high != 0 for low, high in padding):
        return False
    kernel = [int(size) for size in rhs.shape[2:]]
    return list(window_strides) == kernel and any(size > 1 for size in kernel) and all(
        int(extent) >= size for extent, size in zip(lhs.shape[2:], kernel))


def patchify_conv(lhs: Any, rhs: Any, **dot_options: Any) -> Any:
    """y[n, o, *p] = sum over c and the patch of w[o, c, *t] * x[n, c, *(p * kernel + t)]."""
    kernel = [int(size) for size in rhs.shape[2:]]
    rank = len(kernel)
    patches = [int(extent) // size for extent, size in zip(lhs.shape[2:], kernel)]
    lhs = lhs[(slice(None), slice(None), *[slice(0, count * size) for count, size in zip(patches, kernel)])]
    split = [lhs.shape[0], lhs.shape[1]] + [d for pair in zip(patches, kernel) for d in pair]
    grid = jnp.transpose(lhs.reshape(split), (0, *range(2, 2 + 2 * rank, 2), 1, *range(3, 3 + 2 * rank, 2)))
    rows = grid.reshape(-1, lhs.shape[1] * math.prod(kernel))  # [N * patches, C * taps]
    weight = rhs.reshape(rhs.shape[0], -1)  # [O, C * taps]
    result = lax.dot_general(rows, weight, (((1,), (1,)), ((), ())), **dot_options)  # [N * patches, O]
    result = result.reshape(lhs.shape[0], *patches, rhs.shape[0])
    return jnp.moveaxis(result, -1, 1)
