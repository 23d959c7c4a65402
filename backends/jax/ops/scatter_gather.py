"""Index-driven ops: GatherElements, GatherND, ScatterElements/Scatter, ScatterND (with reductions),
TensorScatter, TopK, OneHot and ReverseSequence. Negative indices are wrapped like ONNX asks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import is_static, lowering
from ._helpers import normalize_axis


def _wrap(indices: Any, size: Any) -> Any:
    indices = jnp.asarray(indices).astype(jnp.int64)
    return jnp.where(indices < 0, indices + size, indices)


@lowering("GatherElements", since=11)
def gather_elements(ctx, data, indices, axis: int = 0):
    axis = normalize_axis(axis, jnp.ndim(data))
    return jnp.take_along_axis(jnp.asarray(data), _wrap(indices, data.shape[axis]), axis=axis)


def _gather_nd(data: Any, indices: Any) -> Any:
    depth = indices.shape[-1]
    index = tuple(_wrap(indices[..., i], data.shape[i]) for i in range(depth))
    return data[index]


@lowering("GatherND", since=11)
def gather_nd(ctx, data, indices, batch_dims: int = 0):
    function = _gather_nd
    for _ in range(batch_dims):
        function = jax.vmap(function)
    return function(jnp.asarray(data), jnp.asarray(indices))


def _update(target: Any, reduction: str) -> Any:
    methods = {"none": target.set, "add": target.add, "mul": target.multiply, "max": target.max, "min": target.min}
    return methods[reduction]


def _element_index(data: Any, indices: Any, axis: int) -> tuple:
    grids = list(jnp.indices(indices.shape, sparse=True))
    grids[axis] = _wrap(indices, data.shape[axis])
    return tuple(grids)


@lowering("ScatterElements", since=11)
def scatter_elements(ctx, data, indices, updates, axis: int = 0, reduction: str = "none"):
    data = jnp.asarray(data)
    axis = normalize_axis(axis, data.ndim)
    index = _element_index(data, jnp.asarray(indices), axis)
    return _update(data.at[index], reduction)(jnp.asarray(updates, data.dtype), mode="drop")


@lowering("Scatter", since=9, until=11)
def scatter(ctx, data, indices, updates, axis: int = 0):
    return scatter_elements(ctx, data, indices, updates, axis=axis)


@lowering("ScatterND", since=11)
def scatter_nd(ctx, data, indices, updates, reduction: str = "none"):
    data = jnp.asarray(data)
    indices = jnp.asarray(indices)
    index = tuple(_wrap(indices[..., i], data.shape[i]) for i in range(indices.shape[-1]))
    return _update(data.at[index], reduction)(jnp.asarray(updates, data.dtype), mode="drop")


@lowering("TensorScatter", since=24)
def tensor_scatter(ctx, past_cache, update, write_indices=None, mode: str = "linear", axis: int = -2):
    """Writes `update` into the cache along `axis`, starting at each batch row's write index."""
    cache = jnp.asarray(past_cache)
    update = jnp.asarray(update)
    axis = normalize_axis(axis, cache.ndim)
    length, capacity = update.shape[axis], cache.shape[axis]
    starts = jnp.zeros((cache.shape[0],), jnp.int64) if write_indices is None else jnp.asarray(write_indices, jnp.int64)
    positions = starts[:, None] + jnp.arange(length, dtype=jnp.int64)[None, :]
    if mode == "circular":
        positions = positions % capacity
    shape = [1] * update.ndim
    shape[0], shape[axis] = cache.shape[0], length
    grid = list(jnp.indices(update.shape, sparse=True))
    grid[axis] = positions.reshape(shape)
    return cache.at[tuple(grid)].set(update, mode="drop")


@lowering("TopK", since=10)
def top_k(ctx, x, k, axis: int = -1, largest: int = 1, sorted: int = 1):
    """The k largest (or smallest) values along `axis`, ties broken by the lower index."""
    if not is_static(k):
        raise ctx.fail("k is computed at run time; it must be known while tracing")
    count = int(np.asarray(k).reshape(-1)[0])
    return _top_k(x, count, axis, largest)


@lowering("TopK", since=1, until=10)
def top_k_v1(ctx, x, axis: int = -1, k: int = 1):
    return _top_k(x, int(k), axis, 1)


def _descending_key(values: Any) -> Any:
    """A key whose ascending order is the descending order of `values`."""
    if jnp.issubdtype(values.dtype, jnp.unsignedinteger) or values.dtype == jnp.bool_:
        return ~values
    return -values


def _top_k(x: Any, count: int, axis: int, largest: int):
    x = jnp.asarray(x)
    axis = normalize_axis(axis, x.ndim)
    moved = jnp.moveaxis(x, axis, -1)
    keys = _descending_key(moved) if largest else moved
    order = jnp.argsort(keys, axis=-1, stable=True)[..., :count]
    values = jnp.take_along_axis(moved, order, axis=-1)
    return jnp.moveaxis(values, -1, axis), jnp.moveaxis(order.astype(jnp.int64), -1, axis)


@lowering("OneHot", since=9)
def one_hot(ctx, indices, depth, values, axis: int = -1):
    if not is_static(depth):
        raise ctx.fail("depth is computed at run time; it must be known while tracing")
    size = int(np.asarray(depth).reshape(-1)[0])
    indices = jnp.asarray(indices)
    wrapped = jnp.where(indices < 0, indices + size, indices).astype(jnp.int64)
    hot = wrapped[..., None] == jnp.arange(size, dtype=jnp.int64)
    values = jnp.asarray(values)
    result = jnp.where(hot, values[1], values[0])
    return jnp.moveaxis(result, -1, normalize_axis(axis, indices.ndim + 1))


@lowering("ReverseSequence", since=10)
def reverse_sequence(ctx, x, sequence_lens, batch_axis: int = 1, time_axis: int = 0):
    """Reverses the first sequence_lens[b] steps along time_axis for every batch entry b."""
    x = jnp.asarray(x)
    steps = jnp.arange(x.shape[time_axis], dtype=jnp.int64)
    lengths = jnp.asarray(sequence_lens, jnp.int64)
    source = jnp.where(steps[None, :] < lengths[:, None], lengths[:, None] - 1 - steps[None, :], steps[None, :])
    shape = [1] * x.ndim
    shape[batch_axis], shape[time_axis] = x.shape[batch_axis], x.shape[time_axis]
    order = source if batch_axis < time_axis else source.T
    index = jnp.broadcast_to(order.reshape(shape), x.shape)
    return jnp.take_along_axis(x, index, axis=time_axis)

