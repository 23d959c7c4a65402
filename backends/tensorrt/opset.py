"""Bring a graph into TensorRT's opset range (support_table.json: opset_min..opset_max) with
onnx.version_converter, so a model exported at a newer (or older) opset still parses."""

from __future__ import annotations

from typing import Any

from compiler.ir import Graph
from compiler.onnx_io import export_model, import_model
from compiler.pass_infra import PassContext

from .support import support_table


def fit_opset(graph: Graph, ctx: PassContext) -> tuple[Graph, dict[str, Any] | None]:
    """(graph in range, a record of the conversion or None when none was needed). A failed
    conversion keeps the graph; the support check then reports the opset as blocking."""
    table = support_table()
    opset = graph.opset_imports.get("", graph.opset_imports.get("ai.onnx", 0))
    if table["opset_min"] <= opset <= table["opset_max"]:
        return graph, None
    import onnx.version_converter

    target = min(max(opset, table["opset_min"]), table["opset_max"])
    record: dict[str, Any] = {"from": opset, "to": target}
    try:
        converted = onnx.version_converter.convert_version(export_model(graph, decompose_custom=True), target)
        graph = import_model(converted)
    except Exception as error:  # the converter lacks an adapter for some op
        record["error"] = " ".join(str(error).split())[:300]
        ctx.note(f"tensorrt: cannot convert opset {opset} to {target}: {record['error']}")
        return graph, record
    ctx.note(f"tensorrt: converted opset {opset} to {target} (TensorRT parses opsets {table['opset_min']}-{table['opset_max']})")
    return graph, record
