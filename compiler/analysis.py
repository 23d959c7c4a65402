"""Model statistics for `kiln inspect`: op histogram, parameters, FLOPs estimate, interface."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .ir import Graph, Node, Shape, Value

ELEMENTWISE = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Erf", "Exp", "Log", "Sqrt",
        "Neg", "Abs", "Clip", "Max", "Min", "Where", "Gelu", "HardSigmoid", "HardSwish", "Elu", "Selu",
        "Softplus", "PRelu", "Mish", "Reciprocal", "Cast", "Equal", "Less", "Greater", "Not", "And", "Or",
    }
)
PER_ELEMENT_COST = {"Softmax": 5, "LogSoftmax": 5, "BatchNormalization": 2, "LayerNormalization": 8,
                    "InstanceNormalization": 8, "GroupNormalization": 8, "RMSNormalization": 5}
REDUCTIONS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
                        "ReduceSumSquare", "GlobalAveragePool", "GlobalMaxPool", "ArgMax", "ArgMin"})


def concrete(shape: Shape | None, symbols: dict[str, int] | None = None) -> tuple[int, ...] | None:
    """The shape with symbolic dims replaced (default 1); None when rank or a dim is unknown."""
    if shape is None:
        return None
    dims = []
    for dim in shape:
        if isinstance(dim, int):
            dims.append(dim)
        elif isinstance(dim, str):
            dims.append((symbols or {}).get(dim, 1))
        else:
            return None
    return tuple(dims)


def _numel(value: Value | None, symbols) -> int:
    shape = concrete(value.shape, symbols) if value is not None else None
    return int(np.prod(shape, dtype=np.int64)) if shape is not None else 0


def node_flops(node: Node, symbols: dict[str, int] | None = None) -> int:
    """Floating-point operations of one node (a multiply-add counts 2); 0 when unknown."""
    op = node.op_type
    out = node.outputs[0] if node.outputs else None
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        weight = node.inputs[1 if op != "QLinearConv" else 3]
        w = concrete(weight.shape, symbols) if weight is not None else None
        if w is None or out is None:
            return 0
        return 2 * _numel(out, symbols) * int(np.prod(w[1:], dtype=np.int64))
    if op == "ConvTranspose":
        x, weight = node.inputs[0], node.inputs[1]
        w = concrete(weight.shape, symbols)
        if w is None:
            return 0
        group = node.attr("group", 1)
        return 2 * _numel(x, symbols) * (w[1] * group // max(group, 1)) * int(np.prod(w[2:], dtype=np.int64))
    if op in ("MatMul", "Gemm", "MatMulInteger", "FusedMatMul"):
        a = concrete(node.inputs[0].shape, symbols) if node.inputs[0] is not None else None
        if a is None or out is None:
            return 0
        k = a[0] if (op == "Gemm" and node.attr("transA", 0)) else a[-1]
        flops = 2 * _numel(out, symbols) * k
        if op == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
            flops += _numel(out, symbols)
        return flops
    if op in ELEMENTWISE:
        return _numel(out, symbols)
    if op in PER_ELEMENT_COST:
        return PER_ELEMENT_COST[op] * _numel(out, symbols)
    if op in REDUCTIONS or op in ("AveragePool", "MaxPool"):
        return _numel(node.inputs[0], symbols)
    return 0


def summarize(graph: Graph, symbols: dict[str, int] | None = None) -> dict[str, Any]:
    """What `kiln inspect` prints, as data."""
    ops = Counter(n.qualified_op for n in graph.all_nodes())
    parameters = sum(v.const_value.size for v in graph.initializers.values())
    weight_bytes = sum(v.const_value.nbytes for v in graph.initializers.values())
    flops = sum(node_flops(n, symbols) for n in graph.all_nodes())
    def describe(value: Value) -> dict[str, Any]:
        return {
            "name": value.name,
            "dtype": value.dtype.name.lower() if value.dtype is not None else "?",
            "shape": [d if d is not None else "?" for d in value.shape] if value.shape is not None else None,
        }
    symbol_names = sorted({d for v in graph.inputs for d in (v.shape or ()) if isinstance(d, str)})
    return {
        "name": graph.name,
        "opset": dict(graph.opset_imports),
        "producer": f"{graph.model.producer_name} {graph.model.producer_version}".strip(),
        "nodes": len(graph.nodes),
        "nodes_including_subgraphs": sum(ops.values()),
        "ops": dict(sorted(ops.items(), key=lambda item: (-item[1], item[0]))),
        "parameters": int(parameters),
        "weight_bytes": int(weight_bytes),
        "flops": int(flops),
        "flops_symbols": {s: (symbols or {}).get(s, 1) for s in symbol_names},
        "inputs": [describe(v) for v in graph.inputs if v.const_value is None],
        "outputs": [describe(v) for v in graph.outputs],
    }


def format_summary(summary: dict[str, Any]) -> str:
    def shape_text(entry):
        return "[" + ", ".join(str(d) for d in entry["shape"]) + "]" if entry["shape"] is not None else "[?]"

    lines = [
        f"model: {summary['name']}   producer: {summary['producer'] or '?'}   opset: "
        + ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in summary["opset"].items()),
        "inputs:",
        *[f"  {e['name']}: {e['dtype']}{shape_text(e)}" for e in summary["inputs"]],
        "outputs:",
        *[f"  {e['name']}: {e['dtype']}{shape_text(e)}" for e in summary["outputs"]],
        f"nodes: {summary['nodes']} ({summary['nodes_including_subgraphs']} with subgraphs)",
        f"parameters: {summary['parameters']:,} ({summary['weight_bytes'] / 1e6:.2f} MB)",
    ]
    symbols = summary["flops_symbols"]
    at = f" at {', '.join(f'{k}={v}' for k, v in symbols.items())}" if symbols else ""
    lines.append(f"FLOPs (estimate{at}): {summary['flops']:,} ({summary['flops'] / 1e9:.3f} GFLOPs)")
    lines.append("op histogram:")
    width = max((len(op) for op in summary["ops"]), default=4)
    for op, count in summary["ops"].items():
        lines.append(f"  {op:<{width}}  {count}")
    return "\n".join(lines)
