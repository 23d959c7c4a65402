"""Matrix products in the precision the user asked for (`--precision fp32|bf16|fp16`).

Lowering rules for MatMul, Gemm, Conv, Einsum, attention (and anything else whose cost is a
contraction) call these helpers instead of jnp/lax directly, so one switch changes them all:

- ``matmul(ctx, a, b)``: ONNX/numpy MatMul semantics (batch broadcasting, 1-D operands).
- ``dot_general(ctx, a, b, dimension_numbers)``: lax.dot_general.
- ``einsum(ctx, equation, *operands)``: jnp.einsum.
- ``conv(ctx, lhs, rhs, window_strides, padding, ...)``: lax.conv_general_dilated (NCHW/OIHW by
  default, the ONNX layouts).
- ``attention(ctx, q, k, v, mask=None, scale=None, is_causal=False)``: ai.graphkiln Attention
  semantics, layout [B, H, S, D] (jax.nn.dot_product_attention underneath).

With ``ctx.precision`` "bf16" or "fp16", floating operands are cast to that type and the product
is accumulated in float32 (``preferred_element_type``); the result comes back in the operands'
original dtype, so the rest of the graph is unchanged. With "fp32" (the default) products run at
``Precision.HIGHEST``: full float32 on every platform (no TF32 on GPUs), matching onnxruntime.
Integer operands are never cast. ``ctx`` may be a LoweringContext, a precision string or None.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .conv_forms import depthwise_conv, is_depthwise, is_patchify, is_pointwise, patchify_conv, pointwise_conv
from .panel_matmul import PanelWeight, panel_matmul, runs_natively
from .weight_layout import RowsAlongK

LOW_PRECISION_TYPES = {"bf16": jnp.bfloat16, "fp16": jnp.float16}
PRECISIONS = ("fp32", *LOW_PRECISION_TYPES)


def with_matmul_precision(function: Callable[..., Any], precision: str) -> Callable[..., Any]:
    """`function` traced under jax.default_matmul_precision: "highest" for fp32 (so even a rule that
    calls jnp.dot directly gets full float32, not TF32 on GPUs), the platform default otherwise."""
    setting = "highest" if precision_name(precision) == "fp32" else "default"

    @functools.wraps(function)
    def traced(*args: Any, **kwargs: Any) -> Any:
        with jax.default_matmul_precision(setting):
            return function(*args, **kwargs)

    return traced


def precision_name(ctx: Any) -> str:
    """The precision string of a LoweringContext (or a string, or None -> "fp32")."""
    name = ctx if isinstance(ctx, str) or ctx is None else getattr(ctx, "precision", "fp32")
    name = name or "fp32"
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}")
    return name


def compute_dtype(ctx: Any) -> Any | None:
    """The operand type for contractions under `ctx`, or None when operands stay as they are."""
    return LOW_PRECISION_TYPES.get(precision_name(ctx))


def _is_float(array: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(array), jnp.floating)


def _prepare(ctx: Any, operands: Sequence[Any]) -> tuple[list[Any], Any, dict[str, Any]]:
    """Cast floating operands to the compute type; return them, the result dtype and the keyword
    arguments (precision, preferred_element_type) for the lax/jnp call."""
    operands = [jnp.asarray(o) for o in operands]
    if not all(_is_float(o) for o in operands):
        return operands, None, {}
    result_dtype = jnp.result_type(*operands)
    target = compute_dtype(ctx)
    if target is None:
        return operands, result_dtype, {"precision": lax.Precision.HIGHEST}
    accumulate = jnp.promote_types(result_dtype, jnp.float32)
    cast = [o.astype(target) for o in operands]
    return cast, result_dtype, {"preferred_element_type": accumulate}


def _finish(result: Any, result_dtype: Any) -> Any:
    return result if result_dtype is None or result.dtype == result_dtype else result.astype(result_dtype)


def matmul(ctx: Any, a: Any, b: Any) -> Any:
    """`a @ b` with numpy/ONNX MatMul semantics, in ctx's precision with float32 accumulation."""
    if isinstance(b, RowsAlongK):  # [..., K] x [N, K] -> [..., N], the weight read in place
        return dot_general(ctx, a, b.rows, (((jnp.ndim(a) - 1,), (1,)), ((), ())))
    if isinstance(b, PanelWeight):
        if runs_natively(a, b):
            return panel_matmul(a, b)
        b = b.dense()
    (a, b), result_dtype, kwargs = _prepare(ctx, (a, b))
    return _finish(jnp.matmul(a, b, **kwargs), result_dtype)


def dot_general(ctx: Any, a: Any, b: Any, dimension_numbers: Any) -> Any:
    """lax.dot_general in ctx's precision with float32 accumulation."""
    (a, b), result_dtype, kwargs = _prepare(ctx, (a, b))
    return _finish(lax.dot_general(a, b, dimension_numbers, **kwargs), result_dtype)


def einsum(ctx: Any, equation: str, *operands: Any) -> Any:
    """jnp.einsum in ctx's precision with float32 accumulation."""
    cast, result_dtype, kwargs = _prepare(ctx, operands)
    return _finish(jnp.einsum(equation, *cast, **kwargs), result_dtype)


