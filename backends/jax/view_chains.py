"""The view chains of native_rewrites.py: replayed as ops on a traced tensor, or on a dummy numpy
array of the base's shape to learn whether the result is a strided view of the base and with
which element strides and offset (numpy keeps a reshape a view exactly when strides allow)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_DUMMY_ELEMENTS = 1 << 28  # a base larger than this is not analysed (the dummy is one byte per element)


def replay(xp: Any, array: Any, chain: list) -> Any:
    """`array` after the chain's steps, with numpy or jax.numpy (`xp`)."""
    for step in chain:
        kind = step[0]
        if kind == "transpose":
            array = xp.transpose(array, step[1])
        elif kind == "reshape":
            target = [array.shape[i] if d == 0 else d for i, d in enumerate(step[1])]
            array = xp.reshape(array, target)
        elif kind == "squeeze":
            axes = step[1] if step[1] is not None else [i for i, d in enumerate(array.shape) if d == 1]
            array = xp.squeeze(array, axis=tuple(a % array.ndim for a in axes))
        elif kind == "unsqueeze":
            rank = array.ndim + len(step[1])
            for axis in sorted(a % rank for a in step[1]):
                array = xp.expand_dims(array, axis)
        elif kind == "gather":
            axis = step[1] % array.ndim
            array = array[(slice(None),) * axis + (step[2] % array.shape[axis],)]
        elif kind == "slice":  # a Gather of one index kept as an axis; the index may count from the end
            axis = step[1] % array.ndim
            start = step[2] % array.shape[axis]
            array = array[(slice(None),) * axis + (slice(start, start + step[3]),)]
        elif kind == "split":
            axis, index, parts = step[1] % array.ndim, step[2], step[3]
            if array.shape[axis] % parts:
                raise ValueError("uneven split")
            size = array.shape[axis] // parts
            array = array[(slice(None),) * axis + (slice(index * size, (index + 1) * size),)]
        else:
            raise ValueError(f"unknown view step {kind}")
    return array


def strided_view(base_shape: tuple[int, ...], chain: list) -> tuple[tuple[int, ...], tuple[int, ...], int] | None:
    """(shape, element strides, element offset) of the chain's result as a view of a contiguous
    base of `base_shape`, or None where the chain copies (or the base is too big to analyse)."""
    if math.prod(base_shape) > MAX_DUMMY_ELEMENTS:
        return None
    base = np.empty(base_shape, np.uint8)
    try:
        result = replay(np, base, chain)
    except ValueError:
        return None
    if result.size and not np.shares_memory(result, base):
        return None
    offset = result.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return tuple(result.shape), tuple(result.strides), int(offset)


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a row-major array of `shape`."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))
