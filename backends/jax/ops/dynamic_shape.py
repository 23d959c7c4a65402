"""Ops whose output shape depends on input values: NonZero, Unique, Compress, NonMaxSuppression.
XLA needs static shapes, so these run where their inputs are concrete: at trace time when the inputs
are static, or in the backend's eager (non-jit) mode, which graphs holding them get (see
interpreter.DATA_DEPENDENT_OPS). Under jit with run-time inputs they fail naming the node."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import is_static, lowering
from ._helpers import normalize_axis


def concrete(ctx, value: Any, what: str = "input") -> np.ndarray:
    """The value as numpy when it is known now (static, or an eager jax array); else a clear error."""
    if is_static(value):
        return np.asarray(value)
    if isinstance(value, jax.core.Tracer):
        raise ctx.fail(f"its output shape depends on the values of its {what}, which are only known at run time "
                       f"under jit (graphs holding it run eagerly through compiler.compile)")
    return np.asarray(value)


@lowering("NonZero", since=9)
def non_zero(ctx, x):
    return np.stack(np.nonzero(concrete(ctx, x)), axis=0).astype(np.int64).reshape(np.ndim(x), -1)


@lowering("Compress", since=9)
def compress(ctx, x, condition, axis: int | None = None):
    """Keeps the slices where condition is true; the condition must be concrete, x need not be."""
    kept = np.nonzero(concrete(ctx, condition, "condition").reshape(-1))[0]
    if axis is None:
        return jnp.take(jnp.reshape(x, (-1,)), jnp.asarray(kept))
    return jnp.take(x, jnp.asarray(kept), axis=normalize_axis(axis, jnp.ndim(x)))


@lowering("Unique", since=11)
def unique(ctx, x, axis: int | None = None, sorted: int = 1):  # noqa: A002  (ONNX attribute name)
    """Unique values (or slices along axis) with first indices, inverse indices and counts; with
    sorted=0 they keep the order of first occurrence."""
    values = concrete(ctx, x)
    if axis is not None:
        axis = normalize_axis(axis, values.ndim)
    flat_input = values if axis is not None else values.reshape(-1)
    unique_values, first, inverse, counts = np.unique(flat_input, return_index=True, return_inverse=True,
                                                      return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not sorted:
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        unique_values = np.take(unique_values, order, axis=axis if axis is not None else 0)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return (unique_values.astype(values.dtype), first.astype(np.int64), inverse.astype(np.int64),
            counts.astype(np.int64))


def _corners(boxes: np.ndarray, center_point_box: int) -> np.ndarray:
    """Boxes as [y1, x1, y2, x2] with y1 <= y2 and x1 <= x2."""
    if center_point_box:
        x, y, width, height = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
        return np.stack([y - height / 2, x - width / 2, y + height / 2, x + width / 2], axis=-1)
    y1, x1, y2, x2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], axis=-1)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    top = np.maximum(box[0], others[:, 0])
    left = np.maximum(box[1], others[:, 1])
    bottom = np.minimum(box[2], others[:, 2])
    right = np.minimum(box[3], others[:, 3])
    intersection = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def _select(boxes: np.ndarray, scores: np.ndarray, limit: int, iou_threshold: float, score_threshold: float | None):
    order = np.argsort(-scores, kind="stable")
    if score_threshold is not None:
        order = order[scores[order] > score_threshold]
    chosen: list[int] = []
    for index in order:
        if len(chosen) >= limit:
            break
        if not chosen or np.all(_iou(boxes[index], boxes[chosen]) <= iou_threshold):
            chosen.append(int(index))
    return chosen


@lowering("NonMaxSuppression", since=10)
def non_max_suppression(ctx, boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, center_point_box: int = 0):
    """Greedy per-class suppression; [selected, 3] rows of (batch, class, box index)."""
    corner_boxes = _corners(concrete(ctx, boxes, "boxes").astype(np.float64), center_point_box)
    score_values = concrete(ctx, scores, "scores").astype(np.float64)
    limit = 0 if max_output_boxes_per_class is None else int(concrete(ctx, max_output_boxes_per_class).reshape(-1)[0])
    iou = 0.0 if iou_threshold is None else float(concrete(ctx, iou_threshold).reshape(-1)[0])
    threshold = None if score_threshold is None else float(concrete(ctx, score_threshold).reshape(-1)[0])
    rows = []
    for batch in range(score_values.shape[0]):
        for klass in range(score_values.shape[1]):
            for index in _select(corner_boxes[batch], score_values[batch, klass], limit, iou, threshold):
                rows.append((batch, klass, index))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)
