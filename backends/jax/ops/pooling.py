"""Pooling: MaxPool (with Indices), AveragePool, LpPool, GlobalAverage/Max/LpPool, MaxUnpool.
Windows run through lax.reduce_window, or on the CPU as one axis at a time of strided slices
combined elementwise (XLA:CPU's reduce_window ran ResNet's 3x3/2 MaxPool 7x slower than
onnxruntime, a 3x3/1 one 15x); padding follows auto_pad and ceil_mode."""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import native_pool, native_rows
from ..registry import LoweringContext, is_static, lowering
from ._helpers import auto_pad_padding, optional_ints


def _window(x: Any, kernel_shape, strides, dilations, pads, auto_pad: str, ceil_mode: int):
    """(window dims, strides, dilations, explicit padding, padding incl. ceil-mode extra) for N, C, *S."""
    rank = x.ndim - 2
    kernel = list(kernel_shape)
    strides = list(strides or [1] * rank)
    dilations = list(dilations or [1] * rank)
    if auto_pad == "VALID":  # no padding, but ceil_mode still rounds the window count up
        auto_pad, pads = "NOTSET", None
    explicit = auto_pad_padding(auto_pad, pads, x.shape[2:], kernel, strides, dilations)
    full = auto_pad_padding(auto_pad, pads, x.shape[2:], kernel, strides, dilations, ceil_mode=bool(ceil_mode))
    head = [(0, 0), (0, 0)]
    return ((1, 1, *kernel), (1, 1, *strides), (1, 1, *dilations), head + explicit, head + full)


def _lowest(dtype: Any) -> Any:
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.array(-jnp.inf, dtype)
    if dtype == jnp.bool_:
        return jnp.array(False)
    return jnp.array(jnp.iinfo(dtype).min, dtype)


SEPARABLE_MAX_TAPS = 16  # wider windows stay a reduce_window (the slices would grow the program)


def _reduce_windows(ctx: LoweringContext, x: Any, fill: Any, combine: Any, dims, strides, dilation, padding) -> Any:
    """lax.reduce_window(x, fill, combine, ...), on the CPU as a sequence of one-axis reductions:
    along each spatial axis, `combine` of the kernel's strided slices of the padded input, which XLA
    fuses into loops that read each input a few times instead of once per window tap."""
    kernel = dims[2:]
    if ctx.platform != "cpu" or any(k > SEPARABLE_MAX_TAPS for k in kernel) or any(d != 1 for d in dims[:2]):
        return lax.reduce_window(x, fill, combine, dims, strides, padding, window_dilation=dilation)
    y = lax.pad(x, jnp.asarray(fill, x.dtype), [(low, high, 0) for low, high in padding])
    for axis in range(2, x.ndim):  # outer axes first: their slices are runs of whole rows
        taps, step, spread = dims[axis], strides[axis], dilation[axis]
        count = (y.shape[axis] - ((taps - 1) * spread + 1)) // step + 1
        pieces = [lax.slice_in_dim(y, tap * spread, tap * spread + (count - 1) * step + 1, step, axis)
                  for tap in range(taps)]
        y = functools.reduce(combine, pieces)
    return y


