"""Resize (all modes, coordinate transformations, nearest modes, antialias, keep_aspect_ratio_policy,
axes) and Upsample. Interpolation is separable: per resized axis, the source taps and their weights
are computed in numpy while tracing (sizes are static), then applied as a gather or a small matmul."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..registry import is_static, lowering
from ._helpers import normalize_axis


def _taps(x_original: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first tap index, fractional offset) per output: the window starts left of x_original."""
    floor = np.floor(x_original)
    return floor.astype(np.int64), x_original - floor


def _nearest_weights(ratio: np.ndarray, nearest_mode: str) -> np.ndarray:
    exact = ratio == 1.0
    if nearest_mode == "round_prefer_ceil":
        right = ratio >= 0.5
    elif nearest_mode == "floor":
        right = np.zeros_like(ratio, dtype=bool)
    elif nearest_mode == "ceil":
        right = np.ones_like(ratio, dtype=bool)
    else:  # round_prefer_floor
        right = ratio > 0.5
    right = right | exact
    return np.stack([~right, right], axis=1).astype(np.float64)


def _cubic_kernel(distance: np.ndarray, a: float) -> np.ndarray:
    d = np.abs(distance)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _filter_weights(ratio: np.ndarray, scale: float, mode: str, cubic_a: float, antialias: bool) -> np.ndarray:
    """Weights [outputs, taps] of the linear/cubic filter; antialias stretches it when shrinking."""
    support = 1 if mode == "linear" else 2
    stretch = min(scale, 1.0) if antialias else 1.0
    start = int(math.floor(-support / stretch) + 1)
    offsets = np.arange(start, 2 - start)
    distance = (offsets[None, :] - ratio[:, None]) * stretch
    if mode == "linear":
        weights = np.clip(1 - np.abs(distance), 0, 1)
    else:
        weights = _cubic_kernel(distance, cubic_a)
    if antialias:
        weights = weights / weights.sum(axis=1, keepdims=True)
    return weights


