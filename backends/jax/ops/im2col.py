"""Patch-based convolution ops: DeformConv (bilinear sampling at offset taps, then a grouped
contraction) and Col2Im (sum of column blocks back into an image)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import precision
from ..registry import LoweringContext, is_static, lowering, static_ints


def _bilinear_taps(x: Any, rows: Any, cols: Any) -> Any:
    """Sample x [N, G, Cg, H, W] at fractional rows/cols [N, G, K, P] (zero outside the image)."""
    height, width = x.shape[-2:]
    flat = x.reshape(x.shape[:3] + (height * width,))
    top, left = jnp.floor(rows), jnp.floor(cols)
    result = 0
    for row, row_weight in ((top, 1 - (rows - top)), (top + 1, rows - top)):
        for col, col_weight in ((left, 1 - (cols - left)), (left + 1, cols - left)):
            inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
            index = jnp.where(inside, row * width + col, 0).astype(jnp.int32)
            shape = index.shape
            values = jnp.take_along_axis(flat, index.reshape(shape[0], shape[1], 1, -1), axis=-1)
            weight = jnp.where(inside, row_weight * col_weight, 0).reshape(shape[0], shape[1], 1, -1)
            result = result + values * weight.astype(x.dtype)
    return result  # [N, G, Cg, K*P]


@lowering("DeformConv", since=19)
def deform_conv(ctx: LoweringContext, x: Any, w: Any, offset: Any, bias: Any = None, mask: Any = None, *,
                dilations=None, group: int = 1, kernel_shape=None, offset_group: int = 1, pads=None,
                strides=None) -> Any:
    """2-D deformable convolution: each kernel tap reads X bilinearly at its offset position,
    scaled by the optional mask."""
    x, w, offset = jnp.asarray(x), jnp.asarray(w), jnp.asarray(offset)
    if x.ndim != 4:
        raise ctx.fail("only 2-D DeformConv is lowered")
    batch, channels = x.shape[:2]
    kernel = list(kernel_shape or w.shape[2:])
    dilations, strides = list(dilations or [1, 1]), list(strides or [1, 1])
    pads = list(pads or [0, 0, 0, 0])
    out_h, out_w = offset.shape[2:]
    taps = kernel[0] * kernel[1]
    offset = offset.reshape(batch, offset_group, kernel[0], kernel[1], 2, out_h, out_w)
    tap_rows = (np.arange(kernel[0]) * dilations[0])[:, None, None, None]
    tap_cols = (np.arange(kernel[1]) * dilations[1])[None, :, None, None]
    base_rows = (np.arange(out_h) * strides[0] - pads[0])[None, None, :, None]
    base_cols = (np.arange(out_w) * strides[1] - pads[1])[None, None, None, :]
    rows = (base_rows + tap_rows + offset[:, :, :, :, 0]).reshape(batch, offset_group, -1)
    cols = (base_cols + tap_cols + offset[:, :, :, :, 1]).reshape(batch, offset_group, -1)
    grouped = x.reshape(batch, offset_group, channels // offset_group, *x.shape[2:])
    sampled = _bilinear_taps(grouped, rows, cols).reshape(batch, offset_group, channels // offset_group, taps, out_h, out_w)
    if mask is not None:
        sampled = sampled * jnp.asarray(mask, x.dtype).reshape(batch, offset_group, 1, taps, out_h, out_w)
    sampled = sampled.reshape(batch, group, channels // group, taps, out_h, out_w)
    weights = w.reshape(group, w.shape[0] // group, w.shape[1], taps)
    y = precision.einsum(ctx, "ngckhw,gock->ngohw", sampled, weights).reshape(batch, w.shape[0], out_h, out_w)
    if bias is not None:
        y = y + jnp.asarray(bias, y.dtype).reshape(1, -1, 1, 1)
    return y


def _known_shape(ctx: LoweringContext, value: Any, what: str, fallback: tuple | None) -> tuple:
    if is_static(value):
        return static_ints(value)
    if fallback is not None and all(isinstance(d, int) for d in fallback):
        return tuple(fallback)
    raise ctx.fail(f"{what} is computed at run time and the output shape does not fix it")


@lowering("Col2Im", since=18)
def col2im(ctx: LoweringContext, x: Any, image_shape: Any, block_shape: Any, *, dilations=None, pads=None,
           strides=None) -> Any:
    """Sum the column blocks of X [N, C*prod(block), L] into images [N, C, *image_shape]."""
    x = jnp.asarray(x)
    declared = ctx.output_types[0].shape if ctx.output_types[0] is not None else None
    image = _known_shape(ctx, image_shape, "image_shape", tuple(declared)[2:] if declared is not None else None)
    rank = len(image)
    block = _known_shape(ctx, block_shape, "block_shape", _block_from_shapes(x, image, declared, dilations, pads, strides))
    dilations, strides = list(dilations or [1] * rank), list(strides or [1] * rank)
    pads = list(pads or [0] * (2 * rank))
    padded = [image[i] + pads[i] + pads[i + rank] for i in range(rank)]
    blocks = [(padded[i] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(rank)]
    batch = x.shape[0]
    columns = x.reshape(batch, -1, *block, *blocks)
    total = jnp.zeros((batch, columns.shape[1], *padded), x.dtype)
    for tap in np.ndindex(*block):
        values = columns[(slice(None), slice(None), *tap)]
        config = [(0, 0, 0), (0, 0, 0)] + [
            (tap[i] * dilations[i], padded[i] - tap[i] * dilations[i] - ((blocks[i] - 1) * strides[i] + 1), strides[i] - 1)
            for i in range(rank)
        ]
        total = total + lax.pad(values, jnp.zeros((), x.dtype), config)
    crop = tuple(slice(pads[i], pads[i] + image[i]) for i in range(rank))
    return total[(slice(None), slice(None), *crop)]


def _block_from_shapes(x: Any, image: tuple, declared, dilations, pads, strides) -> tuple | None:
    """The unique block shape consistent with X's shape and the declared output, or None."""
    if declared is None or not isinstance(tuple(declared)[1], int):
        return None
    rank = len(image)
    dilations, strides = list(dilations or [1] * rank), list(strides or [1] * rank)
    pads = list(pads or [0] * (2 * rank))
    per_channel = x.shape[1] // tuple(declared)[1]
    candidates = []
    for block in np.ndindex(*([per_channel] * rank)):
        block = tuple(b + 1 for b in block)
        if int(np.prod(block)) != per_channel:
            continue
        counts = [(image[i] + pads[i] + pads[i + rank] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1
                  for i in range(rank)]
        if min(counts) > 0 and int(np.prod(counts)) == x.shape[2]:
            candidates.append(block)
    return candidates[0] if len(candidates) == 1 else None