@lowering("MaxPool")
def max_pool(ctx: LoweringContext, x: Any, kernel_shape, auto_pad: str = "NOTSET", ceil_mode: int = 0,
             dilations=None, pads=None, storage_order: int = 0, strides=None) -> Any:
    """Max over each window; the optional Indices output is the flat (row-major, or column-major
    with storage_order=1) position of the maximum in the unpadded input."""
    x = jnp.asarray(x)
    dims, window_strides, window_dilation, _, padding = _window(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if native_pool.runs_natively(ctx, x, dims, padding, ctx.output_used(1)):
        return native_pool.max_pool(x, dims, window_strides, window_dilation, padding), None
    y = _reduce_windows(ctx, x, _lowest(x.dtype), lax.max, dims, window_strides, window_dilation, padding)
    if not ctx.output_used(1):
        return y, None
    return y, _max_pool_indices(x, dims, window_strides, window_dilation, padding, storage_order)


def _max_pool_indices(x: Any, dims, strides, dilation, padding, storage_order: int) -> Any:
    """Flat index of each window's first maximum, from the stacked window taps."""
    spatial = x.shape[2:]
    if storage_order:
        flat = np.arange(int(np.prod(spatial))).reshape(spatial[::-1]).T
    else:
        flat = np.arange(int(np.prod(spatial))).reshape(spatial)
    batch, channels = x.shape[:2]
    planes = jnp.arange(batch, dtype=jnp.int64)[:, None] * channels + jnp.arange(channels, dtype=jnp.int64)[None, :]
    flat = planes.reshape(batch, channels, *([1] * len(spatial))) * int(np.prod(spatial)) + jnp.asarray(flat)[None, None]
    values = _taps(x, dims, strides, dilation, padding, _lowest(x.dtype))
    indices = _taps(jnp.asarray(flat, jnp.int64), dims, strides,
                    dilation, padding, jnp.array(-1, jnp.int64))
    choice = jnp.argmax(values, axis=0)
    return jnp.take_along_axis(indices, choice[None], axis=0)[0].astype(jnp.int64)


def _taps(x: Any, dims, strides, dilation, padding, fill: Any) -> Any:
    """[K, N, C, *out]: the value at each window tap, one strided slice per kernel offset."""
    padded = lax.pad(x, fill.astype(x.dtype), [(low, high, 0) for low, high in padding])
    kernel = dims[2:]
    out_shape = [
        (padded.shape[2 + i] - ((kernel[i] - 1) * dilation[2 + i] + 1)) // strides[2 + i] + 1
        for i in range(len(kernel))
    ]
    taps = []
    for offset in np.ndindex(*kernel):
        start = [0, 0] + [o * dilation[2 + i] for i, o in enumerate(offset)]
        limit = list(padded.shape[:2]) + [
            start[2 + i] + (out_shape[i] - 1) * strides[2 + i] + 1 for i in range(len(kernel))
        ]
        taps.append(lax.slice(padded, start, limit, [1, 1, *strides[2:]]))
    return jnp.stack(taps)


@lowering("AveragePool")
def average_pool(ctx: LoweringContext, x: Any, kernel_shape, auto_pad: str = "NOTSET", ceil_mode: int = 0,
                 count_include_pad: int = 0, dilations=None, pads=None, strides=None) -> Any:
    """Window sum divided by the count of input cells (plus explicit pads with count_include_pad);
    the ceil-mode extra never counts."""
    x = jnp.asarray(x)
    dims, window_strides, window_dilation, explicit, padding = _window(x, kernel_shape, strides, dilations, pads,
                                                                      auto_pad, ceil_mode)
    if native_pool.runs_natively(ctx, x, dims, padding, False):
        return native_pool.average_pool(x, dims, window_strides, window_dilation, padding, explicit, bool(count_include_pad))
    work = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    total = _reduce_windows(ctx, work, jnp.array(0, work.dtype), lax.add, dims, window_strides, window_dilation, padding)
    ones = jnp.ones(x.shape[2:], work.dtype)[None, None]
    if count_include_pad:
        ones = lax.pad(ones, jnp.array(1, work.dtype), [(low, high, 0) for low, high in explicit])
        extra = [(0, f_high - e_high) for (_, e_high), (_, f_high) in zip(explicit, padding)]
    else:
        extra = padding
    count = lax.reduce_window(ones, jnp.array(0, work.dtype), lax.add, dims, window_strides, extra,
                              window_dilation=window_dilation)
    return (total / count).astype(x.dtype)


@lowering("LpPool")
def lp_pool(ctx: LoweringContext, x: Any, kernel_shape, auto_pad: str = "NOTSET", ceil_mode: int = 0,
            dilations=None, p: int = 2, pads=None, strides=None) -> Any:
    """(sum over each window of |x|^p)^(1/p), zero padding."""
    x = jnp.asarray(x)
    dims, window_strides, window_dilation, _, padding = _window(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    powered = jnp.abs(x) ** p
    total = _reduce_windows(ctx, powered, jnp.array(0, x.dtype), lax.add, dims, window_strides, window_dilation, padding)
    return (total ** (1.0 / p)).astype(x.dtype)


def _spatial_axes(x: Any) -> tuple[int, ...]:
    return tuple(range(2, jnp.ndim(x)))


@lowering("GlobalAveragePool")
def global_average_pool(ctx: LoweringContext, x: Any) -> Any:
    """Mean over all spatial axes, kept as size-1 dims."""
    x = jnp.asarray(x)
    if native_rows.mean_runs_natively(ctx, x, _spatial_axes(x)):
        return native_rows.trailing_mean(x, _spatial_axes(x), keepdims=True)
    return jnp.mean(x, axis=_spatial_axes(x), keepdims=True)


@lowering("GlobalMaxPool")
def global_max_pool(ctx: LoweringContext, x: Any) -> Any:
    """Max over all spatial axes, kept as size-1 dims."""
    x = jnp.asarray(x)
    return jnp.max(x, axis=_spatial_axes(x), keepdims=True)


@lowering("GlobalLpPool")
def global_lp_pool(ctx: LoweringContext, x: Any, p: int = 2) -> Any:
    """p-norm over all spatial axes, kept as size-1 dims."""
    x = jnp.asarray(x)
    return (jnp.sum(jnp.abs(x) ** p, axis=_spatial_axes(x), keepdims=True) ** (1.0 / p)).astype(x.dtype)


@lowering("MaxUnpool")
def max_unpool(ctx: LoweringContext, x: Any, indices: Any, output_shape: Any = None, kernel_shape=None,
               pads=None, strides=None) -> Any:
    """Scatter X into zeros at the positions of Indices (MaxPool's flat indices over the default
    unpooled shape); a larger output_shape keeps each position's coordinates."""
    x = jnp.asarray(x)
    rank = x.ndim - 2
    strides = list(strides or [1] * rank)
    pads = list(pads or [0] * (2 * rank))
    spatial = [(x.shape[2 + i] - 1) * strides[i] + kernel_shape[i] - pads[i] - pads[i + rank] for i in range(rank)]
    default = (x.shape[0], x.shape[1], *spatial)
    declared = ctx.output_types[0].shape if ctx.output_types[0] is not None else None
    if output_shape is None:
        shape = default
    elif is_static(output_shape):
        shape = tuple(optional_ints(output_shape))
    elif declared is not None and all(isinstance(d, int) for d in declared):
        shape = tuple(declared)
    else:
        raise ctx.fail("output_shape is computed at run time and the declared output shape does not fix it")
    positions = jnp.asarray(indices).reshape(-1)
    if tuple(shape) != tuple(default):
        positions = jnp.ravel_multi_index(jnp.unravel_index(positions, default), shape, mode="clip")
    flat = jnp.zeros(int(np.prod(shape)), x.dtype).at[positions].set(x.reshape(-1))
    return flat.reshape(shape)
