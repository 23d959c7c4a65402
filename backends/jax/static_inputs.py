"""Graph inputs that only feed shapes (a Reshape target, Slice bounds, Reduce axes, a Range's
bounds...) are specialised at call time: their values are baked into the trace (jit static
arguments), since XLA needs every shape known while compiling. Only small inputs of fully known
shape qualify; a new value retraces, like jax.jit's static_argnums."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ir import Graph, TensorType, Value

# (op type, input index) positions whose value decides an output shape or is an axis list
SHAPE_POSITIONS = frozenset({
    ("Reshape", 1), ("Expand", 1), ("Tile", 1), ("ConstantOfShape", 0), ("Range", 0), ("Range", 1), ("Range", 2),
    ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4), ("Squeeze", 1), ("Unsqueeze", 1), ("Split", 1),
    ("Pad", 1), ("Pad", 3), ("TopK", 1), ("OneHot", 1), ("Resize", 1), ("Resize", 2), ("Resize", 3),
    ("Upsample", 1), ("CenterCropPad", 1), ("CumSum", 1), ("CumProd", 1), ("Trilu", 1), ("Col2Im", 1),
    ("Col2Im", 2), ("AffineGrid", 1), ("DFT", 1), ("DFT", 2), ("STFT", 1), ("STFT", 3), ("BlackmanWindow", 0),
    ("HammingWindow", 0), ("HannWindow", 0), ("MelWeightMatrix", 0), ("MelWeightMatrix", 1),
    ("MelWeightMatrix", 2), ("MelWeightMatrix", 3), ("MelWeightMatrix", 4), ("Loop", 0), ("Loop", 1), ("If", 0),
    ("ReduceSum", 1), ("ReduceMean", 1), ("ReduceMax", 1), ("ReduceMin", 1), ("ReduceProd", 1), ("ReduceL1", 1),
    ("ReduceL2", 1), ("ReduceLogSum", 1), ("ReduceLogSumExp", 1), ("ReduceSumSquare", 1), ("Compress", 1),
    ("NonMaxSuppression", 2), ("StringSplit", 0), ("TfIdfVectorizer", 0),
    ("Loop", 1), ("SequenceInsert", 2), ("SequenceAt", 1), ("SequenceErase", 1), ("SplitToSequence", 1),
})
MAX_STATIC_ELEMENTS = 64
_PASS_THROUGH_DEPTH = 10


class StaticInput:
    """A small array passed to jit as a static (hashable) argument."""

    __slots__ = ("array", "_key")

    def __init__(self, array: Any):
        self.array = np.asarray(array)
        self._key = (self.array.dtype.str, self.array.shape, self.array.tobytes())

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StaticInput) and self._key == other._key


def _small_known(value: Value) -> bool:
    if not isinstance(value.type, TensorType) or value.shape is None:
        return False
    count = value.shape.numel()
    return count is not None and count <= MAX_STATIC_ELEMENTS


def _reaches_shape_position(value: Value, depth: int = 0) -> bool:
    """Whether `value` flows, through small values only, into a shape position."""
    for use in value.uses:
        node = use.node
        if (node.op_type, use.index) in SHAPE_POSITIONS:
            return True
        if depth < _PASS_THROUGH_DEPTH and any(
                _small_known(out) and _reaches_shape_position(out, depth + 1) for out in node.outputs if out.name):
            return True
    return False


def _read_by_subgraph(graph: Graph, value: Value) -> bool:
    """Whether an If/Loop/Scan body reads `value` as an outer value (often to build shapes)."""
    return any(node.subgraphs() and any(v is value for v in node.implicit_inputs()) for node in graph.nodes)


def static_input_indices(graph: Graph) -> tuple[int, ...]:
    """Positions (among the non-initializer graph inputs) of inputs to specialise at call time."""
    inputs = [v for v in graph.inputs if v.const_value is None]
    return tuple(i for i, value in enumerate(inputs)
                 if _small_known(value) and (_reaches_shape_position(value) or _read_by_subgraph(graph, value)))


def unwrap(value: Any) -> Any:
    """The array inside a StaticInput (other values unchanged)."""
    return value.array if isinstance(value, StaticInput) else value
