"""Check a graph against the checked-in TensorRT ONNX-parser support table (support_table.json):
the opset range, each op, its data types and the documented constraints; every blocking node is
reported with its reason."""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import numpy as np

from compiler.ir import DataType, Graph, Node, Value

TABLE_PATH = os.path.join(os.path.dirname(__file__), "support_table.json")

TYPE_NAMES = {
    DataType.FLOAT: "FP32", DataType.FLOAT16: "FP16", DataType.BFLOAT16: "BF16", DataType.INT32: "INT32",
    DataType.INT64: "INT64", DataType.BOOL: "BOOL", DataType.INT8: "INT8", DataType.UINT8: "UINT8",
    DataType.INT4: "INT4", DataType.DOUBLE: "DOUBLE", DataType.FLOAT8E4M3FN: "FP8", DataType.FLOAT4E2M1: "FP4",
}
RESIZE_COORDINATES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


@functools.lru_cache(maxsize=1)
def support_table() -> dict[str, Any]:
    with open(TABLE_PATH) as handle:
        return json.load(handle)


def _constant(value: Value | None) -> np.ndarray | None:
    return value.constant() if value is not None else None


def _input(node: Node, index: int) -> Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def _zero_point_zero(node: Node) -> str | None:
    point = _input(node, 2)
    if point is None:
        return None
    array = _constant(point)
    if array is None:
        return "zero point is not a constant"
    return None if not np.any(array) else "zero point must be 0 (TensorRT quantization is symmetric)"


def _axes_input_constant(node: Node) -> str | None:
    axes = _input(node, 1)
    return "axes input is not a constant" if axes is not None and _constant(axes) is None else None


def _axis_input_constant(node: Node) -> str | None:
    return "axis input is not a build-time constant" if _constant(_input(node, 1)) is None else None


def _dropout_inference(node: Node) -> str | None:
    training = _input(node, 2)
    if training is None:
        return None
    array = _constant(training)
    return None if array is not None and not bool(np.asarray(array).any()) else "is_training must be a constant False"


def _pool_2d_3d(node: Node) -> str | None:
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    return None if shape is None or len(shape) in (4, 5) else f"{len(shape) - 2}-D pooling (only 2-D or 3-D)"


def _dilations_ones(node: Node) -> str | None:
    dilations = node.attr("dilations", None)
    return None if not dilations or all(d == 1 for d in dilations) else f"dilations {list(dilations)} (must be all ones)"


def _used(value: Value | None) -> bool:
    return value is not None and bool(value.name) and (bool(value.uses) or value.is_graph_output())


def _no_indices_output(node: Node) -> str | None:
    return "the Indices output is used" if len(node.outputs) > 1 and _used(node.outputs[1]) else None


def _first_output_only(node: Node) -> str | None:
    return "only the first output is supported" if any(_used(v) for v in node.outputs[1:]) else None


def _topk_sorted(node: Node) -> str | None:
    if node.attr("sorted", 1) != 1:
        return "sorted must be 1"
    k = _constant(_input(node, 1))
    return None if k is None or int(np.asarray(k).reshape(-1)[0]) < 3840 else "K must be below 3840"


def _scatternd_no_reduction(node: Node) -> str | None:
    reduction = node.attr("reduction", "none")
    return None if reduction in ("none", b"none") else f"reduction {reduction!r} (only none)"


def _resize_modes(node: Node) -> str | None:
    mode = _text(node.attr("mode", "nearest"))
    coordinates = _text(node.attr("coordinate_transformation_mode", "half_pixel"))
    if mode not in ("nearest", "linear"):
        return f"mode {mode!r} (nearest or linear only)"
    if coordinates not in RESIZE_COORDINATES:
        return f"coordinate_transformation_mode {coordinates!r}"
    return "antialias is not supported" if node.attr("antialias", 0) else None


def _lstm_layout(node: Node) -> str | None:
    return "input_forget and layout must be 0" if node.attr("input_forget", 0) or node.attr("layout", 0) else None


def _attention_4d(node: Node) -> str | None:
    ranks = [len(v.shape) for v in node.inputs[:4] if v is not None and v.shape is not None]
    if any(r != 4 for r in ranks):
        return "Q, K, V and attn_mask must be 4-D"
    return "past key/value inputs are unsupported" if any(v is not None for v in node.inputs[4:]) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


CONSTRAINTS: dict[str, Callable[[Node], str | None]] = {
    "zero_point_zero": _zero_point_zero, "axes_input_constant": _axes_input_constant,
    "axis_input_constant": _axis_input_constant, "dropout_inference": _dropout_inference, "pool_2d_3d": _pool_2d_3d,
    "dilations_ones": _dilations_ones, "no_indices_output": _no_indices_output, "first_output_only": _first_output_only,
    "topk_sorted": _topk_sorted, "scatternd_no_reduction": _scatternd_no_reduction, "resize_modes": _resize_modes,
    "lstm_layout": _lstm_layout, "attention_4d": _attention_4d,
}


def _type_reason(node: Node, allowed: list[str]) -> str | None:
    """The first data input's element type must be in the op's list (DOUBLE is cast down)."""
    if node.op_type in ("Shape", "Size", "Constant", "ConstantOfShape", "Cast", "CastLike", "If", "Loop", "Scan"):
        return None
    value = next((v for v in node.inputs if v is not None), None)
    if value is None or value.dtype is None:
        return None
    name = TYPE_NAMES.get(value.dtype, value.dtype.name)
    if name == "DOUBLE" or name in allowed:
        return None
    return f"input {value.name!r} is {name}; TensorRT's {node.op_type} takes {', '.join(allowed)}"


def node_blockers(node: Node) -> list[str]:
    """Why TensorRT's parser would reject `node` (empty when it is accepted)."""
    table = support_table()
    if node.domain not in ("", "ai.onnx"):
        return [f"custom domain {node.domain!r} needs a TensorRT plugin"]
    if node.op_type in table["unsupported"]:
        return [f"{node.op_type} is not supported by the TensorRT {table['tensorrt_version']} ONNX parser"]
    entry = table["supported"].get(node.op_type)
    if entry is None:
        return [f"{node.op_type} is not in the TensorRT {table['tensorrt_version']} support table"]
    reasons = [CONSTRAINTS[name](node) for name in entry["constraints"]]
    reasons.append(_type_reason(node, entry["types"]))
    return [r for r in reasons if r]


def check_graph(graph: Graph) -> dict[str, Any]:
    """{"supported", "opset", "blocking": [{"node", "op", "reason"}]} for the whole graph,
    subgraphs included."""
    table = support_table()
    blocking = []
    opset = graph.opset_imports.get("", graph.opset_imports.get("ai.onnx", 0))
    if not table["opset_min"] <= opset <= table["opset_max"]:
        blocking.append({"node": "<model>", "op": "opset",
                         "reason": f"opset {opset} is outside TensorRT's range {table['opset_min']}-{table['opset_max']}"})
    for node in graph.all_nodes():
        for reason in node_blockers(node):
            blocking.append({"node": node.name, "op": node.qualified_op, "reason": reason})
    return {"supported": not blocking, "opset": opset, "table": f"TensorRT {table['tensorrt_version']}",
            "blocking": blocking}
