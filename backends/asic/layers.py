"""Graph nodes -> accelerator work: Conv (grouped and depthwise included), Gemm, MatMul, batched
MatMul and Attention's two products, float or quantized, become systolic-array matrix problems;
every other op costs vector-unit operations; shape-only ops are free."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from compiler.analysis import concrete, node_flops
from compiler.ir import DataType, Node, Value

from .systolic import MatrixProblem

CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
MATMUL_OPS = {"MatMul": (0, 1), "Gemm": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
INTEGER_OPS = {"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul"}
FREE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Size", "Constant",
            "ConstantOfShape", "Dropout", "Range"}
QUANT_TYPES = {DataType.INT8, DataType.UINT8, DataType.INT4, DataType.UINT4}


@dataclass(frozen=True)
class TopologyRow:
    """One SCALE-Sim topology line: a conv layer (padded ifmap dims) or a GEMM (M, N, K)."""

    name: str
    kind: str  # "conv" or "gemm"
    dims: tuple[int, ...]  # conv: ifmap_h, ifmap_w, filter_h, filter_w, channels, filters, stride
    repeat: int = 1  # batch images (conv) or batched GEMMs
    depthwise: bool = False


@dataclass
class ArrayLayer:
    """Work for the systolic array: `problems` are (MatrixProblem, repeats) pairs."""

    node: str
    op: str
    problems: list[tuple[MatrixProblem, int]]
    precision: str
    ifmap_bytes: int
    filter_bytes: int
    ofmap_bytes: int
    filter_constant: bool
    topology: list[TopologyRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    vector_ops: int = 0  # element work done beside the matrix products (attention's softmax)
    filter_word: float = 0.0  # bytes per weight word when narrower than the datapath (int4: 0.5)

    @property
    def macs(self) -> int:
        return sum(p.macs * n for p, n in self.problems)


@dataclass
class VectorLayer:
    """Work for the vector unit: `ops` element operations over activations and constants."""

    node: str
    op: str
    ops: int
    precision: str
    input_bytes: int
    output_bytes: int
    constant_bytes: int
    tensors: list[tuple[Value, int]] = field(default_factory=list)  # activations read and written, with bytes


def _shape(value: Value | None, symbols: Mapping[str, int]) -> tuple[int, ...] | None:
    return concrete(value.shape, dict(symbols)) if value is not None else None


def _bytes(value: Value | None, symbols: Mapping[str, int], word: float | None = None) -> int:
    shape = _shape(value, symbols)
    if shape is None or value is None:
        return 0
    if word is None:
        word = _itemsize(value)
    return int(math.ceil(int(np.prod(shape, dtype=np.int64)) * word))


def _itemsize(value: Value) -> float:
    dtype = value.dtype
    if dtype is None:
        return 4
    if dtype in (DataType.INT4, DataType.UINT4):
        return 0.5
    try:
        return float(dtype.numpy.itemsize)
    except TypeError:
        return 4


def _stored_type(value: Value | None) -> DataType | None:
    """The element type an operand is stored in: the quantized type behind a DequantizeLinear."""
    if value is None:
        return None
    producer = value.producer
    if producer is not None and producer.op_type == "DequantizeLinear" and producer.inputs[0] is not None:
        return producer.inputs[0].dtype
    return value.dtype


def _precision(node: Node, data: Value | None, weight: Value | None) -> tuple[str, float, float]:
    """(datapath precision, ifmap word bytes, filter word bytes) of an array op."""
    if node.op_type in INTEGER_OPS:
        return "int8", 1, 1
    data_type, weight_type = _stored_type(data), _stored_type(weight)
    weight_word = 0.5 if weight_type in (DataType.INT4, DataType.UINT4) else None
    if data_type in QUANT_TYPES and weight_type in QUANT_TYPES:
        return "int8", 1, weight_word or 1
    float_type = data.dtype if data is not None else None
    if float_type in (DataType.FLOAT16, DataType.BFLOAT16):
        return "fp16", 2, weight_word or 2
    return "fp32", 4, weight_word or (1 if weight_type in QUANT_TYPES else 4)


def _is_constant(value: Value | None) -> bool:
    if value is None:
        return False
    if value.constant() is not None:
        return True
    producer = value.producer
    return producer is not None and producer.op_type == "DequantizeLinear" and _is_constant(producer.inputs[0])


def conv_layer(node: Node, symbols: Mapping[str, int]) -> ArrayLayer | None:
    """A Conv as `batch * group` matrix problems of E = out pixels, K = C/g * kernel, M = F/g."""
    data_index, weight_index = CONV_OPS[node.op_type]
    data, weight, out = node.inputs[data_index], node.inputs[weight_index], node.outputs[0]
    x, w, y = _shape(data, symbols), _shape(weight, symbols), _shape(out, symbols)
    if x is None or w is None or y is None or len(y) < 3:
        return None
    group = int(node.attr("group", 1) or 1)
    batch, filters, spatial = y[0], y[1], y[2:]
    kernel = w[2:]
    ofmap_px = int(np.prod(spatial, dtype=np.int64))
    problem = MatrixProblem(ofmap_px, int(w[1] * np.prod(kernel, dtype=np.int64)), filters // group)
    precision, in_word, w_word = _precision(node, data, weight)
    strides = list(node.attr("strides", None) or [1] * len(kernel))
    dilations = list(node.attr("dilations", None) or [1] * len(kernel))
    notes = []
    if len(kernel) != 2:
        notes.append(f"{len(kernel)}-D convolution written to the topology as 2-D (extra dims folded)")
    if len(set(strides)) > 1 or any(d != 1 for d in dilations):
        notes.append("SCALE-Sim topology assumes equal strides and no dilation; cycles use the true window")
    kh, kw = (kernel[0], int(np.prod(kernel[1:], dtype=np.int64))) if len(kernel) >= 2 else (kernel[0], 1)
    oh, ow = (spatial[0], int(np.prod(spatial[1:], dtype=np.int64))) if len(spatial) >= 2 else (spatial[0], 1)
    stride = int(strides[0])
    padded_h, padded_w = (oh - 1) * stride + kh, (ow - 1) * stride + kw
    depthwise = group > 1 and group == x[1] and w[1] == 1
    if depthwise:
        rows = [TopologyRow(node.name, "conv", (padded_h, padded_w, kh, kw, group, filters // group, stride), batch, True)]
    else:
        rows = [TopologyRow(f"{node.name}" + (f"#g{i}" if group > 1 else ""), "conv",
                            (padded_h, padded_w, kh, kw, w[1], filters // group, stride), batch) for i in range(group)]
    return ArrayLayer(
        node=node.name, op=node.op_type, problems=[(problem, batch * group)], precision=precision,
        ifmap_bytes=_bytes(data, symbols, in_word), filter_bytes=_bytes(weight, symbols, w_word),
        ofmap_bytes=_bytes(out, symbols, in_word if precision == "int8" else None),
        filter_constant=_is_constant(weight), topology=rows, notes=notes, filter_word=w_word,
    )


def matmul_layer(node: Node, symbols: Mapping[str, int]) -> ArrayLayer | None:
    """Gemm/MatMul as one GEMM (E = M rows, K, N filters), or `batch` GEMMs when both operands
    carry batch dimensions (attention's Q.K^T and P.V)."""
    a_index, b_index = MATMUL_OPS[node.op_type]
    a, b, out = node.inputs[a_index], node.inputs[b_index], node.outputs[0]
    sa, sb = _shape(a, symbols), _shape(b, symbols)
    if sa is None or sb is None or not sa or not sb:
        return None
    if node.op_type == "Gemm":
        m, k = (sa[1], sa[0]) if node.attr("transA", 0) else (sa[0], sa[1])
        n = sb[0] if node.attr("transB", 0) else sb[1]
        batch, rows_total = 1, m
    else:
        sa = (1,) + sa if len(sa) == 1 else sa
        sb = sb + (1,) if len(sb) == 1 else sb
        m, k, n = sa[-2], sa[-1], sb[-1]
        if len(sb) == 2:  # weights shared across the batch: one tall GEMM
            batch, rows_total = 1, int(np.prod(sa[:-1], dtype=np.int64))
        else:
            batch_shape = np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
            batch, rows_total = int(np.prod(batch_shape, dtype=np.int64)), m
    precision, in_word, w_word = _precision(node, a, b)
    problem = MatrixProblem(rows_total, k, n)
    return ArrayLayer(
        node=node.name, op=node.op_type, problems=[(problem, batch)], precision=precision,
        ifmap_bytes=_bytes(a, symbols, in_word), filter_bytes=_bytes(b, symbols, w_word),
        ofmap_bytes=_bytes(out, symbols, in_word if precision == "int8" else None),
        filter_constant=_is_constant(b), topology=[TopologyRow(node.name, "gemm", (rows_total, n, k), batch)],
        filter_word=w_word,
    )


def attention_layer(node: Node, symbols: Mapping[str, int]) -> ArrayLayer | None:
    """ONNX Attention (opset 23): per batch and head, Q.K^T (Sq x D by D x Skv) and P.V (Sq x Skv
    by Skv x Dv) on the array, scale + mask + softmax (about 7 operations per score) on the vector unit."""
    q, k, v = (_shape(node.inputs[i], symbols) if len(node.inputs) > i else None for i in range(3))
    if q is None or k is None or v is None or len(q) not in (3, 4) or len(q) != len(k):
        return None
    if len(q) == 4:
        batch, heads, s_q, d = q
        s_kv, d_v = k[2], v[3]
    else:
        heads = int(node.attr("q_num_heads", 1) or 1)
        kv_heads = int(node.attr("kv_num_heads", heads) or heads)
        batch, s_q, d = q[0], q[1], q[2] // heads
        s_kv, d_v = k[1], v[2] // kv_heads
    repeats = batch * heads
    precision, word, _ = _precision(node, node.inputs[0], node.inputs[1])
    scores, context = MatrixProblem(s_q, d, s_kv), MatrixProblem(s_q, s_kv, d_v)
    return ArrayLayer(
        node=node.name, op=node.op_type, problems=[(scores, repeats), (context, repeats)], precision=precision,
        ifmap_bytes=_bytes(node.inputs[0], symbols, word), filter_bytes=_bytes(node.inputs[1], symbols, word)
        + _bytes(node.inputs[2], symbols, word), ofmap_bytes=_bytes(node.outputs[0], symbols, word),
        filter_constant=False, vector_ops=7 * repeats * s_q * s_kv,
        topology=[TopologyRow(f"{node.name}#scores", "gemm", (s_q, s_kv, d), repeats),
                  TopologyRow(f"{node.name}#context", "gemm", (s_q, d_v, s_kv), repeats)],
    )


def _feeds_only_array_ops(value: Value) -> bool:
    consumers = value.consumers
    return bool(consumers) and all(c.op_type in CONV_OPS or c.op_type in MATMUL_OPS for c in consumers)


def vector_layer(node: Node, symbols: Mapping[str, int]) -> VectorLayer:
    """Element operations of a non-matrix op: the FLOP estimate of compiler.analysis, or one
    operation per output element for data movement; shape-only ops and Q/DQ fused into the
    array's operand path (weights, DequantizeLinear feeding only matrix ops) cost nothing."""
    out = node.outputs[0] if node.outputs else None
    free = node.op_type in FREE_OPS or (
        node.op_type == "DequantizeLinear" and (_is_constant(node.inputs[0]) or (out is not None and _feeds_only_array_ops(out)))
    )
    ops = 0 if free else node_flops(node, dict(symbols)) or sum(_elements(v, symbols) for v in node.outputs)
    inputs = [v for v in node.inputs if v is not None]
    constants = [v for v in inputs if v.constant() is not None]
    activations = [v for v in inputs if v.constant() is None]
    dtype = next((v.dtype for v in activations if v.dtype is not None), None)
    precision = "int8" if dtype in QUANT_TYPES else "fp16" if dtype in (DataType.FLOAT16, DataType.BFLOAT16) else "fp32"
    if free:
        return VectorLayer(node.name, node.op_type, 0, precision, 0, 0, 0)
    outputs = [v for v in node.outputs if v.name]
    return VectorLayer(
        node=node.name, op=node.op_type, ops=int(ops), precision=precision,
        input_bytes=sum(_bytes(v, symbols) for v in activations),
        output_bytes=sum(_bytes(v, symbols) for v in outputs),
        constant_bytes=sum(_bytes(v, symbols) for v in constants),
        tensors=[(v, _bytes(v, symbols)) for v in activations + outputs],
    )


def _elements(value: Value, symbols: Mapping[str, int]) -> int:
    shape = _shape(value, symbols)
    return int(np.prod(shape, dtype=np.int64)) if shape is not None and value.name else 0


def layer_for(node: Node, symbols: Mapping[str, int]) -> ArrayLayer | VectorLayer:
    """The accelerator work of one node (vector work when a matrix op's shapes are unknown)."""
    layer = None
    if node.domain in ("", "ai.onnx") and node.op_type in CONV_OPS:
        layer = conv_layer(node, symbols)
    elif node.domain in ("", "ai.onnx") and node.op_type in MATMUL_OPS:
        layer = matmul_layer(node, symbols)
    elif node.domain in ("", "ai.onnx") and node.op_type == "Attention":
        layer = attention_layer(node, symbols)
    return layer if layer is not None else vector_layer(node, symbols)
