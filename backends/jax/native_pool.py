"""MaxPool and AveragePool on the native CPU kernel (native/pool.cc) through jax.ffi: fp32 NCHW
images, windows of up to 16 rows, any stride, dilation and padding (auto_pad and ceil_mode already
resolved into the padding), MaxPool's Indices output not requested."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MAX, AVERAGE = "kiln_max_pool", "kiln_average_pool"
MAX_WINDOW_ROWS = 16  # native/pool.cc: kMaxWindowRows


def runs_natively(ctx: Any, x: Any, dims: tuple[int, ...], padding, with_indices: bool) -> bool:
    """Whether a pool of window `dims` ([1, 1, kh, kw]) and `padding` ((low, high) per axis) over `x`
    can run on the kernel."""
    if not ctx.native or with_indices or jnp.ndim(x) != 4 or tuple(dims[:2]) != (1, 1) or dims[2] > MAX_WINDOW_ROWS:
        return False
    if any(low < 0 for low, _ in padding):
        return False
    return jnp.result_type(x) == jnp.float32 and all(isinstance(d, (int, np.integer)) and d > 0 for d in jnp.shape(x))


def _window_attributes(dims, strides, dilation, padding) -> dict[str, np.int64]:
    names = ("kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw")
    values = (dims[2], dims[3], strides[2], strides[3], padding[2][0], padding[3][0], dilation[2], dilation[3])
    return {name: np.int64(value) for name, value in zip(names, values)}


def _output_shape(x: Any, dims, strides, dilation, padding) -> tuple[int, ...]:
    n, c, height, width = jnp.shape(x)
    sizes = []
    for axis, extent in ((2, height), (3, width)):
        span = (dims[axis] - 1) * dilation[axis] + 1
        low, high = padding[axis]
        sizes.append(max(0, (extent + low + high - span) // strides[axis] + 1))
    return (n, c, *sizes)


def max_pool(x: Any, dims, strides, dilation, padding) -> Any:
    """The MaxPool of `x` with lax.reduce_window's window description (padding: (low, high) per
    axis, ceil mode's extra included in the high side)."""
    call = jax.ffi.ffi_call(MAX, jax.ShapeDtypeStruct(_output_shape(x, dims, strides, dilation, padding), jnp.float32))
    return call(x, **_window_attributes(dims, strides, dilation, padding))


def average_pool(x: Any, dims, strides, dilation, padding, explicit, count_include_pad: bool) -> Any:
    """The AveragePool of `x`: window sums over the image divided by the taps inside it, or with
    `count_include_pad` also those on the `explicit` padding (never on ceil mode's extra)."""
    counted = [explicit[2][0], explicit[2][1], explicit[3][0], explicit[3][1]] if count_include_pad else [0, 0, 0, 0]
    call = jax.ffi.ffi_call(AVERAGE, jax.ShapeDtypeStruct(_output_shape(x, dims, strides, dilation, padding), jnp.float32))
    return call(x, counted=np.array(counted, np.int64), **_window_attributes(dims, strides, dilation, padding))
