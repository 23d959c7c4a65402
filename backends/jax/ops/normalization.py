"""Normalisation ops: BatchNormalization, InstanceNormalization, GroupNormalization,
LayerNormalization, RMSNormalization, LRN, LpNormalization, MeanVarianceNormalization."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import native_norm
from ..registry import LoweringContext, lowering
from ._helpers import normalize_axis

STASH_FLOAT = 1  # ONNX TensorProto.FLOAT: compute the statistics in float32


def _channel_shape(rank: int) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against an N, C, ... tensor."""
    return (1, -1) + (1,) * (rank - 2)


def _per_channel(value: Any, rank: int, dtype: Any) -> Any:
    return jnp.asarray(value, dtype).reshape(_channel_shape(rank))


@lowering("BatchNormalization", since=1)
def batch_normalization(ctx: LoweringContext, x: Any, scale: Any, bias: Any, mean: Any, var: Any,
                        epsilon: float = 1e-5, momentum: float = 0.9, training_mode: int = 0, **_: Any) -> Any:
    """Inference: normalise with the running statistics. training_mode=1 (opset 14+): batch
    statistics, plus the updated running mean/variance outputs."""
    x = jnp.asarray(x)
    rank = x.ndim
    if training_mode and ctx.opset >= 14:
        axes = tuple(i for i in range(rank) if i != 1)
        work = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        batch_mean = jnp.mean(work, axis=axes)
        batch_var = jnp.var(work, axis=axes)
        y = _normalize(x, batch_mean, batch_var, scale, bias, epsilon)
        stat_dtype = jnp.asarray(mean).dtype
        running_mean = (jnp.asarray(mean) * momentum + batch_mean * (1 - momentum)).astype(stat_dtype)
        running_var = (jnp.asarray(var) * momentum + batch_var * (1 - momentum)).astype(stat_dtype)
        return y, running_mean, running_var
    y = _normalize(x, mean, var, scale, bias, epsilon)
    extra = [None] * (ctx.num_outputs() - 1)
    if ctx.opset < 14 and ctx.num_outputs() > 1:  # old training outputs: pass the statistics through
        extra = [jnp.asarray(mean), jnp.asarray(var), jnp.asarray(mean), jnp.asarray(var)][: ctx.num_outputs() - 1]
    return (y, *extra)


