"""`--quantize int4`: block-wise symmetric int4 weight-only quantization of MatMul/Gemm weights,
stored as int4 initializers read by DequantizeLinear with `block_size` (opset 21). The model is
first converted to opset 21 with onnx.version_converter when it is older."""

from __future__ import annotations

import numpy as np

from compiler.builder import set_type
from compiler.errors import UnsupportedError
from compiler.ir import DataType, Graph, Node, Value
from compiler.pass_infra import PassContext

from . import error_report
from .numerics import INT4_RANGE, quantize
from .placement import is_float_weight, selected

INT4_OPSET = 21
DEFAULT_BLOCK_SIZE = 32
INT4_LIMIT = 7.0


def blockwise_int4(weight: np.ndarray, axis: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int4 codes, float32 scales, dequantized weight): one scale per `block_size` run along `axis`."""
    weight = np.asarray(weight, dtype=np.float32)
    moved = np.moveaxis(weight, axis, 0)
    length = moved.shape[0]
    blocks = -(-length // block_size)
    padded = np.zeros((blocks * block_size,) + moved.shape[1:], dtype=np.float32)
    padded[:length] = moved
    grouped = padded.reshape((blocks, block_size) + moved.shape[1:])
    amax = np.abs(grouped).max(axis=1)
    scales = np.where(amax > 0, amax / INT4_LIMIT, 1.0).astype(np.float32)
    codes = quantize(grouped, scales[:, None], 0, INT4_RANGE)
    restored = (codes * scales[:, None]).reshape(padded.shape)[:length]
    codes = codes.reshape(padded.shape)[:length]
    return (np.moveaxis(codes, 0, axis).astype(DataType.INT4.numpy), np.moveaxis(scales, 0, axis),
            np.moveaxis(restored, 0, axis).astype(np.float32))


def weight_axis(node: Node) -> int | None:
    """The reduction (K) axis of the weight of a MatMul/Gemm, along which blocks run."""
    weight = node.inputs[1]
    if not is_float_weight(weight) or len(weight.const_value.shape) != 2:
        return None
    if node.op_type == "MatMul":
        return 0
    if node.op_type == "Gemm":
        return 1 if node.attr("transB", 0) else 0
    return None


def upgrade_opset(graph: Graph) -> Graph:
    """`graph` at opset 21 or later (converted through onnx.version_converter when older)."""
    if graph.opset >= INT4_OPSET:
        return graph
    from onnx import version_converter

    from compiler.onnx_io import export_model, import_model

    try:
        model = version_converter.convert_version(export_model(graph, decompose_custom=True, value_info=False), INT4_OPSET)
    except Exception as error:  # the converter raises plain RuntimeErrors
        raise UnsupportedError(f"int4 needs opset {INT4_OPSET} and the model (opset {graph.opset}) cannot be converted: "
                               f"{' '.join(str(error).split())[:160]}") from None
    upgraded = import_model(model)
    upgraded.model = graph.model
    upgraded.name = graph.name
    return upgraded


def quantize_int4(graph: Graph, ctx: PassContext) -> tuple[Graph, dict[str, int]]:
    """Replace MatMul/Gemm float weights by int4 blocks + DequantizeLinear; returns the new graph."""
    include = ctx.option("quantize_include") or ()
    exclude = ctx.option("quantize_exclude") or ()
    block_size = int(ctx.option("block_size", DEFAULT_BLOCK_SIZE))
    candidates = [n for n in graph.nodes if n.op_type in ("MatMul", "Gemm") and not n.domain
                  and selected(n, include, exclude) and weight_axis(n) is not None]
    if not candidates:
        ctx.note("quantize int4: no MatMul/Gemm with a constant 2-D weight; nothing quantized")
        return graph, {"weights_quantized": 0}
    graph = upgrade_opset(graph)
    report = error_report.QuantizationReport("int4", "weight-only", None)
    done: dict[int, Value] = {}
    replaced: list[Value] = []
    for node in list(graph.nodes):
        if node.op_type not in ("MatMul", "Gemm") or node.domain or not selected(node, include, exclude):
            continue
        axis = weight_axis(node)
        if axis is None:
            continue
        weight = node.inputs[1]
        if id(weight) not in done:
            done[id(weight)] = _dequantize_node(graph, weight, axis, block_size, node, report)
            replaced.append(weight)
        node.replace_input_with(1, done[id(weight)])
    for value in replaced:
        if not value.uses and value.is_initializer() and not value.is_graph_input():
            graph.remove_initializer(value.name)
    graph.toposort()
    report_json = report.to_json()
    report_json["block_size"] = block_size
    ctx.artifacts["report:quantization"] = report_json
    return graph, {"weights_quantized": len(done), "block_size": block_size}


def _dequantize_node(graph: Graph, weight: Value, axis: int, block_size: int, node: Node, report) -> Value:
    codes, scales, restored = blockwise_int4(weight.const_value.numpy(), axis, block_size)
    code_value = graph.make_constant(codes, name=graph.make_name(f"{weight.name}_i4"), dtype=DataType.INT4)
    scale_value = graph.make_constant(scales, name=graph.make_name(f"{weight.name}_s"))
    dequantize = Node("DequantizeLinear", [code_value, scale_value], {"axis": axis, "block_size": block_size},
                      name=graph.make_name("DQ"), outputs=[graph.make_name(f"{weight.name}_dq")])
    dequantize.meta["rule"] = "quantize"
    graph.insert_node(dequantize, before=node)
    set_type(dequantize.outputs[0], DataType.FLOAT, weight.shape)
    report.add_weight(node, weight, scales.reshape(-1), axis, restored=restored)
    return dequantize.outputs[0]
