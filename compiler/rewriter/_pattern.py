"""The pattern language: a pattern is written as a Python function over a tracing builder, in the
same op vocabulary as the graph: `lambda op, x, w: op.Add(op.MatMul(x, w), 0.0)`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


class PatternValue:
    """Something a pattern input slot can be: a variable, a constant or a node output."""


@dataclass(eq=False)
class Var(PatternValue):
    """Binds to any value (the same value wherever the name recurs)."""

    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass(eq=False)
class ConstPattern(PatternValue):
    """Matches a constant equal (elementwise, after broadcasting) to `value` within `atol`."""

    value: np.ndarray
    atol: float = 0.0

    def __repr__(self) -> str:
        return f"const({self.value.tolist()})"


@dataclass(eq=False)
class AnyOf:
    """An attribute constraint satisfied by any of the listed values."""

    options: tuple


@dataclass(eq=False)
class AttrVar:
    """Binds the attribute's value (or `default` when absent) to `name` in the match."""

    name: str
    default: Any = None


@dataclass(eq=False)
class NodeOutput(PatternValue):
    node: "PatternNode"
    index: int

    def __repr__(self) -> str:
        return f"{self.node.op_type}#{self.index}"


@dataclass(eq=False)
class PatternNode:
    op_type: str
    domain: str
    inputs: list[PatternValue | None]
    attributes: dict[str, Any]
    num_outputs: int = 1
    capture: str | None = None
    commute: bool = False
    outputs: list[NodeOutput] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"{self.op_type}({', '.join(map(repr, self.inputs))})"


COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min", "Sum", "Equal", "And", "Or", "Xor", "Mean"})


class PatternBuilder:
    """Records `op.X(...)` calls into a PatternNode DAG. Underscore keywords configure the node:
    `_domain`, `_outputs` (count), `_capture` (bind the matched node under a name)."""

    def __init__(self) -> None:
        self.nodes: list[PatternNode] = []

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("_"):
            raise AttributeError(op_type)

        def make(*inputs: Any, **attributes: Any):
            domain = attributes.pop("_domain", "")
            num_outputs = attributes.pop("_outputs", 1)
            capture = attributes.pop("_capture", None)
            commute = attributes.pop("_commute", op_type in COMMUTATIVE)
            node = PatternNode(op_type, domain, [_as_pattern_value(v) for v in inputs], attributes, num_outputs, capture, commute)
            node.outputs = [NodeOutput(node, i) for i in range(num_outputs)]
            self.nodes.append(node)
            return node.outputs[0] if num_outputs == 1 else tuple(node.outputs)

        return make

    @staticmethod
    def const(value: Any, atol: float = 0.0) -> ConstPattern:
        return ConstPattern(np.asarray(value), atol)


def _as_pattern_value(value: Any) -> PatternValue | None:
    if value is None or isinstance(value, PatternValue):
        return value
    if isinstance(value, (int, float, np.ndarray, list, tuple, np.number)):
        return ConstPattern(np.asarray(value))
    raise TypeError(f"a pattern input cannot be {type(value).__name__}")


@dataclass
class TracedPattern:
    """A pattern function traced once: its variables, nodes and root (the node whose outputs the
    replacement stands in for)."""

    variables: dict[str, Var]
    nodes: list[PatternNode]
    root: PatternNode


def trace_pattern(function: Callable[..., Any]) -> TracedPattern:
    """Call `function(op, *vars)` with a tracing builder; parameter names become variables."""
    parameters = list(inspect.signature(function).parameters)[1:]
    variables = {name: Var(name) for name in parameters}
    builder = PatternBuilder()
    result = function(builder, *variables.values())
    outputs = result if isinstance(result, tuple) else (result,)
    if not outputs or not all(isinstance(o, NodeOutput) for o in outputs):
        raise TypeError("a pattern must return the output(s) of an op")
    root = outputs[0].node
    if any(o.node is not root for o in outputs):
        raise TypeError("all outputs of a pattern must come from one root op")
    return TracedPattern(variables, builder.nodes, root)