def _normalize(x: Any, mean: Any, var: Any, scale: Any, bias: Any, epsilon: float) -> Any:
    rank = x.ndim
    work = jnp.promote_types(x.dtype, jnp.float32)
    mean, var, scale, bias = (_per_channel(v, rank, work) for v in (mean, var, scale, bias))
    y = (x.astype(work) - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias
    return y.astype(x.dtype)


@lowering("InstanceNormalization")
def instance_normalization(ctx: LoweringContext, x: Any, scale: Any, bias: Any, epsilon: float = 1e-5) -> Any:
    """Per (sample, channel) mean/variance over the spatial axes."""
    x = jnp.asarray(x)
    axes = tuple(range(2, x.ndim))
    work = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(work, axis=axes, keepdims=True)
    var = jnp.var(work, axis=axes, keepdims=True)
    y = (work - mean) * jax.lax.rsqrt(var + epsilon)
    y = y * _per_channel(scale, x.ndim, work.dtype) + _per_channel(bias, x.ndim, work.dtype)
    return y.astype(x.dtype)


@lowering("GroupNormalization", since=18)
def group_normalization(ctx: LoweringContext, x: Any, scale: Any, bias: Any, num_groups: int,
                        epsilon: float = 1e-5, stash_type: int = STASH_FLOAT) -> Any:
    """Statistics per (sample, group of channels); scale/bias per channel (opset 21) or per group (18)."""
    x = jnp.asarray(x)
    batch, channels = x.shape[0], x.shape[1]
    work_dtype = jnp.float32 if stash_type == STASH_FLOAT else x.dtype
    grouped = x.astype(work_dtype).reshape(batch, num_groups, -1)
    mean = jnp.mean(grouped, axis=-1, keepdims=True)
    var = jnp.var(grouped, axis=-1, keepdims=True)
    normalized = ((grouped - mean) * jax.lax.rsqrt(var + epsilon)).reshape(x.shape)
    scale, bias = jnp.asarray(scale), jnp.asarray(bias)
    if ctx.opset < 21 and scale.shape[0] == num_groups and num_groups != channels:
        scale = jnp.repeat(scale, channels // num_groups)
        bias = jnp.repeat(bias, channels // num_groups)
    y = normalized.astype(x.dtype) * _per_channel(scale, x.ndim, x.dtype) + _per_channel(bias, x.ndim, x.dtype)
    return y.astype(x.dtype)


def layer_norm_math(x: Any, scale: Any, bias: Any, axis: int = -1, epsilon: float = 1e-5,
                    stash_type: int = STASH_FLOAT) -> tuple[Any, Any, Any]:
    """ONNX LayerNormalization-17 (also ai.graphkiln LayerNormalization): (Y, Mean, InvStdDev)."""
    x = jnp.asarray(x)
    axis = normalize_axis(axis, x.ndim)
    axes = tuple(range(axis, x.ndim))
    work_dtype = jnp.float32 if stash_type == STASH_FLOAT else x.dtype
    work = x.astype(work_dtype)
    mean = jnp.mean(work, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(work - mean), axis=axes, keepdims=True)
    inv_std = jax.lax.rsqrt(var + epsilon)
    y = ((work - mean) * inv_std).astype(x.dtype) * jnp.asarray(scale, x.dtype)
    if bias is not None:
        y = y + jnp.asarray(bias, x.dtype)
    return y.astype(x.dtype), mean.astype(work_dtype), inv_std.astype(work_dtype)


@lowering("LayerNormalization", since=17)
def layer_normalization(ctx: LoweringContext, x: Any, scale: Any, bias: Any = None, axis: int = -1,
                        epsilon: float = 1e-5, stash_type: int = STASH_FLOAT) -> Any:
    """LayerNormalization-17: (Y, Mean, InvStdDev) over the axes from `axis` on."""
    x = jnp.asarray(x)
    axis = normalize_axis(axis, x.ndim)
    if stash_type == STASH_FLOAT and native_norm.runs_natively(ctx, x, scale, bias, axis):
        return native_norm.layer_norm(x, scale, bias, axis, epsilon), jnp.zeros((), x.dtype), jnp.zeros((), x.dtype)
    return layer_norm_math(x, scale, bias, axis, epsilon, stash_type)


def rms_norm_stats(x: Any, scale: Any, axis: int = -1, epsilon: float = 1e-5,
                   stash_type: int = STASH_FLOAT) -> tuple[Any, Any]:
    """(Y, InvRMS) of an RMS normalization over the axes from `axis` on (onnxruntime's simplified
    layer norms also return the InvRMS)."""
    x = jnp.asarray(x)
    axes = tuple(range(normalize_axis(axis, x.ndim), x.ndim))
    work_dtype = jnp.float32 if stash_type == STASH_FLOAT else x.dtype
    work = x.astype(work_dtype)
    inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(work), axis=axes, keepdims=True) + epsilon)
    return ((work * inv_rms).astype(x.dtype) * jnp.asarray(scale, x.dtype)).astype(x.dtype), inv_rms


def rms_norm_math(x: Any, scale: Any, axis: int = -1, epsilon: float = 1e-5, stash_type: int = STASH_FLOAT) -> Any:
    """ONNX RMSNormalization-23 (also ai.graphkiln RMSNormalization)."""
    return rms_norm_stats(x, scale, axis, epsilon, stash_type)[0]


@lowering("RMSNormalization", since=23)
def rms_normalization(ctx: LoweringContext, x: Any, scale: Any, axis: int = -1, epsilon: float = 1e-5,
                      stash_type: int = STASH_FLOAT) -> Any:
    """RMSNormalization-23: X / sqrt(mean(X^2) + epsilon) * scale over the axes from `axis` on."""
    return rms_norm_math(x, scale, axis, epsilon, stash_type)


@lowering("LRN")
def lrn(ctx: LoweringContext, x: Any, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> Any:
    """Local response normalisation across channels (window floor((size-1)/2) before, ceil after)."""
    x = jnp.asarray(x)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    squared = jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32)))
    window = (1, size) + (1,) * (x.ndim - 2)
    padding = [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2)
    square_sum = jax.lax.reduce_window(squared, 0.0, jax.lax.add, window, (1,) * x.ndim, padding)
    y = x / (bias + (alpha / size) * square_sum) ** beta
    return y.astype(x.dtype)


@lowering("LpNormalization")
def lp_normalization(ctx: LoweringContext, x: Any, axis: int = -1, p: int = 2) -> Any:
    """x / ||x||_p along `axis`; a zero norm gives 0."""
    x = jnp.asarray(x)
    if p == 1:
        norm = jnp.sum(jnp.abs(x), axis=axis, keepdims=True)
    else:
        norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    safe = jnp.where(norm == 0, jnp.ones((), x.dtype), norm)
    return jnp.where(norm == 0, jnp.zeros((), x.dtype), x / safe)


@lowering("MeanVarianceNormalization")
def mean_variance_normalization(ctx: LoweringContext, x: Any, axes: Any = (0, 2, 3)) -> Any:
    """(x - mean) / (sqrt(E[x^2] - mean^2) + 1e-9) over `axes` (the function body's formula)."""
    x = jnp.asarray(x)
    axes = tuple(normalize_axis(a, x.ndim) for a in np.asarray(axes).reshape(-1).tolist())
    mean = jnp.mean(x, axis=axes, keepdims=True)
    std = jnp.sqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) - jnp.square(mean))
    return (x - mean) / (std + jnp.asarray(1e-9, x.dtype))
