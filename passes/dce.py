"""Dead-code elimination: drop nodes whose outputs nobody reads and initializers nobody uses."""

from __future__ import annotations

from compiler.ir import Graph
from compiler.pass_infra import Pass, PassContext, PassResult, register_pass


def eliminate_dead_code(graph: Graph) -> tuple[int, int]:
    """Remove dead nodes (subgraphs too) and unused initializers; returns (nodes, initializers)."""
    removed_nodes = 0
    for node in reversed(list(graph.nodes)):
        if all(not v.uses and not v.is_graph_output() for v in node.outputs):
            graph.remove_node(node)
            removed_nodes += 1
    for node in graph.nodes:
        for sub in node.subgraphs():
            inner_nodes, _ = eliminate_dead_code(sub)
            removed_nodes += inner_nodes
    removed_initializers = 0
    input_ids = {id(v) for v in graph.inputs}
    for name, value in list(graph.initializers.items()):
        if not value.uses and not value.is_graph_output() and id(value) not in input_ids:
            graph.remove_initializer(name)
            removed_initializers += 1
    return removed_nodes, removed_initializers


@register_pass
class DeadCodeElimination(Pass):
    name = "dce"
    description = "remove nodes and initializers that no output depends on"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        nodes, initializers = eliminate_dead_code(graph)
        return PassResult(graph, bool(nodes or initializers), {"nodes_removed": nodes, "initializers_removed": initializers})
