"""Which weights pruning touches, and the size/sparsity statistics of the pruning report."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from compiler.ir import DataType, Graph, Node, Value

PRUNABLE_OPS = ("Conv", "Gemm", "MatMul")


def prunable_weights(graph: Graph) -> Iterator[tuple[Node, Value]]:
    """(node, weight) for each Conv/Gemm/MatMul whose weight is a float initializer of rank >= 2."""
    seen: set[int] = set()
    for node in graph.nodes:
        if node.op_type not in PRUNABLE_OPS or node.domain or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        if weight is None or weight.const_value is None or weight.dtype != DataType.FLOAT or id(weight) in seen:
            continue
        if len(weight.const_value.shape) < 2:
            continue
        seen.add(id(weight))
        yield node, weight


def reduction_axis(node: Node) -> int:
    """The input-channel (reduction) axis of a prunable node's weight."""
    if node.op_type == "Conv":
        return 1
    if node.op_type == "Gemm":
        return 1 if node.attr("transB", 0) else 0
    return 0


def replace_weight(graph: Graph, node: Node, index: int, array: np.ndarray, suffix: str, *, all_uses: bool = True) -> Value:
    """Point input `index` of `node` (with `all_uses`, every reader of that initializer) at a new
    initializer holding `array`; the old one is dropped once unused."""
    old = node.inputs[index]
    new = graph.make_constant(np.ascontiguousarray(array.astype(old.const_value.numpy().dtype)), name=graph.make_name(f"{old.name}_{suffix}"))
    for use in list(old.uses) if all_uses else [u for u in old.uses if u.node is node and u.index == index]:
        use.node.replace_input_with(use.index, new)
    if old.is_initializer() and not old.uses and not old.is_graph_output() and not old.is_graph_input():
        graph.remove_initializer(old.name)
    return new


def model_statistics(graph: Graph) -> dict[str, Any]:
    """Parameter count, bytes, and zero fraction of the prunable weights."""
    params = sum(v.const_value.size for v in graph.initializers.values() if v.dtype is not None and v.dtype.is_floating)
    size = sum(v.const_value.nbytes for v in graph.initializers.values())
    total = zeros = 0
    for _, weight in prunable_weights(graph):
        array = weight.const_value.numpy()
        total += array.size
        zeros += int(np.count_nonzero(array == 0))
    sparse = size - zeros * 4 + (total + 7) // 8  # pruned float32 weights: nonzeros plus a bitmask
    return {"params": int(params), "bytes": int(size), "sparsity": zeros / total if total else 0.0,
            "nonzero_params": int(params - zeros), "sparse_bytes": int(sparse)}
