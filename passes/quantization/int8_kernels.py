"""The `int8_kernels` pass: for backends that can (JAX), fuse Q/DQ -> Conv/Gemm/MatMul with int8
weights and a symmetric int8 activation into ai.graphkiln::Int8Conv / Int8Gemm / Int8MatMul, which
run as int8 x int8 products accumulated in int32 (an int32 bias is added in int32, a float bias
after rescaling). Each op decomposes back into the Q/DQ form, so export stays standard ONNX."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from compiler.builder import OpBuilder
from compiler.custom_ops import GRAPHKILN_DOMAIN, CustomOp, register_custom_op
from compiler.ir import DataType, Graph, Node, TensorType, Value, ValueType
from compiler.pass_infra import PassContext, PassResult, register_pass
from compiler.rewriter import Rule, fail

from ..rewrite_pass import RewritePass

INT8_BACKENDS = ("jax",)


# ---- the fused ops: inputs (x, x_scale, x_zero_point, w_int8, w_scale[, bias_int32]) -----------

def _infer(node: Node) -> Sequence[ValueType | None]:
    return [TensorType(DataType.FLOAT, None)]


def _decompose_with(op_type: str):
    def decompose(op: OpBuilder, node: Node) -> Sequence[Value]:
        x, x_scale, x_zero, weight, weight_scale = node.inputs[:5]
        axis = node.attr("weight_axis", 0)
        activation = op.DequantizeLinear(op.QuantizeLinear(x, x_scale, x_zero), x_scale, x_zero)
        inputs = [activation, op.DequantizeLinear(weight, weight_scale, axis=axis)]
        bias = node.inputs[5] if len(node.inputs) > 5 else None
        if bias is not None and bias.dtype == DataType.INT32:
            inputs.append(op.DequantizeLinear(bias, op.Mul(x_scale, weight_scale), axis=0))
        elif bias is not None:
            inputs.append(bias)
        attributes = {k: a.value for k, a in node.attributes.items() if k != "weight_axis"}
        return [op.op(op_type, *inputs, **attributes)]

    return decompose


for _fused, _original in (("Int8Conv", "Conv"), ("Int8Gemm", "Gemm"), ("Int8MatMul", "MatMul")):
    register_custom_op(CustomOp(_fused, _infer, _decompose_with(_original), domain=GRAPHKILN_DOMAIN,
                                doc=f"{_original} on int8 codes with int32 accumulation (symmetric int8 activation)"))


# ---- rules ---------------------------------------------------------------------------------

def _symmetric_int8(zero_point: Value | None) -> bool:
    array = None if zero_point is None else zero_point.constant()
    return array is not None and zero_point.dtype == DataType.INT8 and not np.any(array)


def _check(ctx, x_scale, x_zero, x_scale2, x_zero2, weight, weight_scale, wdq, root, bias=None, bias_scale=None, **_):
    if x_scale is not x_scale2 or x_zero is not x_zero2:
        return fail("activation Q and DQ differ", root)
    if not _symmetric_int8(x_zero) or np.size(x_scale.constant() if x_scale.constant() is not None else [0, 0]) != 1:
        return fail("activation is not per-tensor symmetric int8", root)
    if weight.constant() is None or weight.dtype != DataType.INT8:
        return fail("weight is not an int8 constant", root)
    expected_axis = {"Conv": 0, "Gemm": 0 if root.attr("transB", 0) else 1, "MatMul": 1}[root.op_type]
    if np.size(weight_scale.constant()) > 1 and wdq.attr("axis", 1) != expected_axis:
        return fail("weight scales are not per output channel", root)
    if root.op_type == "Gemm" and (root.attr("transA", 0) or root.attr("alpha", 1.0) != 1.0 or root.attr("beta", 1.0) != 1.0):
        return fail("Gemm with transA/alpha/beta", root)
    if root.op_type == "MatMul" and len(weight.shape or ()) != 2:
        return fail("MatMul weight is not 2-D", root)
    if bias is not None and (bias.constant() is None or bias.dtype not in (DataType.INT32, DataType.FLOAT) or len(bias.shape or ()) != 1):
        return fail("bias is not a 1-D int32 or float constant", root)
    return True


def _replace(op, x, x_scale, x_zero, weight, weight_scale, wdq, root, bias=None, **_):
    attributes = {k: a.value for k, a in root.attributes.items()}
    axis = {"Conv": 0, "Gemm": 0 if root.attr("transB", 0) else 1, "MatMul": 1}[root.op_type]
    inputs = [x, x_scale, x_zero, weight, weight_scale] + ([bias] if bias is not None else [])
    return op.op(f"Int8{root.op_type}", *inputs, _domain=GRAPHKILN_DOMAIN, weight_axis=axis, **attributes)


def _activation(op, x, x_scale, x_zero, x_scale2, x_zero2):
    return op.DequantizeLinear(op.QuantizeLinear(x, x_scale, x_zero), x_scale2, x_zero2)


def _plain_pattern(op_type: str):
    def pattern(op, x, x_scale, x_zero, x_scale2, x_zero2, weight, weight_scale):
        return getattr(op, op_type)(_activation(op, x, x_scale, x_zero, x_scale2, x_zero2),
                                    op.DequantizeLinear(weight, weight_scale, _capture="wdq"), _capture="root")

    return pattern


def _biased_pattern(op_type: str):
    def pattern(op, x, x_scale, x_zero, x_scale2, x_zero2, weight, weight_scale, bias, bias_scale):
        return getattr(op, op_type)(_activation(op, x, x_scale, x_zero, x_scale2, x_zero2),
                                    op.DequantizeLinear(weight, weight_scale, _capture="wdq"),
                                    op.DequantizeLinear(bias, bias_scale, _capture="bdq"), _capture="root")

    return pattern


def _float_bias_pattern(op_type: str):
    def pattern(op, x, x_scale, x_zero, x_scale2, x_zero2, weight, weight_scale, bias):
        return getattr(op, op_type)(_activation(op, x, x_scale, x_zero, x_scale2, x_zero2),
                                    op.DequantizeLinear(weight, weight_scale, _capture="wdq"), bias, _capture="root")

    return pattern


def _rules() -> list[Rule]:
    rules = [Rule(f"int8_{t.lower()}", _plain_pattern(t), _replace, _check, allow_shared=True) for t in ("Conv", "Gemm", "MatMul")]
    rules += [Rule(f"int8_{t.lower()}_bias", _biased_pattern(t), _replace, _check, allow_shared=True) for t in ("Conv", "Gemm")]
    rules += [Rule(f"int8_{t.lower()}_float_bias", _float_bias_pattern(t), _replace, _check, allow_shared=True) for t in ("Conv", "Gemm")]
    return rules


@register_pass
class Int8KernelsPass(RewritePass):
    name = "int8_kernels"
    description = "fuse Q/DQ around Conv/Gemm/MatMul into int8 x int8 -> int32 ops (JAX backend)"
    rules = _rules()

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if ctx.backend not in INT8_BACKENDS or ctx.option("int8_kernels") is False:
            ctx.note(f"int8_kernels: backend {ctx.backend} runs the Q/DQ form as is")
            return PassResult(graph, False)
        return super().run(graph, ctx)
