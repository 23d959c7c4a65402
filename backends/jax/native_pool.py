"""MaxPool on the native CPU kernel (native/max_pool.cc) through jax.ffi: fp32 NCHW images, any
window, stride, dilation and padding (auto_pad and ceil_mode already resolved into the padding),
the Indices output not requested."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TARGET = "kiln_max_pool"
MAX_WINDOW_ROWS = 16  # native/max_pool.cc: kMaxWindowRows


def runs_natively(ctx: Any, x: Any, dims: tuple[int, ...], with_indices: bool) -> bool:
    """Whether a MaxPool of window `dims` ([1, 1, kh, kw]) over `x` can run on the kernel."""
    if not ctx.native or with_indices or jnp.ndim(x) != 4 or tuple(dims[:2]) != (1, 1) or dims[2] > MAX_WINDOW_ROWS:
        return False
    return jnp.result_type(x) == jnp.float32 and all(isinstance(d, (int, np.integer)) and d > 0 for d in jnp.shape(x))


def max_pool(x: Any, dims, strides, dilation, padding) -> Any:
    """The pool of `x` with lax.reduce_window's window description (padding: (low, high) per axis,
    ceil mode's extra included in the high side)."""
    n, c, height, width = jnp.shape(x)
    sizes = []
    for axis, extent in ((2, height), (3, width)):
        span = (dims[axis] - 1) * dilation[axis] + 1
        low, high = padding[axis]
        sizes.append(max(0, (extent + low + high - span) // strides[axis] + 1))
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((n, c, *sizes), jnp.float32))
    return call(x, kh=np.int64(dims[2]), kw=np.int64(dims[3]), sh=np.int64(strides[2]), sw=np.int64(strides[3]),
                pt=np.int64(padding[2][0]), pl=np.int64(padding[3][0]), dh=np.int64(dilation[2]), dw=np.int64(dilation[3]))
