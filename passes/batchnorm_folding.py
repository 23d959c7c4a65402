"""BatchNormalization folded into the weights of the Conv, ConvTranspose, Gemm or 2-D MatMul before
it: y = x*a + (B - mean*a) with a = scale/sqrt(var+eps) per output channel."""

from __future__ import annotations

import numpy as np

from compiler.pass_infra import register_pass
from compiler.rewriter import AttrVar, Rule, fail

from .rewrite_pass import RewritePass

FLOAT_KINDS = "f"


def _affine(scale, bias, mean, var, epsilon) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multiplier and offset of an inference BatchNormalization."""
    arrays = [np.asarray(v.constant(), np.float64) for v in (scale, bias, mean, var)]
    multiplier = arrays[0] / np.sqrt(arrays[3] + epsilon)
    return multiplier, arrays[1] - arrays[2] * multiplier


def _bn(op, producer, scale, bias, mean, var):
    return op.BatchNormalization(producer, scale, bias, mean, var, epsilon=AttrVar("epsilon", 1e-5),
                                 training_mode=AttrVar("training", 0), _outputs=1, _capture="bn")


def _foldable(ctx, bn, training, scale, bias, mean, var, weights, producer_bias=None, **_):
    if training:
        return fail("BatchNormalization runs in training mode", bn)
    if any(v.uses or v.is_graph_output() for v in bn.outputs[1:]):
        return fail("the running statistics outputs are read", bn)
    needed = [scale, bias, mean, var, weights] + ([producer_bias] if producer_bias is not None else [])
    for value in needed:
        array = value.constant()
        if array is None:
            return fail(f"{value.name!r} is not a constant", bn)
        if array.dtype.kind not in FLOAT_KINDS:
            return fail(f"{value.name!r} is not floating point", bn)
    if np.asarray(scale.constant()).ndim != 1:
        return fail("the BatchNormalization parameters are not per-channel vectors", bn)
    return True


def _conv_pattern(op_type, with_bias):
    if with_bias:
        def pattern(op, x, weights, producer_bias, scale, bias, mean, var):
            producer = getattr(op, op_type)(x, weights, producer_bias, _capture="producer")
            return _bn(op, producer, scale, bias, mean, var)
    else:
        def pattern(op, x, weights, scale, bias, mean, var):
            return _bn(op, getattr(op, op_type)(x, weights, _capture="producer"), scale, bias, mean, var)
    return pattern


def _scaled_conv(op, x, weights, scale, bias, mean, var, epsilon, producer, producer_bias=None, **_):
    multiplier, offset = _affine(scale, bias, mean, var, epsilon)
    kernel = np.asarray(weights.constant())
    if producer.op_type == "Conv":
        scaled = kernel * multiplier.reshape((-1,) + (1,) * (kernel.ndim - 1))
    else:  # ConvTranspose weights: [Cin, Cout/group, k...]
        groups = producer.attr("group", 1)
        grouped = kernel.reshape((groups, kernel.shape[0] // groups) + kernel.shape[1:])
        scaled = (grouped * multiplier.reshape((groups, 1, -1) + (1,) * (kernel.ndim - 2))).reshape(kernel.shape)
    old_bias = np.zeros_like(offset) if producer_bias is None else np.asarray(producer_bias.constant(), np.float64)
    new_bias = old_bias * multiplier + offset
    dtype = kernel.dtype
    return op.op(producer.op_type, x, op.const(scaled.astype(dtype)), op.const(new_bias.astype(dtype)),
                 **dict(producer.attributes))


def _gemm_pattern(with_c):
    if with_c:
        def pattern(op, a, weights, c, scale, bias, mean, var):
            return _bn(op, op.Gemm(a, weights, c, _capture="producer"), scale, bias, mean, var)
    else:
        def pattern(op, a, weights, scale, bias, mean, var):
            return _bn(op, op.Gemm(a, weights, _capture="producer"), scale, bias, mean, var)
    return pattern


def _gemm_foldable(ctx, bn, training, scale, bias, mean, var, weights, c=None, **_):
    return _foldable(ctx, bn, training, scale, bias, mean, var, weights, c)


def _scaled_gemm(op, a, weights, scale, bias, mean, var, epsilon, producer, c=None, **_):
    multiplier, offset = _affine(scale, bias, mean, var, epsilon)
    kernel = np.asarray(weights.constant())
    alpha, beta = producer.attr("alpha", 1.0), producer.attr("beta", 1.0)
    trans_b = producer.attr("transB", 0)
    scaled = kernel * (multiplier[:, None] if trans_b else multiplier[None, :]) * alpha
    old_c = np.zeros(1) if c is None else np.asarray(c.constant(), np.float64) * beta
    new_c = old_c * multiplier + offset
    return op.Gemm(a, op.const(scaled.astype(kernel.dtype)), op.const(new_c.astype(kernel.dtype)),
                   transA=producer.attr("transA", 0) or None, transB=trans_b or None)


def _matmul_pattern(op, a, weights, scale, bias, mean, var):
    return _bn(op, op.MatMul(a, weights, _capture="producer"), scale, bias, mean, var)


def _matmul_foldable(ctx, bn, training, scale, bias, mean, var, a, weights, **_):
    if a.shape is None or len(a.shape) != 2 or weights.shape is None or len(weights.shape) != 2:
        return fail("MatMul is not 2-D x 2-D, so BatchNormalization's channel axis is not its last", bn)
    if a.dtype is None or a.dtype.name not in ("FLOAT", "FLOAT16", "DOUBLE"):
        return fail("Gemm does not take this dtype", bn)
    return _foldable(ctx, bn, training, scale, bias, mean, var, weights)


def _matmul_to_gemm(op, a, weights, scale, bias, mean, var, epsilon, **_):
    multiplier, offset = _affine(scale, bias, mean, var, epsilon)
    kernel = np.asarray(weights.constant())
    return op.Gemm(a, op.const((kernel * multiplier[None, :]).astype(kernel.dtype)), op.const(offset.astype(kernel.dtype)))


RULES = [
    Rule("fold_batchnorm_into_conv", _conv_pattern("Conv", False), _scaled_conv, _foldable),
    Rule("fold_batchnorm_into_conv_bias", _conv_pattern("Conv", True), _scaled_conv, _foldable),
    Rule("fold_batchnorm_into_conv_transpose", _conv_pattern("ConvTranspose", False), _scaled_conv, _foldable),
    Rule("fold_batchnorm_into_conv_transpose_bias", _conv_pattern("ConvTranspose", True), _scaled_conv, _foldable),
    Rule("fold_batchnorm_into_gemm", _gemm_pattern(False), _scaled_gemm, _gemm_foldable),
    Rule("fold_batchnorm_into_gemm_bias", _gemm_pattern(True), _scaled_gemm, _gemm_foldable),
    Rule("fold_batchnorm_into_matmul", _matmul_pattern, _matmul_to_gemm, _matmul_foldable),
]


@register_pass
class FoldBatchNorm(RewritePass):
    name = "fold_batchnorm"
    description = "fold inference BatchNormalization into Conv/ConvTranspose/Gemm/MatMul weights"
    rules = RULES
