"""Deep copy of a graph, subgraphs included, with outer-scope references remapped."""

from __future__ import annotations

import copy

from ._core import Attr, Graph, Node, Value


def clone_graph(graph: Graph, value_map: dict[int, Value] | None = None) -> Graph:
    """Copy `graph`; `value_map` maps id() of outer-scope values to their copies (for subgraphs)."""
    mapping: dict[int, Value] = dict(value_map or {})

    def copy_value(value: Value) -> Value:
        new = Value(value.name, value.type, value.const_value, value.doc_string)
        new.meta = dict(value.meta)
        mapping[id(value)] = new
        return new

    inputs = [copy_value(v) for v in graph.inputs]
    initializers = []
    for name, value in graph.initializers.items():
        if id(value) in mapping:
            initializers.append(mapping[id(value)])
        else:
            initializers.append(copy_value(value))
    nodes = []
    for node in graph.nodes:
        new_inputs = [None if v is None else mapping.get(id(v), v) for v in node.inputs]
        attributes = [_clone_attr(attr, mapping) for attr in node.attributes.values()]
        outputs = [copy_value(v) for v in node.outputs]
        new_node = Node(
            node.op_type,
            new_inputs,
            attributes,
            domain=node.domain,
            outputs=outputs,
            name=node.name,
            doc_string=node.doc_string,
            overload=node.overload,
        )
        new_node.meta = copy.deepcopy(node.meta)
        nodes.append(new_node)
    outputs = [mapping.get(id(v), v) for v in graph.outputs]
    clone = Graph(
        inputs,
        outputs,
        nodes,
        initializers,
        name=graph.name,
        opset_imports=graph.opset_imports,
        doc_string=graph.doc_string,
        model=copy.deepcopy(graph.model),
    )
    clone.meta = copy.deepcopy(graph.meta)
    return clone


def _clone_attr(attr: Attr, mapping: dict[int, Value]) -> Attr:
    if attr.graphs():
        graphs = [clone_graph(g, mapping) for g in attr.graphs()]
        value = graphs[0] if attr.type.name == "GRAPH" else graphs
        return Attr(attr.name, attr.type, value, attr.ref_attr_name, attr.doc_string)
    value = list(attr.value) if isinstance(attr.value, list) else attr.value
    return Attr(attr.name, attr.type, value, attr.ref_attr_name, attr.doc_string)
