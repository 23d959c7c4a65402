"""Shape and layout ops: Shape, Size, Identity, Reshape, Flatten, Transpose, Squeeze, Unsqueeze,
Concat, Split, Slice, Gather, Expand, Tile. Each runs on numpy when its inputs are static (shape
chains resolve at trace time, symbolic dims included) and on jax.numpy otherwise."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from .. import symbolic_bounds
from ..registry import lowering
from ._helpers import all_static, array_module, lowering_and_static, normalize_axes, normalize_axis, optional_ints, static_ints


def _module_for(x: Any, dims: tuple) -> Any:
    """numpy for a static input reshaped to concrete dims; jax.numpy when either is symbolic."""
    concrete = all(isinstance(d, (int, np.integer)) for d in dims)
    return np if concrete and all_static(x) and np.asarray(x).dtype != object else array_module(x) if concrete else jnp


def shape_array(dims: Any) -> np.ndarray:
    """Dims as an int64 array, or an object array when some are symbolic."""
    dims = tuple(dims)
    if all(isinstance(d, (int, np.integer)) for d in dims):
        return np.asarray(dims, dtype=np.int64).reshape(len(dims))
    array = np.empty(len(dims), dtype=object)
    array[:] = list(dims)
    return array


@lowering("Shape")
def shape(ctx, x, start=0, end=None):
    dims = tuple(np.shape(x))
    rank = len(dims)
    start = min(max(normalize_axis(start, rank), 0), rank)
    end = rank if end is None else min(max(normalize_axis(end, rank), 0), rank)
    return shape_array(dims[start:end])


@lowering("Size")
def size(ctx, x):
    count = math.prod(np.shape(x))
    return np.asarray(count, dtype=np.int64) if isinstance(count, int) else np.asarray(count, dtype=object)


@lowering_and_static("Identity")
def identity(ctx, x):
    return x


def reshaped_dims(data_shape: tuple, shape: Any, allowzero: int = 0) -> tuple:
    """The dims ONNX Reshape gives data of `data_shape` for its (trace-time static) `shape` input."""
    return _infer_minus_one(data_shape, _reshape_target(data_shape, static_ints(shape), allowzero))


def _reshape_target(data_shape: tuple, target: tuple, allowzero: int) -> tuple:
    if allowzero:
        return target
    return tuple(data_shape[i] if d == 0 and isinstance(d, int) else d for i, d in enumerate(target))


def _infer_minus_one(data_shape: tuple, target: tuple) -> tuple:
    if -1 not in target:
        return target
    known = math.prod(d for d in target if not (isinstance(d, int) and d == -1))
    missing = math.prod(data_shape) // known
    return tuple(missing if isinstance(d, int) and d == -1 else d for d in target)


@lowering_and_static("Reshape")
def reshape(ctx, data, shape, allowzero=0):
    target = _reshape_target(tuple(np.shape(data)), static_ints(shape), allowzero)
    if _module_for(data, target) is np:
        return np.reshape(data, _infer_minus_one(np.shape(data), target))
    return jnp.reshape(data, target)


@lowering_and_static("Flatten")
def flatten(ctx, x, axis=1):
    dims = tuple(np.shape(x))
    axis = normalize_axis(axis, len(dims))
    target = (math.prod(dims[:axis]), math.prod(dims[axis:]))
    return array_module(x).reshape(x, target)


@lowering_and_static("Transpose")
def transpose(ctx, x, perm=None):
    return array_module(x).transpose(x, None if perm is None else tuple(perm))


@lowering_and_static("Squeeze")
def squeeze(ctx, x, axes_input=None, axes=None):
    dims = tuple(np.shape(x))
    chosen = optional_ints(axes_input) if axes_input is not None else optional_ints(axes)
    if chosen is None:
        chosen = tuple(i for i, d in enumerate(dims) if isinstance(d, int) and d == 1)
    return array_module(x).reshape(x, tuple(d for i, d in enumerate(dims) if i not in normalize_axes(chosen, len(dims))))


@lowering_and_static("Unsqueeze")
def unsqueeze(ctx, x, axes_input=None, axes=None):
    chosen = optional_ints(axes_input) if axes_input is not None else optional_ints(axes)
    dims = list(np.shape(x))
    for axis in normalize_axes(chosen, len(dims) + len(chosen)):
        dims.insert(axis, 1)
    return array_module(x).reshape(x, tuple(dims))


@lowering_and_static("Concat")
def concat(ctx, *values, axis):
    present = [v for v in values if v is not None]
    xp = array_module(*present)
    rank = np.ndim(present[0])
    return xp.concatenate([xp.asarray(v) for v in present], axis=normalize_axis(axis, rank))


def _split_sizes(length: int, parts: int) -> list[int]:
    chunk = -(-length // parts)
    sizes = [chunk] * (length // chunk) if chunk else [0] * parts
    if len(sizes) < parts:
        sizes.append(length - chunk * len(sizes))
    return sizes + [0] * (parts - len(sizes))


@lowering_and_static("Split")
def split(ctx, x, split_input=None, axis=0, split=None, num_outputs=None):
    axis = normalize_axis(axis, np.ndim(x))
    sizes = optional_ints(split_input) if split_input is not None else optional_ints(split)
    if not sizes:
        sizes = _split_sizes(np.shape(x)[axis], num_outputs or ctx.num_outputs())
    offsets = np.cumsum([0, *sizes]).tolist()
    xp = array_module(x)
    return tuple(xp.take(x, xp.arange(offsets[i], offsets[i + 1]), axis=axis) if xp is np
                 else jnp.asarray(x)[(slice(None),) * axis + (slice(offsets[i], offsets[i + 1]),)]
                 for i in range(len(sizes)))


@lowering_and_static("Slice")
def slice_(ctx, x, starts_input=None, ends_input=None, axes_input=None, steps_input=None, starts=None, ends=None, axes=None):
    starts = optional_ints(starts_input) if starts_input is not None else optional_ints(starts)
    ends = optional_ints(ends_input) if ends_input is not None else optional_ints(ends)
    axes = optional_ints(axes_input) if axes_input is not None else optional_ints(axes)
    steps = optional_ints(steps_input) if steps_input is not None else None
    rank = np.ndim(x)
    axes = tuple(normalize_axis(a, rank) for a in axes) if axes is not None else tuple(range(len(starts)))
    steps = steps or (1,) * len(starts)
    index = [slice(None)] * rank
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis] = slice(start, end, step)
    # a bound may be a symbolic dim under jax.export (x[:, :seq] of a constant buffer): numpy cannot
    # slice with it, jax can (the result then has a symbolic shape)
    symbolic = any(not isinstance(bound, (int, np.integer)) for axis in axes for bound in
                   (index[axis].start, index[axis].stop, index[axis].step) if bound is not None)
    if all_static(x) and not (symbolic and np.asarray(x).dtype != object):
        return np.asarray(x)[tuple(index)]
    for axis in axes:
        stop, step, size = index[axis].stop, index[axis].step, np.shape(x)[axis]
        forward = step is None or (isinstance(step, (int, np.integer)) and step > 0)
        if forward and stop is not None and not isinstance(stop, (int, np.integer)) and isinstance(size, (int, np.integer)):
            symbolic_bounds.at_most(stop, size)  # the slice has `stop` rows only if stop <= size
    return jnp.asarray(x)[tuple(index)]


@lowering_and_static("Gather")
def gather(ctx, x, indices, axis=0):
    xp = array_module(x, indices)
    axis = normalize_axis(axis, np.ndim(x))
    indices = xp.asarray(indices)
    if xp is np:
        return np.take(np.asarray(x), indices.astype(np.int64), axis=axis)
    length = np.shape(x)[axis]
    indices = jnp.where(indices < 0, indices + length, indices)
    return jnp.take(x, indices, axis=axis, mode="clip")


def broadcast_dims(left: tuple, right: tuple) -> tuple:
    """Numpy broadcasting of two shapes that may hold symbolic dims."""
    rank = max(len(left), len(right))
    left = (1,) * (rank - len(left)) + tuple(left)
    right = (1,) * (rank - len(right)) + tuple(right)
    out = []
    for a, b in zip(left, right):
        if isinstance(a, int) and a == 1:
            out.append(b)
        elif isinstance(b, int) and b == 1:
            out.append(a)
        else:
            out.append(a)
    return tuple(out)


@lowering_and_static("Expand")
def expand(ctx, x, shape):
    target = broadcast_dims(tuple(np.shape(x)), static_ints(shape))
    return _module_for(x, target).broadcast_to(x, target)


@lowering_and_static("Tile")
def tile(ctx, x, repeats, tiles=None, axis=None):
    repeats = static_ints(repeats)
    return _module_for(x, repeats).tile(x, repeats)
