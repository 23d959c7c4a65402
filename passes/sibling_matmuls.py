"""Sibling MatMuls merged: MatMuls that read the same activation with constant 2-D weights of the
same K become one MatMul on the weights concatenated along N, and a Split; when every sibling is
followed by its own Add of a constant [N] bias, the biases are concatenated into one Add too. The
product runs as one larger GEMM (attention's Q, K and V projections: three 768x768 products -> one
768x2304) and the graph loses one or two nodes per extra sibling. An analysis over each value's
readers, not a rule: the siblings share an input but no root."""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, Shape, TensorType, Value
from compiler.pass_infra import GraphwisePass, register_pass


def _mergeable_weight(node: Node, activation: Value) -> Value | None:
    """The weight of `node` when it is MatMul(activation, W) with W a private 2-D float
    initializer (not a graph input, which a caller could override, and read by no other node)."""
    if node.op_type != "MatMul" or node.domain or len(node.inputs) != 2 or node.inputs[0] is not activation:
        return None
    weight = node.inputs[1]
    if weight is None or weight is activation or weight.is_graph_input():
        return None
    if node.graph is None or node.graph.initializers.get(weight.name or "") is not weight:
        return None  # constants of an enclosing graph stay where they are
    tensor = weight.const_value
    if len(tensor.shape) != 2 or not tensor.dtype.is_floating or len(weight.uses) != 1:
        return None
    return weight


def _siblings(activation: Value, graph: Graph, order: dict[int, int]) -> list[list[Node]]:
    """Groups of two or more MatMuls reading `activation` whose weights agree on dtype and K."""
    groups: dict[tuple, list[Node]] = {}
    for use in activation.uses:
        node = use.node
        if use.index != 0 or node.graph is not graph:
            continue
        weight = _mergeable_weight(node, activation)
        if weight is not None:
            tensor = weight.const_value
            groups.setdefault((tensor.dtype, tensor.shape[0]), []).append(node)
    return [sorted(nodes, key=lambda n: order[id(n)]) for nodes in groups.values() if len(nodes) > 1]


def _bias_add(node: Node, graph: Graph) -> tuple[Node, Value] | None:
    """(Add, bias) when the MatMul's only reader is an Add of a private constant 1-D bias as wide
    as its output, and the product itself is not a graph output."""
    product = node.outputs[0]
    if product.is_graph_output() or len(product.uses) != 1:
        return None
    add = product.uses[0].node
    if add.op_type != "Add" or add.domain or add.graph is not graph or len(add.inputs) != 2:
        return None
    bias = add.inputs[1 - product.uses[0].index]
    if bias is None or bias is product or bias.is_graph_input() or graph.initializers.get(bias.name or "") is not bias:
        return None
    width = node.inputs[1].const_value.shape[1]
    if len(bias.uses) != 1 or list(bias.const_value.shape) != [width] or bias.dtype != product.dtype:
        return None
    return add, bias


def _concatenated(graph: Graph, values: list[Value], hint: str) -> Value:
    """A new initializer: the constants of `values` joined along their last axis (the old ones go)."""
    joined = np.concatenate([v.const_value.numpy() for v in values], axis=-1)
    return graph.make_constant(joined, name=graph.make_name(f"{values[0].name or hint}_merged"))


def _merge(graph: Graph, activation: Value, siblings: list[Node]) -> None:
    weights = [node.inputs[1] for node in siblings]
    widths = [int(w.const_value.shape[1]) for w in weights]
    biases = [_bias_add(node, graph) for node in siblings]
    with_bias = all(found is not None for found in biases)
    ends = [found[0] for found in biases] if with_bias else siblings  # the nodes whose outputs the pieces replace
    product = Node("MatMul", [activation, _concatenated(graph, weights, "weight")], name=graph.make_name("merged_matmul"),
                   outputs=[graph.make_name("merged_product")])
    first_type = ends[0].outputs[0].type
    if isinstance(first_type, TensorType) and first_type.shape is not None:
        product.outputs[0].type = TensorType(first_type.dtype, Shape([*first_type.shape[:-1], sum(widths)]))
    merged = [product]
    if with_bias:
        add = Node("Add", [product.outputs[0], _concatenated(graph, [b for _, b in biases], "bias")],
                   name=graph.make_name("merged_bias"), outputs=[graph.make_name("merged_biased")])
        add.outputs[0].type = product.outputs[0].type
        merged.append(add)
    whole = merged[-1].outputs[0]
    outputs = [graph.make_name("split") for _ in siblings]
    if graph.opset >= 13:
        sizes = graph.make_constant(np.array(widths, np.int64), name=graph.make_name("split_sizes"))
        split = Node("Split", [whole, sizes], {"axis": -1}, outputs=outputs, name=graph.make_name("merged_split"))
    else:
        split = Node("Split", [whole], {"axis": -1, "split": widths}, outputs=outputs, name=graph.make_name("merged_split"))
    graph.insert_nodes([*merged, split], before=siblings[0])
    for end, piece in zip(ends, split.outputs):
        piece.type = end.outputs[0].type
        graph.replace_all_uses_with(end.outputs[0], piece)
    graph.remove_nodes([*ends, *siblings] if with_bias else siblings)
    for constant in [*weights, *(b for _, b in biases)] if with_bias else weights:
        graph.remove_initializer(constant.name)


def merge_sibling_matmuls(graph: Graph) -> int:
    """Merge every group of sibling MatMuls in `graph` (not its subgraphs); returns MatMuls removed."""
    order = {id(node): index for index, node in enumerate(graph.nodes)}
    candidates = [*graph.inputs, *graph.initializers.values(), *(v for n in graph.nodes for v in n.outputs)]
    removed = 0
    for activation in candidates:
        if len(activation.uses) < 2:
            continue
        for siblings in _siblings(activation, graph, order):
            _merge(graph, activation, siblings)
            removed += len(siblings) - 1
    return removed


@register_pass
class MergeSiblingMatMuls(GraphwisePass):
    name = "merge_sibling_matmuls"
    description = "MatMuls of one activation with constant weights -> one MatMul on the concatenated weights + Split"
    counter = "matmuls_merged"

    def transform(self, graph: Graph) -> int:
        return merge_sibling_matmuls(graph)
