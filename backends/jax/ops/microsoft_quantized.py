"""onnxruntime's com.microsoft quantized ops, as its static quantizer writes them in the QOperator
format (quantize_static(quant_format=QOperator)): QLinearAdd/Mul, QLinearSigmoid, QLinearLeakyRelu,
QLinearSoftmax, QLinearGlobalAveragePool, QLinearConcat and QGemm, each dequantized, computed in
float32 and requantized (round half to even, saturate) to its output's scale and zero point;
DynamicQuantizeMatMul and MatMulIntegerToFloat, its fusions of dynamically quantized MatMuls; and
MatMulNBits, the blockwise 2/4/8-bit weights of onnxruntime-genai / Olive LLM exports."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..registry import LoweringContext, lowering
from .activations import softmax, softmax_legacy
from .quantization import dequantize, dynamic_quantize_linear, matmul_integer, quantize

MICROSOFT = "com.microsoft"


def _requantize(values: Any, scale: Any, zero_point: Any, like: Any) -> Any:
    """`values` quantized to (scale, zero_point), in zero_point's type (else the input's)."""
    target = np.dtype(jnp.asarray(zero_point).dtype if zero_point is not None else jnp.asarray(like).dtype)
    return quantize(values, scale, zero_point, target)


def _binary(op_type: str, function: Any) -> None:
    def rule(ctx: LoweringContext, a: Any, a_scale: Any, a_zero_point: Any, b: Any, b_scale: Any,
             b_zero_point: Any = None, c_scale: Any = None, c_zero_point: Any = None) -> Any:
        result = function(dequantize(a, a_scale, a_zero_point), dequantize(b, b_scale, b_zero_point))
        return _requantize(result, c_scale, c_zero_point, a)

    rule.__doc__ = f"{op_type}: quantize({function.__name__}(dequantize(A), dequantize(B)))."
    lowering(op_type, domain=MICROSOFT)(rule)


_binary("QLinearAdd", jnp.add)
_binary("QLinearMul", jnp.multiply)


def _unary(op_type: str, function: Any) -> None:
    def rule(ctx: LoweringContext, x: Any, x_scale: Any, x_zero_point: Any, y_scale: Any, y_zero_point: Any = None,
             **attrs: Any) -> Any:
        return _requantize(function(dequantize(x, x_scale, x_zero_point), **attrs), y_scale, y_zero_point, x)

    lowering(op_type, domain=MICROSOFT)(rule)


_unary("QLinearSigmoid", jax.nn.sigmoid)
_unary("QLinearLeakyRelu", lambda x, alpha=0.01: jnp.where(x >= 0, x, alpha * x))


@lowering("QLinearSoftmax", domain=MICROSOFT)
def qlinear_softmax(ctx: LoweringContext, x: Any, x_scale: Any, x_zero_point: Any, y_scale: Any, y_zero_point: Any = None,
                    axis: int = -1, opset: int = 13) -> Any:
    """Softmax of the dequantized input with the semantics of Softmax at `opset` (13+: one axis)."""
    values = dequantize(x, x_scale, x_zero_point)
    result = softmax(ctx, values, axis) if opset >= 13 else softmax_legacy(ctx, values, axis)
    return _requantize(result, y_scale, y_zero_point, x)


@lowering("QLinearGlobalAveragePool", domain=MICROSOFT)
def qlinear_global_average_pool(ctx: LoweringContext, x: Any, x_scale: Any, x_zero_point: Any, y_scale: Any,
                                y_zero_point: Any = None, channels_last: int = 0) -> Any:
    """Mean over the spatial axes (N C *S, or N *S C with channels_last), kept as size-1 axes."""
    values = dequantize(x, x_scale, x_zero_point)
    axes = tuple(range(1, values.ndim - 1)) if channels_last else tuple(range(2, values.ndim))
    return _requantize(jnp.mean(values, axis=axes, keepdims=True), y_scale, y_zero_point, x)


@lowering("QLinearConcat", domain=MICROSOFT)
def qlinear_concat(ctx: LoweringContext, y_scale: Any, y_zero_point: Any, *triples: Any, axis: int) -> Any:
    """Concat of (X, scale, zero point) triples, requantized to (Y_scale, Y_zero_point)."""
    if len(triples) % 3:
        raise ctx.fail(f"expected (tensor, scale, zero point) triples after Y_scale/Y_zero_point, got {len(triples)} inputs")
    parts = [dequantize(triples[i], triples[i + 1], triples[i + 2]) for i in range(0, len(triples), 3)]
    return _requantize(jnp.concatenate(parts, axis=axis), y_scale, y_zero_point, triples[0])


@lowering("QGemm", domain=MICROSOFT)
def qgemm(ctx: LoweringContext, a: Any, a_scale: Any, a_zero_point: Any, b: Any, b_scale: Any, b_zero_point: Any,
          c: Any = None, y_scale: Any = None, y_zero_point: Any = None, alpha: float = 1.0, transA: int = 0,  # noqa: N803
          transB: int = 0) -> Any:  # noqa: N803
    """alpha * A' B' on the integers (int32 accumulation) times a_scale * b_scale, plus the int32
    bias C at scale alpha * a_scale * b_scale; quantized to (y_scale, y_zero_point) when given,
    else float32. b_scale/b_zero_point may be per output column."""
    a = jnp.asarray(a).astype(jnp.int32)
    b = jnp.asarray(b).astype(jnp.int32)
    a = a.T if transA else a
    b = b.T if transB else b
    a = a - jnp.asarray(a_zero_point).astype(jnp.int32)
    b = b - jnp.asarray(b_zero_point).astype(jnp.int32).reshape(-1)  # one zero point, or one per column
    accumulated = jax.lax.dot(a, b, preferred_element_type=jnp.int32)
    if c is not None:
        accumulated = accumulated + jnp.asarray(c).astype(jnp.int32)
    scale = jnp.asarray(a_scale, jnp.float32) * jnp.asarray(b_scale, jnp.float32).reshape(-1) * jnp.float32(alpha)
    result = accumulated.astype(jnp.float32) * scale
    if y_scale is None:
        return result
    return _requantize(result, y_scale, y_zero_point, a_zero_point)


def _unpack(packed: Any, bits: int, count: int) -> Any:
    """The first `count` `bits`-bit codes of each row of uint8 `packed`, low bits first."""
    packed = jnp.asarray(packed).astype(jnp.uint8)
    per_byte = 8 // bits
    shifts = jnp.arange(per_byte, dtype=jnp.uint8) * bits
    codes = (packed[..., None] >> shifts) & jnp.uint8((1 << bits) - 1)
    return codes.reshape(packed.shape[:-1] + (-1,))[..., :count]


@lowering("MatMulNBits", domain=MICROSOFT)
def matmul_nbits(ctx: LoweringContext, a: Any, b: Any, scales: Any, zero_points: Any = None, g_idx: Any = None,
                 bias: Any = None, *, K: int, N: int, bits: int = 4, block_size: int, accuracy_level: int = 0) -> Any:  # noqa: N803
    """A @ W with W [K, N] stored as blocks of `bits`-bit codes: B [N, blocks, block_size * bits / 8],
    scales [N * blocks], zero points packed like B (or floats; default 2^(bits-1)), optional bias."""
    if bits not in (2, 4, 8):
        raise ctx.fail(f"bits={bits}: only 2, 4 and 8 are lowered")
    if g_idx is not None:
        raise ctx.fail("g_idx (act-order groups) is not lowered")
    del accuracy_level  # a kernel choice in onnxruntime; the math is the same
    blocks = -(-K // block_size)
    codes = _unpack(b, bits, block_size).reshape(N, blocks, block_size).astype(jnp.float32)
    scale = jnp.asarray(scales).astype(jnp.float32).reshape(N, blocks, 1)
    if zero_points is None:
        zero = jnp.float32(1 << (bits - 1))
    elif jnp.issubdtype(jnp.asarray(zero_points).dtype, jnp.floating):
        zero = jnp.asarray(zero_points).astype(jnp.float32).reshape(N, blocks, 1)
    else:
        zero = _unpack(jnp.asarray(zero_points).reshape(N, -1), bits, blocks).astype(jnp.float32).reshape(N, blocks, 1)
    weight = ((codes - zero) * scale).reshape(N, blocks * block_size)[:, :K]  # [N, K]
    a = jnp.asarray(a)
    y = jax.lax.dot_general(a.astype(jnp.float32), weight, (((a.ndim - 1,), (1,)), ((), ())),
                            precision=jax.lax.Precision.HIGHEST)
    if bias is not None:
        y = y + jnp.asarray(bias).astype(jnp.float32)
    return y.astype(a.dtype)


@lowering("MatMulIntegerToFloat", domain=MICROSOFT)
def matmul_integer_to_float(ctx: LoweringContext, a: Any, b: Any, a_scale: Any, b_scale: Any, a_zero_point: Any = None,
                            b_zero_point: Any = None, bias: Any = None) -> Any:
    """(A - a_zp) @ (B - b_zp) on the integers, times a_scale * b_scale (per column or not), + bias;
    what onnxruntime fuses a dynamically quantized MatMul's integer product and rescale into."""
    product = matmul_integer(ctx, a, b, a_zero_point, b_zero_point).astype(jnp.float32)
    result = product * jnp.asarray(a_scale, jnp.float32) * jnp.asarray(b_scale, jnp.float32)
    return result if bias is None else result + jnp.asarray(bias, jnp.float32)


@lowering("DynamicQuantizeMatMul", domain=MICROSOFT)
def dynamic_quantize_matmul(ctx: LoweringContext, a: Any, b: Any, b_scale: Any, b_zero_point: Any = None,
                            bias: Any = None) -> Any:
    """A quantized to uint8 from its own range (DynamicQuantizeLinear), then MatMulIntegerToFloat."""
    codes, a_scale, a_zero_point = dynamic_quantize_linear(ctx, a)
    return matmul_integer_to_float(ctx, codes, b, a_scale, b_scale, a_zero_point, b_zero_point, bias)
