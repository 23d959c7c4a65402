"""Rewrite ai.graphkiln ops into their documented standard-ONNX decompositions."""

from __future__ import annotations

from .builder import OpBuilder
from .custom_ops import GRAPHKILN_DOMAIN, get_custom_op
from .errors import UnsupportedError
from .ir import Graph


def decompose_custom_ops(graph: Graph) -> int:
    """Replace every ai.graphkiln node (subgraphs included) by standard ops; returns how many."""
    count = 0
    for sub in graph.self_and_subgraphs():
        for node in list(sub.nodes):
            if node.domain != GRAPHKILN_DOMAIN:
                continue
            op = get_custom_op(node.domain, node.op_type)
            if op is None:
                raise UnsupportedError(f"no decomposition is registered for {node.domain}::{node.op_type}")
            builder = OpBuilder(sub, before=node, stamp=f"decompose:{node.op_type}")
            outputs = op.decompose(builder, node)
            for old, new in zip(node.outputs, outputs):
                if new.type is None:
                    new.type = old.type
                sub.replace_all_uses_with(old, new)
            sub.remove_node(node)
            count += 1
    if count and graph.opset_imports.get(GRAPHKILN_DOMAIN) and not any(
        n.domain == GRAPHKILN_DOMAIN for n in graph.all_nodes()
    ):
        del graph.opset_imports[GRAPHKILN_DOMAIN]
    return count
