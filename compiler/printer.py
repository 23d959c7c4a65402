"""Text form of an IR graph, for dumps, golden tests and debugging (one line per node)."""

from __future__ import annotations

import numpy as np

from .ir import Attr, AttrType, Graph, Node, Tensor, Value


def format_graph(graph: Graph, indent: str = "") -> str:
    lines = [f"{indent}graph {graph.name}(" + ", ".join(_value(v) for v in graph.inputs) + ")"]
    for name, value in graph.initializers.items():
        if not value.is_graph_input():
            lines.append(f"{indent}  init {_value(value)} = {_tensor(value.const_value)}")
    for node in graph.nodes:
        lines.append(format_node(node, indent + "  "))
    lines.append(f"{indent}  return " + ", ".join(v.name or "?" for v in graph.outputs))
    return "\n".join(lines)


def format_node(node: Node, indent: str = "") -> str:
    outputs = ", ".join(_value(v) for v in node.outputs)
    inputs = ", ".join("" if v is None else (v.name or "?") for v in node.inputs)
    attrs = [a for a in node.attributes.values() if a.type not in (AttrType.GRAPH, AttrType.GRAPHS)]
    attr_text = "<" + ", ".join(f"{a.name}={_attr(a)}" for a in attrs) + ">" if attrs else ""
    line = f"{indent}{outputs} = {node.qualified_op}{attr_text}({inputs})"
    subgraphs = [f"{a.name}:\n" + format_graph(g, indent + "    ") for a in node.attributes.values() for g in a.graphs()]
    return "\n".join([line, *subgraphs])


def _value(value: Value) -> str:
    return f"%{value.name or '?'}: {value.type}" if value.type is not None else f"%{value.name or '?'}"


def _attr(attr: Attr) -> str:
    value = attr.value
    if isinstance(value, Tensor):
        return _tensor(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 8:
        return f"[{', '.join(map(str, value[:8]))}, ...]"
    return repr(value)


def _tensor(tensor: Tensor) -> str:
    if tensor.size <= 8 and tensor.is_loaded:
        try:
            return np.array2string(np.asarray(tensor.numpy()).reshape(-1), separator=",")
        except Exception:
            pass
    return f"<{tensor.dtype.name.lower()}{tensor.shape!r}>"