def conv(
    ctx: Any,
    lhs: Any,
    rhs: Any,
    window_strides: Sequence[int],
    padding: Sequence[tuple[int, int]] | str,
    *,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
) -> Any:
    """lax.conv_general_dilated (default layouts NCHW x OIHW -> NCHW, any spatial rank) in ctx's
    precision with float32 accumulation; depthwise and 1x1 convolutions in cheaper forms (conv_forms.py)."""
    (lhs, rhs), result_dtype, kwargs = _prepare(ctx, (lhs, rhs))
    if result_dtype is not None and is_depthwise(lhs, rhs, padding, lhs_dilation, dimension_numbers,
                                                 feature_group_count, batch_group_count):
        # sums of half-precision products lose digits: accumulate in at least float32
        accumulate = kwargs.get("preferred_element_type", jnp.promote_types(result_dtype, jnp.float32))
        return _finish(depthwise_conv(lhs, rhs, window_strides, padding, rhs_dilation, accumulate), result_dtype)
    if result_dtype is not None and is_pointwise(lhs, rhs, padding, lhs_dilation, dimension_numbers,
                                                 feature_group_count, batch_group_count):
        return _finish(pointwise_conv(lhs, rhs, window_strides, **kwargs), result_dtype)
    if result_dtype is not None and is_patchify(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                                dimension_numbers, feature_group_count, batch_group_count):
        return _finish(patchify_conv(lhs, rhs, **kwargs), result_dtype)
    if dimension_numbers is None:
        spatial = "".join("DHW"[-(lhs.ndim - 2):]) if lhs.ndim <= 5 else None
        if spatial is None:
            raise ValueError(f"conv: give dimension_numbers for rank-{lhs.ndim} operands")
        dimension_numbers = (f"NC{spatial}", f"OI{spatial}", f"NC{spatial}")
    result = lax.conv_general_dilated(
        lhs, rhs, tuple(window_strides), padding,
        lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count, **kwargs,
    )
    return _finish(result, result_dtype)


def attention(ctx: Any, q: Any, k: Any, v: Any, mask: Any = None, *, scale: float | None = None,
              is_causal: bool = False) -> Any:
    """ai.graphkiln Attention: softmax(scale * q k^T + mask) v with q [B, H, Sq, D], k [B, Hkv, Sk, D],
    v [B, Hkv, Sk, Dv] (H a multiple of Hkv); mask bool (True = attend) or additive float,
    broadcastable to [B, H, Sq, Sk]; causal aligns the last query with the last key."""
    q, k, v = (jnp.asarray(x) for x in (q, k, v))
    result_dtype = jnp.result_type(q, k, v)
    batch, heads, query_length, depth = q.shape
    key_length = k.shape[2]
    if scale is None:
        scale = 1.0 / float(np.sqrt(depth))
    if v.shape[-1] != depth:
        return _attention_einsum(ctx, q, k, v, mask, scale, is_causal, result_dtype)
    target = compute_dtype(ctx)
    work_dtype = target if target is not None else result_dtype
    bias, bool_mask = _split_mask(mask, (batch, heads, query_length, key_length))
    if is_causal:
        causal = _causal_mask(query_length, key_length)
        bool_mask = causal if bool_mask is None else jnp.logical_and(bool_mask, causal)
    query, key, value = (jnp.swapaxes(x, 1, 2).astype(work_dtype) for x in (q, k, v))
    if bias is not None:
        bias = bias.astype(jnp.promote_types(work_dtype, jnp.float32))
    with jax.default_matmul_precision("highest" if target is None else "default"):
        out = jax.nn.dot_product_attention(query, key, value, bias=bias, mask=bool_mask, scale=scale)
    return jnp.swapaxes(out, 1, 2).astype(result_dtype)


def _attention_einsum(ctx, q, k, v, mask, scale, is_causal, result_dtype):
    """Attention by explicit contractions (value depth differs from key depth)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = jnp.repeat(k, groups, axis=1), jnp.repeat(v, groups, axis=1)
    scores = einsum(ctx, "bhqd,bhkd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    bias, bool_mask = _split_mask(mask, scores.shape)
    if bias is not None:
        scores = scores + bias.astype(scores.dtype)
    if is_causal:
        causal = _causal_mask(q.shape[2], k.shape[2])
        bool_mask = causal if bool_mask is None else jnp.logical_and(bool_mask, causal)
    if bool_mask is not None:
        scores = jnp.where(bool_mask, scores, jnp.finfo(scores.dtype).min)
    probabilities = jax.nn.softmax(scores, axis=-1)
    return einsum(ctx, "bhqk,bhkd->bhqd", probabilities, v.astype(jnp.float32)).astype(result_dtype)


def _split_mask(mask: Any, shape: tuple) -> tuple[Any, Any]:
    """(additive bias, boolean mask), each rank 4 with broadcastable dims, or None."""
    if mask is None:
        return None, None
    mask = jnp.asarray(mask)
    while mask.ndim < 4:
        mask = mask[None]
    # dot_product_attention wants batch and key/query dims concrete; heads may stay 1
    target = (shape[0], mask.shape[1], shape[2], shape[3])
    mask = jnp.broadcast_to(mask, target)
    if mask.dtype == jnp.bool_:
        return None, mask
    return mask, None


def _causal_mask(query_length: int, key_length: int) -> Any:
    """[1, 1, Sq, Sk]: query i may attend key j when j <= i + (Sk - Sq)."""
    rows = jnp.arange(query_length)[:, None]
    cols = jnp.arange(key_length)[None, :]
    return (cols <= rows + (key_length - query_length))[None, None]
