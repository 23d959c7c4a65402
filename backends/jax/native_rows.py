"""Row operations on an fp32 tensor's trailing axes on the native CPU kernels (native/row_ops.cc)
through jax.ffi: the mean over them (GlobalAveragePool; ReduceMean over the spatial axes, as
torch.export writes it) and a product with a factor per leading index (a squeeze-and-excitation
block's x * s, s of shape [N, C, 1, 1]). The trailing axes are flattened into rows; the results are
reshaped to what the node returns."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MEAN, SCALE = "kiln_row_mean", "kiln_row_scale"
SCALE_MIN_ELEMENTS = 4096  # below it XLA's fused elementwise loop runs on the caller anyway


def _static_float(x: Any) -> bool:
    return jnp.result_type(x) == jnp.float32 and all(isinstance(d, (int, np.integer)) for d in jnp.shape(x))


def mean_runs_natively(ctx: Any, x: Any, axes: tuple[int, ...]) -> bool:
    """Whether the mean of `x` over `axes` (normalized) can run on the kernel: fp32, static shape,
    the axes the trailing ones, something to reduce."""
    if not ctx.native or not axes or not _static_float(x):
        return False
    rank = jnp.ndim(x)
    return tuple(sorted(axes)) == tuple(range(rank - len(axes), rank)) and math.prod(jnp.shape(x)) > 0


def trailing_mean(x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
    """The mean of x over its trailing `axes`, kept as size-1 dims with `keepdims`."""
    shape = tuple(jnp.shape(x))
    kept = shape[: len(shape) - len(axes)]
    rows = math.prod(kept)
    means = jax.ffi.ffi_call(MEAN, jax.ShapeDtypeStruct((rows,), jnp.float32))(jnp.reshape(x, (rows, -1)))
    return jnp.reshape(means, kept + (1,) * len(axes) if keepdims else kept)


def scaled_rows(ctx: Any, a: Any, b: Any) -> Any:
    """`a * b` on the kernel where it scales each row of one operand's trailing axes by one factor
    of the other: both fp32 and static, the factors' shape (left-padded with 1s to x's rank) x's
    leading dims followed by 1s, at least SCALE_MIN_ELEMENTS in x and a trailing axis of more than
    one element; None where it does not."""
    if not ctx.native:
        return None
    for x, s in ((a, b), (b, a)):
        if not (_static_float(x) and _static_float(s)) or math.prod(jnp.shape(x)) < SCALE_MIN_ELEMENTS:
            continue
        shape, rank = tuple(jnp.shape(x)), jnp.ndim(x)
        if jnp.ndim(s) > rank:
            continue
        factors = (1,) * (rank - jnp.ndim(s)) + tuple(jnp.shape(s))
        lead = len(factors)
        while lead and factors[lead - 1] == 1:
            lead -= 1
        if lead < rank and factors[:lead] == shape[:lead] and math.prod(shape[lead:]) > 1:
            call = jax.ffi.ffi_call(SCALE, jax.ShapeDtypeStruct(shape, jnp.float32))
            return call(x, jnp.reshape(s, (-1,)))
    return None