def _source_coordinates(mode: str, outputs: int, inputs: int, scale: float, roi: Sequence[float] | None):
    """The input coordinate of every output position, and the tf_crop_and_resize out-of-range mask."""
    y = np.arange(outputs, dtype=np.float64)
    width = scale * inputs
    outside = None
    if mode == "align_corners":
        x = np.zeros(outputs) if width == 1 else y * (inputs - 1) / (width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        low, high = roi
        x = np.full(outputs, (high - low) * (inputs - 1) / 2) if width == 1 else y * (high - low) * (inputs - 1) / (width - 1)
        x = x + low * (inputs - 1)
        outside = (x < 0) | (x > inputs - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(outputs, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = inputs / 2 * (1 - outputs / width)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    else:
        raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")
    return x, outside


def axis_plan(inputs: int, outputs: int, scale: float, options: dict[str, Any], roi: Sequence[float] | None):
    """(indices [out, taps] clamped into the input, weights [out, taps], out-of-range mask or None)."""
    x, outside = _source_coordinates(options["coordinate_transformation_mode"], outputs, inputs, scale, roi)
    floor, fraction = _taps(x)
    ratio = np.where(fraction == 0, 1.0, fraction)
    mode = options["mode"]
    if mode == "nearest":
        weights = _nearest_weights(ratio, options["nearest_mode"])
    else:
        weights = _filter_weights(ratio, scale, mode, options["cubic_coeff_a"], options["antialias"])
    taps = weights.shape[1]
    if taps % 2 == 0:
        start = floor - taps // 2 + np.where(fraction == 0, 0, 1)
    else:
        start = floor - (taps - 1) // 2 + np.where(fraction <= 0.5, 0, 1)
    indices = start[:, None] + np.arange(taps)[None, :]
    if options["exclude_outside"]:
        weights = np.where((indices < 0) | (indices >= inputs), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(indices, 0, inputs - 1), weights, outside


def _apply_axis(x: Any, axis: int, indices: np.ndarray, weights: np.ndarray, outside, extrapolation: float,
                nearest: bool) -> Any:
    if nearest:
        chosen = indices[np.arange(len(indices)), np.argmax(weights, axis=1)]
        result = jnp.take(x, jnp.asarray(chosen), axis=axis)
    else:
        matrix = np.zeros((len(indices), x.shape[axis]), dtype=np.float64)
        np.add.at(matrix, (np.repeat(np.arange(len(indices)), indices.shape[1]), indices.reshape(-1)),
                  weights.reshape(-1))
        moved = jnp.moveaxis(x, axis, -1)
        result = jnp.moveaxis(jnp.matmul(moved, jnp.asarray(matrix.T, x.dtype), precision=lax.Precision.HIGHEST), -1, axis)
    if outside is not None and outside.any():
        shape = [1] * x.ndim
        shape[axis] = len(outside)
        result = jnp.where(jnp.asarray(outside.reshape(shape)), jnp.asarray(extrapolation, result.dtype), result)
    return result


def _static_floats(ctx, value: Any, what: str) -> list[float] | None:
    if isinstance(value, (list, tuple)):
        value = np.asarray(value, dtype=np.float64)
    if value is None or (is_static(value) and np.size(value) == 0):
        return None
    if not is_static(value):
        raise ctx.fail(f"its {what} are computed at run time; they must be known while tracing")
    return [float(v) for v in np.asarray(value).reshape(-1)]


def _targets(shape: Sequence[int], axes: list[int], scales, sizes, policy: str):
    """Per-axis (scale, output size) for the resized axes, like the ONNX reference."""
    if sizes is not None:
        scales = [sizes[i] / shape[a] for i, a in enumerate(axes)]
        if policy != "stretch":
            scale = min(scales) if policy == "not_larger" else max(scales)
            return [scale] * len(axes), [int(scale * shape[a] + 0.5) for a in axes]
        return scales, [int(s) for s in sizes]
    return scales, [int(s * shape[a]) for s, a in zip(scales, axes)]


def resize_array(ctx, x, scales, sizes, roi, options: dict[str, Any], axes: Sequence[int] | None) -> Any:
    """Resize x given static scales or sizes (over `axes`, all axes when None)."""
    rank = jnp.ndim(x)
    axes = [normalize_axis(a, rank) for a in axes] if axes else list(range(rank))
    if any(not isinstance(x.shape[a], int) for a in axes):
        raise ctx.fail("a resized axis has a symbolic size")
    axis_scales, axis_sizes = _targets(x.shape, axes, scales, sizes, options["keep_aspect_ratio_policy"])
    dtype = jnp.asarray(x).dtype
    result = jnp.asarray(x, dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32)
    for position, axis in enumerate(axes):
        axis_roi = None if roi is None else (roi[position], roi[len(axes) + position])
        trivial_roi = axis_roi is None or (math.isclose(axis_roi[0], 0.0) and math.isclose(axis_roi[1], 1.0))
        if math.isclose(axis_scales[position], 1.0) and axis_sizes[position] == x.shape[axis] and trivial_roi:
            continue
        indices, weights, outside = axis_plan(x.shape[axis], axis_sizes[position], axis_scales[position], options, axis_roi)
        result = _apply_axis(result, axis, indices, weights, outside, options["extrapolation_value"],
                             options["mode"] == "nearest")
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        result = jnp.clip(jnp.round(result), info.min, info.max)
    return result.astype(dtype)


def _options(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor",
             cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, antialias=0,
             keep_aspect_ratio_policy="stretch") -> dict[str, Any]:
    return {"mode": mode, "coordinate_transformation_mode": coordinate_transformation_mode,
            "nearest_mode": nearest_mode, "cubic_coeff_a": float(cubic_coeff_a), "exclude_outside": bool(exclude_outside),
            "extrapolation_value": float(extrapolation_value), "antialias": bool(antialias),
            "keep_aspect_ratio_policy": keep_aspect_ratio_policy}


@lowering("Resize", since=11)
def resize(ctx, x, roi=None, scales=None, sizes=None, axes=None, **attributes):
    options = _options(**attributes)
    if options["mode"] == "nearest" and options["antialias"]:
        raise ctx.fail("antialias is not defined for mode 'nearest'")
    roi_values = _static_floats(ctx, roi, "roi") if options["coordinate_transformation_mode"] == "tf_crop_and_resize" else None
    rank = jnp.ndim(x)
    if roi_values is not None and not axes and len(roi_values) != 2 * rank:
        raise ctx.fail(f"roi has {len(roi_values)} values for a rank-{rank} input")
    size_values = _static_floats(ctx, sizes, "sizes")
    scale_values = None if size_values is not None else _static_floats(ctx, scales, "scales")
    if size_values is None and scale_values is None:
        raise ctx.fail("neither scales nor sizes is given")
    return resize_array(ctx, x, scale_values, size_values, roi_values, options, axes)


def _legacy(ctx, x, scale_values: list[float], mode: str) -> Any:
    options = _options(mode="linear" if mode in ("linear", "bilinear") else "nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return resize_array(ctx, x, scale_values, None, None, options, None)


@lowering("Resize", since=10, until=11)
def resize_v10(ctx, x, scales, mode: str = "nearest"):
    return _legacy(ctx, x, _static_floats(ctx, scales, "scales"), mode)


@lowering("Upsample", since=7, until=10)
def upsample(ctx, x, scales=None, mode: str = "nearest"):
    """Upsample-7 takes scales as an attribute, Upsample-9 as an input."""
    return _legacy(ctx, x, _static_floats(ctx, scales, "scales"), mode)
