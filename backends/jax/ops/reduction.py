"""Reductions (Reduce*, ArgMax/ArgMin) and scans (CumSum/CumProd). Axes come from the attribute
(older opsets) or the second input (newer ones); static inputs reduce with numpy at trace time."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from .. import native_rows
from ..registry import lowering
from ._helpers import all_static, lowering_and_static, normalize_axes, normalize_axis, optional_ints


def _reduction_axes(x: Any, axes_input: Any, axes_attribute: Any, noop_with_empty_axes: int) -> tuple | None:
    """Normalised axes to reduce, or None for "return the input unchanged"."""
    axes = optional_ints(axes_input) if axes_input is not None else optional_ints(axes_attribute)
    if not axes:
        return None if noop_with_empty_axes else tuple(range(np.ndim(x)))
    return normalize_axes(axes, np.ndim(x))


def _extreme(xp: Any, x: Any, smallest: bool) -> Any:
    """The identity of max (smallest=True) or min for x's dtype, so empty reductions work."""
    dtype = np.dtype(x.dtype)
    if jnp.issubdtype(dtype, jnp.floating):  # bfloat16/float8 are floating to jnp, not to numpy
        return -np.inf if smallest else np.inf
    if dtype == np.bool_:
        return not smallest
    info = np.iinfo(dtype)
    return info.min if smallest else info.max


def _reduce(kind: str, xp: Any, x: Any, axes: tuple, keepdims: bool) -> Any:
    if kind == "Sum":
        return xp.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
    if kind == "Mean":
        return xp.mean(x, axis=axes, keepdims=keepdims).astype(x.dtype)
    if kind == "Prod":
        return xp.prod(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
    if kind == "Max":
        return xp.max(x, axis=axes, keepdims=keepdims, initial=_extreme(xp, x, True))
    if kind == "Min":
        return xp.min(x, axis=axes, keepdims=keepdims, initial=_extreme(xp, x, False))
    if kind == "L1":
        return xp.sum(xp.abs(x), axis=axes, keepdims=keepdims).astype(x.dtype)
    if kind == "L2":
        return xp.sqrt(xp.sum(x * x, axis=axes, keepdims=keepdims)).astype(x.dtype)
    if kind == "SumSquare":
        return xp.sum(x * x, axis=axes, keepdims=keepdims, dtype=x.dtype)
    if kind == "LogSum":
        return xp.log(xp.sum(x, axis=axes, keepdims=keepdims)).astype(x.dtype)
    if kind == "LogSumExp":
        if xp is np:
            return np.log(np.sum(np.exp(x), axis=axes, keepdims=keepdims)).astype(x.dtype)
        return logsumexp(x, axis=axes, keepdims=keepdims).astype(x.dtype)
    raise ValueError(kind)


def _register_reduction(kind: str) -> None:
    def rule(ctx, x, axes_input=None, axes=None, keepdims=1, noop_with_empty_axes=0):
        reduce_axes = _reduction_axes(x, axes_input, axes, noop_with_empty_axes)
        if reduce_axes is None:
            return x
        static = all_static(x)
        xp = np if static else jnp
        x = np.asarray(x) if static else x
        if static and x.dtype == object and kind not in ("Sum", "Prod", "Max", "Min"):
            raise NotImplementedError("symbolic dims")
        if static and x.dtype == object:
            function = {"Sum": np.sum, "Prod": np.prod, "Max": np.max, "Min": np.min}[kind]
            return np.asarray(function(x, axis=reduce_axes, keepdims=bool(keepdims)), dtype=object)
        if kind == "Mean" and not static and native_rows.mean_runs_natively(ctx, x, reduce_axes):
            return native_rows.trailing_mean(x, reduce_axes, bool(keepdims))
        return _reduce(kind, xp, x, reduce_axes, bool(keepdims))

    lowering_and_static(f"Reduce{kind}")(rule)


for _kind in ("Sum", "Mean", "Prod", "Max", "Min", "L1", "L2", "SumSquare", "LogSum", "LogSumExp"):
    _register_reduction(_kind)


def _arg_extreme(function: Any, x: Any, axis: int, keepdims: int, select_last_index: int) -> Any:
    axis = normalize_axis(axis, x.ndim)
    if select_last_index:
        flipped = jnp.flip(x, axis)
        index = x.shape[axis] - 1 - function(flipped, axis=axis, keepdims=bool(keepdims))
    else:
        index = function(x, axis=axis, keepdims=bool(keepdims))
    return index.astype(jnp.int64)


@lowering("ArgMax")
def arg_max(ctx, x, axis=0, keepdims=1, select_last_index=0):
    return _arg_extreme(jnp.argmax, jnp.asarray(x), axis, keepdims, select_last_index)


@lowering("ArgMin")
def arg_min(ctx, x, axis=0, keepdims=1, select_last_index=0):
    return _arg_extreme(jnp.argmin, jnp.asarray(x), axis, keepdims, select_last_index)


def _scan(function: Any, x: Any, axis: Any, exclusive: int, reverse: int, identity: int) -> Any:
    x = jnp.asarray(x)
    axis = normalize_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)
    if reverse:
        x = jnp.flip(x, axis)
    if exclusive:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (1, 0)
        shifted = jnp.pad(x, pad, constant_values=identity)
        x = jnp.take(shifted, jnp.arange(x.shape[axis]), axis=axis)
    result = function(x, axis=axis, dtype=x.dtype)
    return jnp.flip(result, axis) if reverse else result


@lowering("CumSum")
def cum_sum(ctx, x, axis, exclusive=0, reverse=0):
    return _scan(jnp.cumsum, x, axis, exclusive, reverse, 0)


@lowering("CumProd")
def cum_prod(ctx, x, axis, exclusive=0, reverse=0):
    return _scan(jnp.cumprod, x, axis, exclusive, reverse, 1)
