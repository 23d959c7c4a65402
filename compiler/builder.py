"""A small op builder: `op.Add(a, b)` makes a node in the graph and returns its output value(s).

Used by rewrite replacements, decompositions of fused ops and passes that create nodes, so new
nodes are inserted at one place and stamped with the rule that made them."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .ir import DataType, Graph, Node, Shape, TensorType, Value


class OpBuilder:
    """Creates nodes in `graph` before `anchor` (or at the end). Keyword arguments are attributes,
    except `_domain`, `_outputs` (count or names), `_name`."""

    def __init__(self, graph: Graph, *, before: Node | None = None, stamp: str | None = None):
        self.graph = graph
        self.before = before
        self.stamp = stamp
        self.created: list[Node] = []

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("_"):
            raise AttributeError(op_type)

        def make(*inputs: Value | None, **attributes: Any):
            return self.op(op_type, *inputs, **attributes)

        return make

    def op(self, op_type: str, *inputs: Value | np.ndarray | float | int | None, **attributes: Any):
        """Make one `op_type` node; returns its output, or a tuple for several outputs."""
        domain = attributes.pop("_domain", "")
        outputs = attributes.pop("_outputs", 1)
        name = attributes.pop("_name", None)
        output_names = outputs if isinstance(outputs, (list, tuple)) else [None] * int(outputs)
        values = [self._as_value(v) for v in inputs]
        attributes = {k: v for k, v in attributes.items() if v is not None}
        node = Node(
            op_type,
            values,
            attributes,
            domain=domain,
            outputs=[n for n in output_names],
            name=name or self.graph.make_name(op_type),
        )
        for value in node.outputs:
            if value.name is None:
                value.name = self.graph.make_name(f"{op_type.lower()}_out")
        if self.stamp:
            node.meta["rule"] = self.stamp
        self.graph.insert_node(node, before=self.before)
        self.created.append(node)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    def const(self, array: Any, dtype: DataType | np.dtype | type | None = None, name: str | None = None) -> Value:
        """A new initializer holding `array` (in the root graph's scope where possible)."""
        array = np.asarray(array, dtype=None if dtype is None or isinstance(dtype, DataType) else dtype)
        if isinstance(dtype, DataType):
            array = array.astype(dtype.numpy)
        return self.graph.make_constant(array, name=name or self.graph.make_name("const"))

    def _as_value(self, value: Any) -> Value | None:
        if value is None or isinstance(value, Value):
            return value
        return self.const(np.asarray(value))


def set_type(value: Value, dtype: DataType | None, shape: Shape | tuple | None) -> Value:
    """Give `value` a tensor type (used where a builder knows the result type up front)."""
    value.type = TensorType(dtype or DataType.UNDEFINED, None if shape is None else Shape(shape))
    return value
