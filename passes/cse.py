"""Common-subexpression elimination: nodes with the same op, attributes and inputs (equal small
constants count as the same input) are computed once. An analysis over the whole graph, not a rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.pass_infra import GraphwisePass, register_pass

from .constant_folding import NON_DETERMINISTIC

MAX_KEY_BYTES = 1 << 16  # constants larger than this are compared by identity only


def _constant_key(value: Value) -> tuple | None:
    if value.const_value is not None and value.const_value.nbytes > MAX_KEY_BYTES:
        return None  # decided from the type alone: a large weight is never read here
    array = value.constant()
    if array is None or array.dtype == object or array.nbytes > MAX_KEY_BYTES:
        return None
    return ("constant", str(value.dtype), array.shape, np.ascontiguousarray(array).tobytes())


def _value_key(value: Value | None) -> Any:
    if value is None:
        return None
    return _constant_key(value) or ("value", id(value))


def _freeze(item: Any) -> Any:
    if isinstance(item, (list, tuple)):
        return tuple(_freeze(i) for i in item)
    if isinstance(item, np.ndarray):
        return (item.dtype.str, item.shape, item.tobytes())
    if hasattr(item, "numpy") and callable(item.numpy):
        return _freeze(np.asarray(item.numpy()))
    return item


def node_key(node: Node) -> tuple | None:
    """What makes two nodes compute the same thing; None for nodes CSE must leave alone."""
    if node.subgraphs() or node.op_type in NON_DETERMINISTIC:
        return None
    if node.op_type == "Constant" and not node.domain:
        return _constant_key(node.outputs[0])
    try:
        attributes = tuple(sorted((name, _freeze(attr.value)) for name, attr in node.attributes.items()))
        hash(attributes)
    except TypeError:
        return None
    inputs = tuple(_value_key(v) for v in node.inputs)
    return (node.domain, node.op_type, node.overload, len(node.outputs), attributes, inputs)


def _cheap_key(node: Node) -> tuple | None:
    """A coarser key, free of constant reads and attribute freezing: nodes with equal node_key
    always have equal cheap keys, so only nodes that share one need the full key."""
    if node.op_type in NON_DETERMINISTIC or node.subgraphs():
        return None
    inputs = tuple("constant" if v is not None and v.is_constant else id(v) for v in node.inputs)
    return (node.domain, node.op_type, node.overload, len(node.outputs), tuple(node.attributes), inputs)


def eliminate_common_subexpressions(graph: Graph) -> int:
    """Reroute readers of each duplicate node to the first one; returns how many were removed.
    Nodes are visited in order, so readers of a removed duplicate can match in the same sweep."""
    seen: dict[tuple, Node] = {}
    lone: dict[tuple, Node] = {}  # cheap key -> the only node with it so far (full key not computed)
    shared: set[tuple] = set()  # cheap keys met more than once: their nodes are in `seen`
    removed = 0
    for node in list(graph.nodes):
        if node.graph is not graph:
            continue
        cheap = _cheap_key(node)
        if cheap is None:
            continue
        if cheap not in shared:
            first_of_kind = lone.pop(cheap, None)
            if first_of_kind is None:
                lone[cheap] = node
                continue
            shared.add(cheap)
            first_key = node_key(first_of_kind)
            if first_key is not None:
                seen.setdefault(first_key, first_of_kind)
        key = node_key(node)
        if key is None:
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        if any(v.is_graph_output() or (v.name and not o.name) for v, o in zip(node.outputs, first.outputs)):
            continue
        for duplicate, original in zip(node.outputs, first.outputs):
            if duplicate.name != "":
                graph.replace_all_uses_with(duplicate, original)
        graph.remove_node(node)
        removed += 1
    return removed


@register_pass
class CommonSubexpressionElimination(GraphwisePass):
    name = "cse"
    description = "compute identical nodes (same op, attributes, inputs or equal constants) once"
    counter = "nodes_deduplicated"

    def transform(self, graph: Graph) -> int:
        return eliminate_common_subexpressions(graph)
