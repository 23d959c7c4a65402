"""Tensor rearrangement: Pad, DepthToSpace, SpaceToDepth, Trilu, CenterCropPad."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..registry import lowering
from ._helpers import normalize_axis, optional_ints, static_ints

_PAD_MODES = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad_pairs(rank: int, pads: tuple, axes: tuple | None) -> list[tuple[int, int]]:
    axes = tuple(normalize_axis(a, rank) for a in axes) if axes is not None else tuple(range(rank))
    pairs = [(0, 0)] * rank
    for i, axis in enumerate(axes):
        pairs[axis] = (pads[i], pads[i + len(axes)])
    return pairs


@lowering("Pad")
def pad(ctx, x, pads_input=None, constant_value=None, axes_input=None, mode="constant", pads=None, value=0.0):
    x = jnp.asarray(x)
    pads = static_ints(pads_input) if pads_input is not None else tuple(pads)
    pairs = _pad_pairs(x.ndim, pads, optional_ints(axes_input))
    if mode == "constant":
        fill = value if constant_value is None else jnp.asarray(constant_value).reshape(())
        return lax.pad(x, jnp.asarray(fill, x.dtype), [(low, high, 0) for low, high in pairs])
    crop = tuple(slice(max(-low, 0), x.shape[i] - max(-high, 0)) for i, (low, high) in enumerate(pairs))
    x = x[crop]
    return jnp.pad(x, [(max(low, 0), max(high, 0)) for low, high in pairs], mode=_PAD_MODES[mode])


@lowering("DepthToSpace")
def depth_to_space(ctx, x, blocksize, mode="DCR"):
    batch, channels, height, width = x.shape
    block = blocksize
    if mode == "DCR":
        y = x.reshape(batch, block, block, channels // block**2, height, width).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(batch, channels // block**2, block, block, height, width).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(batch, channels // block**2, height * block, width * block)


@lowering("SpaceToDepth")
def space_to_depth(ctx, x, blocksize, mode="DCR"):
    batch, channels, height, width = x.shape
    block = blocksize
    order = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    y = x.reshape(batch, channels, height // block, block, width // block, block).transpose(order)
    return y.reshape(batch, channels * block**2, height // block, width // block)


@lowering("Trilu")
def trilu(ctx, x, k=None, upper=1):
    offset = int(np.asarray(k).reshape(-1)[0]) if k is not None else 0
    return jnp.triu(x, offset) if upper else jnp.tril(x, offset)


@lowering("CenterCropPad")
def center_crop_pad(ctx, x, shape, axes=None):
    x = jnp.asarray(x)
    target = static_ints(shape)
    axes = [normalize_axis(a, x.ndim) for a in axes] if axes is not None else list(range(x.ndim))
    for axis, size in zip(axes, target):
        current = x.shape[axis]
        if current > size:
            start = (current - size) // 2
            x = lax.slice_in_dim(x, start, start + size, axis=axis)
        elif current < size:
            before = (size - current) // 2
            pairs = [(0, 0)] * x.ndim
            pairs[axis] = (before, size - current - before)
            x = jnp.pad(x, pairs)
    return x
