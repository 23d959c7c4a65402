"""Symbolic values of small integer shape tensors: what Shape/Gather/Slice/Concat/... chains compute,
with each element an int or a dimension token (a symbol name, or a unique token for an unknown dim)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.ir import Value

# An element is an int, a symbol name (str) or ("?", id(value), axis) for an unnamed unknown dim.
Element = Any
MAX_ELEMENTS = 64
MAX_DEPTH = 32


@dataclass(frozen=True)
class SymbolicVector:
    """A rank-0 or rank-1 integer tensor whose elements are ints or dimension tokens."""

    elements: tuple[Element, ...]
    scalar: bool = False

    @property
    def is_static(self) -> bool:
        return all(isinstance(e, int) for e in self.elements)

    def array(self) -> np.ndarray:
        values = np.array(self.elements, dtype=np.int64)
        return values.reshape(()) if self.scalar else values


def dimension_tokens(value: Value) -> tuple[Element, ...] | None:
    """The dims of `value` as tokens: ints, symbol names, or a unique token per unknown dim."""
    shape = value.shape
    if shape is None:
        return None
    return tuple(d if d is not None else ("?", id(value), i) for i, d in enumerate(shape))


def symbolic_vector(value: Value | None, depth: int = 0) -> SymbolicVector | None:
    """What `value` holds, symbolically, when it is a small integer shape computation; else None."""
    if value is None or depth > MAX_DEPTH:
        return None
    tensor = value.const_value
    if tensor is not None and (not tensor.dtype.is_integer or tensor.size > MAX_ELEMENTS):
        return None  # decided from the type: a weight is never read here
    constant = value.constant()
    if constant is not None:
        return _from_constant(np.asarray(constant))
    node = value.producer
    if node is None or node.domain or value.index != 0:
        return None
    handler = _HANDLERS.get(node.op_type)
    if handler is None:
        return None
    try:
        return handler(node, depth + 1)
    except (ValueError, IndexError, TypeError):
        return None


def _from_constant(array: np.ndarray) -> SymbolicVector | None:
    if array.dtype.kind not in "iu" or array.ndim > 1 or array.size > MAX_ELEMENTS:
        return None
    return SymbolicVector(tuple(int(v) for v in array.reshape(-1)), array.ndim == 0)


def _input(node, index: int, depth: int) -> SymbolicVector | None:
    return symbolic_vector(node.inputs[index] if index < len(node.inputs) else None, depth)


def _shape(node, depth: int) -> SymbolicVector | None:
    tokens = dimension_tokens(node.inputs[0])
    if tokens is None:
        return None
    rank = len(tokens)
    start, end = node.attr("start", 0), node.attr("end", None)
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = rank if end is None else max(0, min(rank, end + rank if end < 0 else end))
    return SymbolicVector(tokens[start:end])


def _gather(node, depth: int) -> SymbolicVector | None:
    data, indices = _input(node, 0, depth), _input(node, 1, depth)
    if data is None or indices is None or data.scalar or not indices.is_static or node.attr("axis", 0) != 0:
        return None
    size = len(data.elements)
    picked = tuple(data.elements[i + size if i < 0 else i] for i in indices.elements)
    if any(i >= size or i < -size for i in indices.elements):
        return None
    return SymbolicVector(picked, indices.scalar)


def _slice(node, depth: int) -> SymbolicVector | None:
    data = _input(node, 0, depth)
    bounds = [_input(node, i, depth) for i in range(1, len(node.inputs))]
    if data is None or data.scalar or len(bounds) < 2 or any(b is None or not b.is_static for b in bounds):
        return None
    starts, ends = bounds[0].elements, bounds[1].elements
    axes = bounds[2].elements if len(bounds) > 2 and bounds[2] is not None else (0,)
    steps = bounds[3].elements if len(bounds) > 3 and bounds[3] is not None else (1,)
    if len(starts) != 1 or tuple(axes) not in ((0,), (-1,)) or steps[0] == 0:
        return None
    size = len(data.elements)
    start, end, step = slice(starts[0], ends[0], steps[0]).indices(size)
    return SymbolicVector(data.elements[start:end:step])


def _concat(node, depth: int) -> SymbolicVector | None:
    parts = [_input(node, i, depth) for i in range(len(node.inputs))]
    if any(p is None or p.scalar for p in parts):
        return None
    return SymbolicVector(tuple(e for p in parts for e in p.elements))


def _unsqueeze(node, depth: int) -> SymbolicVector | None:
    data = _input(node, 0, depth)
    axes = node.attr("axes", None)
    if axes is None:
        given = _input(node, 1, depth)
        axes = given.elements if given is not None and given.is_static else None
    if data is None or not data.scalar or axes is None or tuple(axes) not in ((0,), (-1,)):
        return None
    return SymbolicVector(data.elements)


def _squeeze(node, depth: int) -> SymbolicVector | None:
    data = _input(node, 0, depth)
    if data is None or data.scalar or len(data.elements) != 1:
        return None
    return SymbolicVector(data.elements, True)


def _pass_through(node, depth: int) -> SymbolicVector | None:
    if node.op_type == "Cast" and node.attr("to") not in (6, 7):  # int32, int64
        return None
    return _input(node, 0, depth)


def _divide(a: int, b: int) -> int | None:
    """Integer Div of shape values (channels // groups in TorchScript exports); only where
    truncation and flooring agree and the divisor is not 0."""
    return a // b if a >= 0 and b > 0 else None


_ARITHMETIC = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b, "Div": _divide}


def _arithmetic(node, depth: int) -> SymbolicVector | None:
    """Elementwise integer arithmetic; symbolic operands give a structural token like ("Mul", a, b)."""
    left, right = _input(node, 0, depth), _input(node, 1, depth)
    if left is None or right is None:
        return None
    size = max(len(left.elements), len(right.elements))
    if size > 1 and 1 < min(len(left.elements), len(right.elements)) != size:
        return None
    a = left.elements * size if len(left.elements) == 1 else left.elements
    b = right.elements * size if len(right.elements) == 1 else right.elements
    combine = _ARITHMETIC[node.op_type]
    result = tuple(combine(x, y) if isinstance(x, int) and isinstance(y, int) else (node.op_type, x, y) for x, y in zip(a, b))
    if None in result:
        return None
    return SymbolicVector(result, left.scalar and right.scalar)


_HANDLERS = {
    "Add": _arithmetic, "Sub": _arithmetic, "Mul": _arithmetic, "Div": _arithmetic,
    "Shape": _shape, "Gather": _gather, "Slice": _slice, "Concat": _concat, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "Cast": _pass_through, "Identity": _pass_through,
}


def encode_reshape_target(elements: tuple[Element, ...], x: Value, allowzero: int = 0) -> np.ndarray | None:
    """A constant Reshape target for `x` giving dims `elements`: ints stay, a token equal to x's dim
    at the same axis becomes 0 (copy), one remaining token becomes -1; None if more remain."""
    tokens = dimension_tokens(x) or ()
    result: list[int | None] = []
    for axis, element in enumerate(elements):
        if isinstance(element, int):
            result.append(element)
        elif not allowzero and axis < len(tokens) and tokens[axis] == element:
            result.append(0)
        else:
            result.append(None)
    if result.count(None) > 1 or (result.count(None) == 1 and -1 in result):
        return None
    return np.array([-1 if v is None else v for v in result], dtype=np.int64)
