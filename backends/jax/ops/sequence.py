"""Sequence and Optional ops. A sequence is a Python list of arrays while tracing (its length is
known then); an optional is its value or None. Positions must be known while tracing."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ir import Graph

from ..registry import is_static, lowering
from ._helpers import array_module, normalize_axis


def _position(ctx, position: Any, length: int, *, inserting: bool = False) -> int:
    if not is_static(position):
        raise ctx.fail("the sequence position is computed at run time; it must be known while tracing")
    index = int(np.asarray(position).reshape(-1)[0])
    bound = length + 1 if inserting else length
    if not -bound <= index < bound:
        raise ctx.fail(f"position {index} is out of range for a sequence of length {length}")
    return index + bound if index < 0 else index


@lowering("SequenceEmpty")
def sequence_empty(ctx, dtype: int = 1):
    return []


@lowering("SequenceConstruct")
def sequence_construct(ctx, *tensors):
    return list(tensors)


@lowering("SequenceInsert")
def sequence_insert(ctx, sequence, tensor, position=None):
    items = list(sequence)
    index = len(items) if position is None else _position(ctx, position, len(items), inserting=True)
    items.insert(index, tensor)
    return items


@lowering("SequenceAt")
def sequence_at(ctx, sequence, position):
    return sequence[_position(ctx, position, len(sequence))]


@lowering("SequenceErase")
def sequence_erase(ctx, sequence, position=None):
    items = list(sequence)
    del items[len(items) - 1 if position is None else _position(ctx, position, len(items))]
    return items


@lowering("SequenceLength")
def sequence_length(ctx, sequence):
    return np.array(len(sequence), dtype=np.int64)


@lowering("SplitToSequence")
def split_to_sequence(ctx, tensor, split=None, axis: int = 0, keepdims: int = 1):
    xp = array_module(tensor)
    axis = normalize_axis(axis, np.ndim(tensor))
    size = tensor.shape[axis]
    if split is None:
        pieces = xp.split(tensor, size, axis=axis)
        return [xp.squeeze(p, axis) if not keepdims else p for p in pieces]
    if not is_static(split):
        raise ctx.fail("the split sizes are computed at run time; they must be known while tracing")
    sizes = np.asarray(split).reshape(-1).astype(np.int64)
    if np.ndim(split) == 0:
        chunk = int(sizes[0])
        sizes = np.array([chunk] * (size // chunk) + ([size % chunk] if size % chunk else []), dtype=np.int64)
    return xp.split(tensor, np.cumsum(sizes)[:-1].tolist(), axis=axis)


@lowering("ConcatFromSequence")
def concat_from_sequence(ctx, sequence, axis: int = 0, new_axis: int = 0):
    if not sequence:
        raise ctx.fail("the sequence is empty")
    xp = array_module(*sequence)
    rank = np.ndim(sequence[0]) + (1 if new_axis else 0)
    axis = normalize_axis(axis, rank)
    if new_axis:
        return xp.stack(list(sequence), axis=axis)
    return xp.concatenate(list(sequence), axis=axis)


@lowering("SequenceMap")
def sequence_map(ctx, sequence, *additional, body: Graph):
    """Runs the body once per element while tracing; sequence arguments are read element-wise."""
    run = ctx.lower_subgraph(body)
    results: list[list[Any]] = [[] for _ in body.outputs]
    for index in range(len(sequence)):
        extra = [a[index] if isinstance(a, list) else a for a in additional]
        for store, value in zip(results, run(sequence[index], *extra)):
            store.append(value)
    return tuple(results)


@lowering("Optional")
def optional(ctx, value=None, type=None):
    return value


@lowering("OptionalHasElement")
def optional_has_element(ctx, value=None):
    return np.array(value is not None, dtype=np.bool_)


@lowering("OptionalGetElement")
def optional_get_element(ctx, value):
    if value is None:
        raise ctx.fail("the optional is empty")
    return value

