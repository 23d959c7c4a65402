"""Bias epilogues expressed by standard ops: Conv/ConvTranspose + Add(per-channel constant) -> the
bias input; MatMul + Add -> Gemm where both are 2-D (no Reshape added); Gemm + Add(constant) -> C."""

from __future__ import annotations

import numpy as np

from compiler.pass_infra import register_pass
from compiler.rewriter import Rule, fail

from .rewrite_pass import RewritePass
from .shape_facts import dimension_tokens

GEMM_TYPES = ("FLOAT", "FLOAT16", "DOUBLE")


def channel_vector(array: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """`array` as a [channels] vector if adding it to an N,C,... tensor of `rank` only varies over C."""
    if array.ndim > rank or array.dtype.kind != "f":
        return None
    full = array.reshape((1,) * (rank - array.ndim) + array.shape)
    if any(d != 1 for i, d in enumerate(full.shape) if i != 1) or full.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(full.reshape(-1), (channels,))


def _conv_pattern(op_type, with_bias):
    if with_bias:
        def pattern(op, x, weights, bias, addend):
            return op.Add(getattr(op, op_type)(x, weights, bias, _capture="conv"), addend)
    else:
        def pattern(op, x, weights, addend):
            return op.Add(getattr(op, op_type)(x, weights, _capture="conv"), addend)
    return pattern


def _conv_channels(conv) -> int | None:
    shape = conv.outputs[0].shape
    return shape[1] if shape is not None and len(shape) > 1 and isinstance(shape[1], int) else None


def _conv_addend_fits(ctx, conv, addend, bias=None, **_):
    array, channels = addend.constant(), _conv_channels(conv)
    if array is None or channels is None:
        return fail("the addend is not a constant (or the channel count is unknown)", ctx.root)
    if channel_vector(np.asarray(array), len(conv.outputs[0].shape), channels) is None:
        return fail(f"the addend of shape {list(np.shape(array))} is not per-channel", ctx.root)
    if bias is not None and bias.constant() is None:
        return fail("the existing bias is not a constant", ctx.root)
    return True


def _conv_with_bias(op, x, weights, addend, conv, bias=None, **_):
    channels = _conv_channels(conv)
    vector = channel_vector(np.asarray(addend.constant()), len(conv.outputs[0].shape), channels)
    total = vector if bias is None else np.asarray(bias.constant()) + vector
    return op.op(conv.op_type, x, weights, op.const(np.ascontiguousarray(total, dtype=np.asarray(addend.constant()).dtype)),
                 **dict(conv.attributes))


def _keeps_shape(value, other) -> bool:
    tokens, extra = dimension_tokens(value), dimension_tokens(other)
    if tokens is None or extra is None or len(extra) > len(tokens):
        return False
    return all(d == 1 or d == t for d, t in zip(extra, tokens[len(tokens) - len(extra):]))


def _matmul_add(op, a, b, addend):
    return op.Add(op.MatMul(a, b, _capture="matmul"), addend)


def _gemm_expresses(ctx, a, b, addend, matmul, **_):
    for value in (a, b):
        if value.shape is None or len(value.shape) != 2:
            return fail(f"{value.name!r} is not 2-D; a Gemm would need Reshapes", matmul)
    if a.dtype is None or a.dtype.name not in GEMM_TYPES:
        return fail("Gemm does not take this dtype", matmul)
    if not _keeps_shape(matmul.outputs[0], addend):
        return fail("the addend does not broadcast to the MatMul result without growing it", ctx.root)
    return True


def _to_gemm(op, a, b, addend, **_):
    return op.Gemm(a, b, addend)


def _gemm_pattern(with_c):
    if with_c:
        def pattern(op, a, b, c, addend):
            return op.Add(op.Gemm(a, b, c, _capture="gemm"), addend)
    else:
        def pattern(op, a, b, addend):
            return op.Add(op.Gemm(a, b, _capture="gemm"), addend)
    return pattern


def _gemm_addend_fits(ctx, gemm, addend, c=None, **_):
    array = addend.constant()
    if array is None or (c is not None and c.constant() is None):
        return fail("the addend (or the Gemm's C) is not a constant", ctx.root)
    if np.ndim(array) > 2 or not _keeps_shape(gemm.outputs[0], addend):
        return fail("the addend does not broadcast to the Gemm result without growing it", ctx.root)
    return True


def _gemm_with_c(op, a, b, addend, gemm, c=None, **_):
    extra = np.asarray(addend.constant())
    total = extra if c is None else np.asarray(c.constant()) * gemm.attr("beta", 1.0) + extra
    attributes = {k: v for k, v in gemm.attributes.items() if k != "beta"}
    return op.Gemm(a, b, op.const(total.astype(extra.dtype)), **attributes)


RULES = [
    Rule("conv_add_to_bias", _conv_pattern("Conv", False), _conv_with_bias, _conv_addend_fits),
    Rule("conv_bias_add_to_bias", _conv_pattern("Conv", True), _conv_with_bias, _conv_addend_fits),
    Rule("conv_transpose_add_to_bias", _conv_pattern("ConvTranspose", False), _conv_with_bias, _conv_addend_fits),
    Rule("conv_transpose_bias_add_to_bias", _conv_pattern("ConvTranspose", True), _conv_with_bias, _conv_addend_fits),
    Rule("matmul_add_to_gemm", _matmul_add, _to_gemm, _gemm_expresses),
    Rule("gemm_add_to_c", _gemm_pattern(False), _gemm_with_c, _gemm_addend_fits),
    Rule("gemm_c_add_to_c", _gemm_pattern(True), _gemm_with_c, _gemm_addend_fits),
]


@register_pass
class FuseBiasEpilogues(RewritePass):
    name = "fuse_bias_epilogues"
    description = "fold bias Adds into Conv/ConvTranspose bias and Gemm C; 2-D MatMul + Add -> Gemm"
    rules = RULES
