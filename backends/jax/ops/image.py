"""Geometry ops: GridSample (nearest/linear/cubic, zeros/border/reflection padding, N-d) and
AffineGrid. Sampling is vectorised: per output point, every interpolation tap is gathered from the
flattened spatial axes and weighted."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import is_static, lowering

CUBIC_A = -0.75
_MODES = {"bilinear": "linear", "bicubic": "cubic"}


def _reflect(x: Any, low: float, high: float) -> Any:
    """Reflects coordinates by the nearer border until they fall inside [low, high]."""
    span = high - low
    below, above = low - x, x - high
    n_below, n_above = jnp.floor(below / span), jnp.floor(above / span)
    r_below, r_above = below - n_below * span, above - n_above * span
    from_below = jnp.where(n_below % 2 == 0, low + r_below, high - r_below)
    from_above = jnp.where(n_above % 2 == 0, high - r_above, low + r_above)
    return jnp.where(x < low, from_below, jnp.where(x > high, from_above, x))


def _cubic_weights(t: Any) -> list[Any]:
    a = CUBIC_A
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # noqa: E731
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # noqa: E731
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _axis_taps(coordinate: Any, mode: str) -> list[tuple[Any, Any]]:
    """(integer index, weight) pairs along one axis for every output point."""
    if mode == "nearest":
        return [(coordinate.astype(jnp.int64), jnp.ones_like(coordinate))]
    base = jnp.floor(coordinate)
    t = coordinate - base
    base = base.astype(jnp.int64)
    if mode == "linear":
        return [(base, 1 - t), (base + 1, t)]
    return [(base + offset, weight) for offset, weight in zip((-1, 0, 1, 2), _cubic_weights(t))]


def _tap_index(index: Any, size: int, padding_mode: str, low: float, high: float) -> tuple[Any, Any]:
    """A tap index made valid for the padding mode, and whether it reads real data (zeros mode)."""
    if padding_mode == "border":
        return jnp.clip(index, 0, size - 1), None
    if padding_mode == "reflection":
        reflected = _reflect(index.astype(jnp.float64), low, high).astype(jnp.int64)
        return jnp.clip(reflected, 0, size - 1), None
    valid = (index >= 0) & (index < size)
    return jnp.clip(index, 0, size - 1), valid


@lowering("GridSample", since=16)
def grid_sample(ctx, x, grid, align_corners: int = 0, mode: str = "linear", padding_mode: str = "zeros"):
    x = jnp.asarray(x)
    grid = jnp.asarray(grid)
    mode = _MODES.get(mode, mode)
    dims = tuple(x.shape[2:])
    rank = len(dims)
    compute = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    coordinates = []
    for axis, size in enumerate(dims):
        normalized = grid[..., rank - 1 - axis].astype(compute)
        value = (normalized + 1) / 2 * (size - 1) if align_corners else ((normalized + 1) * size - 1) / 2
        if mode == "nearest":
            value = jnp.round(value)
        low, high = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
        if padding_mode == "border":
            value = jnp.where((value < low) | (value > high), jnp.clip(value, 0, size - 1), value)
        elif padding_mode == "reflection":
            value = _reflect(value, low, high)
        coordinates.append((value, size, low, high))
    strides = np.cumprod((1,) + dims[::-1])[:-1][::-1]
    flat = x.reshape(x.shape[0], x.shape[1], -1).astype(compute)
    points = grid.shape[1:-1]
    result = jnp.zeros((x.shape[0], x.shape[1], int(np.prod(points))), compute)
    per_axis = [_axis_taps(value, mode) for value, *_ in coordinates]
    for combination in itertools.product(*per_axis):
        flat_index = 0
        weight = 1
        for (index, tap_weight), (_, size, low, high), stride in zip(combination, coordinates, strides):
            index, valid = _tap_index(index, size, padding_mode, low, high)
            flat_index = flat_index + index * int(stride)
            weight = weight * (tap_weight if valid is None else jnp.where(valid, tap_weight, 0))
        flat_index = flat_index.reshape(x.shape[0], 1, -1)
        gathered = jnp.take_along_axis(flat, jnp.broadcast_to(flat_index, (x.shape[0], x.shape[1], flat_index.shape[-1])), axis=2)
        result = result + gathered * jnp.asarray(weight, compute).reshape(x.shape[0], 1, -1)
    return result.reshape((x.shape[0], x.shape[1]) + tuple(points)).astype(x.dtype)


def _base_coordinates(size: int, align_corners: int) -> np.ndarray:
    if align_corners:
        return np.linspace(-1.0, 1.0, size) if size > 1 else np.array([-1.0])
    return (np.arange(size, dtype=np.float64) * 2 + 1) / size - 1


@lowering("AffineGrid", since=20)
def affine_grid(ctx, theta, size, align_corners: int = 0):
    """Normalised sampling coordinates [N, *spatial, r] of the affine maps theta [N, r, r + 1]."""
    if not is_static(size):
        raise ctx.fail("the output size is computed at run time; it must be known while tracing")
    spatial: Sequence[int] = [int(v) for v in np.asarray(size).reshape(-1)[2:]]
    axes = [_base_coordinates(n, align_corners) for n in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")  # one array per spatial axis, outermost first
    columns = [m.reshape(-1) for m in mesh[::-1]] + [np.ones(int(np.prod(spatial)))]
    base = np.stack(columns, axis=1)  # [points, r + 1] as (x, y[, z], 1)
    theta = jnp.asarray(theta)
    grid = jnp.einsum("pk,nck->npc", jnp.asarray(base, theta.dtype), theta)
    return grid.reshape((theta.shape[0], *spatial, len(spatial)))


def _roi_axis(start: Any, extent: Any, pooled: int, grid: int, size: int):
    """Per roi, the bilinear taps along one axis at every sample point: (low, high, low weight,
    high weight), each [rois, pooled * grid]; samples beyond [-1, size] get zero weights."""
    bins = jnp.arange(pooled)[:, None]
    steps = (jnp.arange(grid)[None, :] + 0.5) / grid
    coordinate = start[:, None] + ((bins + steps).reshape(-1)[None, :]) * (extent / pooled)[:, None]
    valid = (coordinate >= -1.0) & (coordinate <= size)
    coordinate = jnp.maximum(coordinate, 0.0)
    low = jnp.floor(coordinate).astype(jnp.int64)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    coordinate = jnp.where(at_edge, low.astype(coordinate.dtype), coordinate)
    fraction = coordinate - low
    return low, high, jnp.where(valid, 1 - fraction, 0.0), jnp.where(valid, fraction, 0.0)


@lowering("RoiAlign", since=10)
def roi_align(ctx, x, rois, batch_indices, coordinate_transformation_mode: str = "half_pixel", mode: str = "avg",
              output_height: int = 1, output_width: int = 1, sampling_ratio: int = 0, spatial_scale: float = 1.0):
    """Average (or max) of bilinear samples on a sampling_ratio x sampling_ratio grid per output bin."""
    if sampling_ratio <= 0:
        raise ctx.fail("sampling_ratio 0 (an adaptive, roi-dependent sample count) needs static shapes; set it > 0")
    if ctx.opset < 16:
        coordinate_transformation_mode = "output_half_pixel"
    x = jnp.asarray(x)
    rois = jnp.asarray(rois, x.dtype) * spatial_scale - (0.5 if coordinate_transformation_mode == "half_pixel" else 0.0)
    height, width = x.shape[2], x.shape[3]
    extent_w, extent_h = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    if coordinate_transformation_mode != "half_pixel":
        extent_w, extent_h = jnp.maximum(extent_w, 1.0), jnp.maximum(extent_h, 1.0)
    y_taps = _roi_axis(rois[:, 1], extent_h, output_height, sampling_ratio, height)
    x_taps = _roi_axis(rois[:, 0], extent_w, output_width, sampling_ratio, width)
    images = x[jnp.asarray(batch_indices).astype(jnp.int64)]  # [rois, C, H, W]
    pick = jax.vmap(lambda image, rows, columns: image[:, rows[:, None], columns[None, :]])
    terms = []
    for rows, row_weight in ((y_taps[0], y_taps[2]), (y_taps[1], y_taps[3])):
        for columns, column_weight in ((x_taps[0], x_taps[2]), (x_taps[1], x_taps[3])):
            weight = row_weight[:, None, :, None] * column_weight[:, None, None, :]
            terms.append(pick(images, rows, columns) * weight.astype(x.dtype))
    shape = (images.shape[0], images.shape[1], output_height, sampling_ratio, output_width, sampling_ratio)
    if mode == "max":
        return jnp.max(jnp.max(jnp.stack(terms), axis=0).reshape(shape), axis=(3, 5))
    return jnp.mean(sum(terms).reshape(shape), axis=(3, 5))
