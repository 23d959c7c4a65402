"""Weights stored in the compute type under `--precision bf16|fp16`, so the cast runs once at
compile time instead of on every call. The products cast their operands to that type anyway
(precision.py), but a weight is a function argument, so XLA cannot fold its cast: every call read
each float32 weight and wrote its low-precision copy (GPT-2 small: 124M weights, ~0.75 GB of
memory traffic a call on a GPU). Only float32 weights whose every reader casts them first are
stored cast, which leaves the results bit for bit as they were; a weight other ops read too (GPT-2's
token embedding, gathered as well as multiplied) keeps its float32 copy beside the cast one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from compiler.ir import DataType, Graph, Node, Value

STANDARD_DOMAINS = ("", "ai.onnx")
# op -> the input positions whose values a product casts to the compute type before use
PRODUCT_OPERANDS = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (1,), "ConvTranspose": (1,)}
# ops that only move elements: a cast commutes with them exactly (their data input is input 0)
ELEMENT_MOVES = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
CAST_SUFFIX = "::cast"


@dataclass(frozen=True)
class CastChoice:
    """How a weight is stored cast: the (node, input) pairs that read the cast copy, and whether
    other readers keep a float32 copy beside it (`shared`)."""

    readers: frozenset[tuple[int, int]]
    shared: bool

    def reads(self, node: Node, index: int) -> bool:
        """Whether input `index` of `node` reads the cast copy."""
        return (id(node), index) in self.readers


def low_precision_weights(graph: Graph, params: Mapping[str, np.ndarray]) -> dict[str, CastChoice]:
    """name -> CastChoice, for the float32 params that products read (directly or through
    element moves) as an operand cast to the compute type."""
    chosen: dict[str, CastChoice] = {}
    for name, array in params.items():
        value = graph.initializers.get(name)
        if value is None or not value.uses or np.asarray(array).dtype != np.float32:
            continue
        readers = frozenset((id(use.node), use.index) for use in value.uses if _reaches_products_only(use.node, use.index))
        if readers:
            chosen[name] = CastChoice(readers, shared=len(readers) < len(value.uses))
    return chosen


def cast_params(params: dict[str, np.ndarray], choices: Mapping[str, CastChoice], dtype: Any) -> dict[str, np.ndarray]:
    """`params` with each chosen weight stored in `dtype` (a shared one under name + CAST_SUFFIX,
    its float32 copy kept); numpy rounds to nearest even, as XLA's convert does."""
    stored = dict(params)
    for name, choice in choices.items():
        cast = np.asarray(params[name]).astype(dtype)
        stored[name + CAST_SUFFIX if choice.shared else name] = cast
    return stored


def _reaches_products_only(node: Node, index: int) -> bool:
    """Whether input `index` of `node` is a float32 product operand the product casts (its other
    operands computed values, not weights, so the product's result type stays float32), or the
    data input of element moves whose every reader is one."""
    if node.domain not in STANDARD_DOMAINS:
        return False
    if node.op_type in ELEMENT_MOVES:
        outputs = [v for v in node.outputs if v is not None]
        return (index == 0 and len(outputs) == 1 and bool(outputs[0].uses)
                and all(_reaches_products_only(use.node, use.index) for use in outputs[0].uses))
    positions = PRODUCT_OPERANDS.get(node.op_type)
    if positions is None or index not in positions:
        return False
    others = [node.inputs[i] for i in (0, 1) if i != index and i < len(node.inputs)]
    return all(other is not None and _computed_float32(other) for other in others)


def _computed_float32(value: Value) -> bool:
    """A float32 value that no weight alone produces (an activation, not a moved initializer)."""
    if value.type is None or getattr(value.type, "dtype", None) != DataType.FLOAT:
        return False
    while value.const_value is None and value.producer is not None and value.producer.op_type in ELEMENT_MOVES:
        value = value.producer.inputs[0]
    return value.const_value is None
