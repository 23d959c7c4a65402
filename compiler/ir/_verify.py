"""Structural invariants of a graph: acyclic and ordered, one producer per value, no dangling or
undefined uses, consistent use lists. Type rules live in compiler.verify (they need op schemas)."""

from __future__ import annotations

from ._core import Graph, GraphError, Node, Value, _node_label


class VerificationError(GraphError):
    """The graph breaks an IR invariant; the message names the nodes involved."""


def verify_structure(graph: Graph) -> None:
    """Raise VerificationError at the first broken structural invariant of `graph` (recursive)."""
    names: dict[str, Value] = {}
    _verify_scope(graph, outer={}, names=names)


def _claim_name(value: Value, names: dict[str, Value], where: str) -> None:
    if not value.name:
        return
    other = names.get(value.name)
    if other is not None and other is not value:
        raise VerificationError(f"value {value.name!r} has two producers ({where})")
    names[value.name] = value


def _verify_scope(graph: Graph, outer: dict[int, Value], names: dict[str, Value]) -> None:
    visible: dict[int, Value] = dict(outer)
    for value in graph.inputs:
        if value.producer is not None:
            raise VerificationError(f"graph input {value.name!r} also has producer {_node_label(value.producer)}")
        _claim_name(value, names, "graph input")
        visible[id(value)] = value
    for name, value in graph.initializers.items():
        if value.name != name:
            raise VerificationError(f"initializer registered as {name!r} is named {value.name!r}")
        if value.const_value is None:
            raise VerificationError(f"initializer {name!r} has no data")
        if not any(v is value for v in graph.inputs):
            _claim_name(value, names, "initializer")
        visible[id(value)] = value
    produced_later = {id(v): n for n in graph.nodes for v in n.outputs}
    previous: Node | None = None
    for node in graph.nodes:
        if node.graph is not graph:
            raise VerificationError(f"{_node_label(node)} is listed in {graph.name!r} but belongs elsewhere")
        for index, value in enumerate(node.inputs):
            if value is None:
                continue
            if id(value) not in visible:
                if id(value) in produced_later:
                    producer = produced_later[id(value)]
                    raise VerificationError(
                        f"{_node_label(node)} reads {value.name!r} before {_node_label(producer)} produces it"
                        " (cycle or nodes out of order)"
                    )
                raise VerificationError(f"{_node_label(node)} reads undefined value {value.name!r}" + _after(previous))
            if (node, index) not in value._uses:
                raise VerificationError(f"use list of {value.name!r} misses input {index} of {_node_label(node)}")
        for index, value in enumerate(node.outputs):
            if value.producer is not node or value.index != index:
                raise VerificationError(f"output {index} of {_node_label(node)} names another producer")
            if id(value) in visible:
                raise VerificationError(f"value {value.name!r} is defined twice (again by {_node_label(node)})")
            _claim_name(value, names, _node_label(node))
        for subgraph in node.subgraphs():
            if subgraph.parent is not node:
                raise VerificationError(f"subgraph {subgraph.name!r} of {_node_label(node)} names another parent")
            _verify_scope(subgraph, visible, names)
        for value in node.outputs:
            visible[id(value)] = value
        previous = node
    for value in visible.values():
        if id(value) in outer:
            continue
        for use in value.uses:
            reader = use.node
            if reader.graph is None or reader not in reader.graph.nodes:
                raise VerificationError(f"{value.name!r} lists a use by removed node {_node_label(reader)}")
            if use.index >= len(reader.inputs) or reader.inputs[use.index] is not value:
                raise VerificationError(f"{value.name!r} lists a stale use by {_node_label(reader)}")
    for value in graph.outputs:
        if id(value) not in visible:
            raise VerificationError(f"graph output {value.name!r} of {graph.name!r} is not defined")


def _after(node: Node | None) -> str:
    return f" (after {_node_label(node)})" if node is not None else ""
