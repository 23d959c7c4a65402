"""ONNX Attention (opsets 23-25): 3-D/4-D inputs, KV cache (past/present), grouped-query heads,
bool/additive masks, causal and sliding-window masks, nonpad_kv_seqlen, softcap,
softmax_precision and the qk_matmul_output modes. Contractions go through precision.einsum."""

from __future__ import annotations

import functools

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import native_attention, precision
from ..native_rewrites import NATIVE_DOMAIN, VIEW_ATTENTION
from ..registry import LoweringContext, lowering
from ..view_chains import replay, strided_view
from ._helpers import numpy_dtype

MODE_WITH_BIAS = 2
MODE_AFTER_SOFTMAX = 3


def _to_heads(x: Any, heads: int) -> Any:
    """[B, S, H*D] -> [B, H, S, D]."""
    batch, length, hidden = x.shape
    return jnp.transpose(x.reshape(batch, length, heads, hidden // heads), (0, 2, 1, 3))


def safe_softmax(scores: Any) -> Any:
    """Softmax over the last axis in which an all -inf row gives zeros, not NaN."""
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    safe_max = jnp.where(jnp.isneginf(row_max), jnp.zeros((), scores.dtype), row_max)
    exps = jnp.exp(scores - safe_max)
    total = jnp.sum(exps, axis=-1, keepdims=True)
    return exps / jnp.where(total == 0, jnp.ones((), total.dtype), total)


def _additive(mask: Any, dtype: Any) -> Any:
    """A bool mask (True = attend) as 0/-inf, or a float mask cast to `dtype`."""
    mask = jnp.asarray(mask)
    if mask.dtype == jnp.bool_:
        return jnp.where(mask, jnp.zeros((), dtype), jnp.full((), -jnp.inf, dtype))
    return mask.astype(dtype)


def _frontier_bias(query_length: int, key_length: int, offset: Any, allowed_fn, dtype: Any) -> Any:
    """0/-inf bias [q, kv] (scalar offset) or [B, 1, q, kv] (per-batch offset) from allowed_fn(diff)
    where diff = (i + offset) - j."""
    rows = jnp.arange(query_length).reshape(-1, 1)
    cols = jnp.arange(key_length).reshape(1, -1)
    per_batch = jnp.ndim(offset) > 0
    if per_batch:
        diff = rows[None] + jnp.asarray(offset).reshape(-1, 1, 1) - cols[None]
    else:
        diff = rows + offset - cols
    bias = jnp.where(allowed_fn(diff), jnp.zeros((), dtype), jnp.full((), -jnp.inf, dtype))
    return bias[:, None] if per_batch else bias


def _window_allowed(left: int, right: int):
    def allowed(diff: Any) -> Any:
        result = jnp.ones(diff.shape, jnp.bool_)
        if left >= 0:
            result &= diff <= left
        if right >= 0:
            result &= -diff <= right
        return result

    return allowed


def attention_bias(q_len: int, kv_len: int, batch: int, dtype: Any, mask: Any, is_causal: int, offset: Any,
                   nonpad_kv_seqlen: Any, left: int, right: int) -> Any:
    """The additive bias of ONNX Attention: mask (padded to kv_len) + causal + window + padding, in
    the shape its terms broadcast to, so a [B, 1, 1, kv_len] mask alone is not spread over the
    queries ([1, kv_len] zeros where there is no term)."""
    terms = []
    if mask is not None:
        mask = jnp.asarray(mask)
        missing = kv_len - mask.shape[-1]
        if missing > 0:
            fill = False if mask.dtype == jnp.bool_ else -jnp.inf
            mask = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, missing)], constant_values=fill)
        terms.append(_additive(mask, dtype))
    if is_causal:
        terms.append(_frontier_bias(q_len, kv_len, offset, lambda diff: diff >= 0, dtype))
    if left >= 0 or right >= 0:
        terms.append(_frontier_bias(q_len, kv_len, offset, _window_allowed(left, right), dtype))
    if nonpad_kv_seqlen is not None:
        valid = jnp.arange(kv_len)[None, :] < jnp.asarray(nonpad_kv_seqlen).reshape(-1, 1)
        terms.append(jnp.where(valid, jnp.zeros((), dtype), jnp.full((), -jnp.inf, dtype)).reshape(batch, 1, 1, kv_len))
    return functools.reduce(jnp.add, terms) if terms else jnp.zeros((1, kv_len), dtype)


@lowering("Attention", since=23)
def attention(ctx: LoweringContext, q: Any, k: Any, v: Any, attn_mask: Any = None, past_key: Any = None,
              past_value: Any = None, nonpad_kv_seqlen: Any = None, *, is_causal: int = 0, kv_num_heads: int | None = None,
              q_num_heads: int | None = None, qk_matmul_output_mode: int = 0, scale: float | None = None,
              softcap: float = 0.0, softmax_precision: int | None = None, left_window_size: int = -1,
              right_window_size: int = -1) -> Any:
    """Y, present_key, present_value, qk_matmul_output of ONNX Attention."""
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    three_d = q.ndim == 3
    q_heads, kv_heads = (q_num_heads or 0, kv_num_heads or 0) if three_d else (q.shape[1], k.shape[1])
    if native_attention.runs_natively(ctx, q, k, v, past_key=past_key, softcap=softcap,
                                      softmax_precision=softmax_precision, q_heads=q_heads, kv_heads=kv_heads):
        return _native(q, k, v, attn_mask, nonpad_kv_seqlen, is_causal, scale, left_window_size, right_window_size,
                       q_heads, kv_heads)
    if three_d:
        q, k, v = _to_heads(q, q_num_heads), _to_heads(k, kv_num_heads), _to_heads(v, kv_num_heads)
    dtype = q.dtype
    root_scale = jnp.asarray(np.sqrt(scale if scale is not None else 1.0 / np.sqrt(q.shape[3])), dtype)
    if past_key is not None:
        k = jnp.concatenate([jnp.asarray(past_key), k], axis=2)
        v = jnp.concatenate([jnp.asarray(past_value), v], axis=2)
    present_key, present_value = k, v
    batch, heads, q_len = q.shape[:3]
    kv_len = k.shape[2]
    if past_key is not None:
        offset = past_key.shape[2]
    elif nonpad_kv_seqlen is not None:
        offset = jnp.asarray(nonpad_kv_seqlen).reshape(-1) - q_len
    else:
        offset = 0
    bias = attention_bias(q_len, kv_len, batch, dtype, attn_mask, is_causal, offset, nonpad_kv_seqlen,
                          left_window_size, right_window_size)
    if heads != k.shape[1]:
        k = jnp.repeat(k, heads // k.shape[1], axis=1)
        v = jnp.repeat(v, heads // v.shape[1], axis=1)
    scores = precision.einsum(ctx, "bhqd,bhkd->bhqk", q * root_scale, k * root_scale)
    if softcap and softcap > 0:
        scores = jnp.tanh(scores / jnp.asarray(softcap, scores.dtype)) * jnp.asarray(softcap, scores.dtype)
    with_bias = scores + bias
    qk_output = with_bias if qk_matmul_output_mode == MODE_WITH_BIAS else scores
    if softmax_precision is not None:
        with_bias = with_bias.astype(numpy_dtype(softmax_precision))
    probabilities = safe_softmax(with_bias)
    fully_masked = jnp.isneginf(jnp.max(bias, axis=-1, keepdims=True))
    probabilities = jnp.where(fully_masked, jnp.zeros((), probabilities.dtype), probabilities)
    if qk_matmul_output_mode == MODE_AFTER_SOFTMAX:
        qk_output = probabilities
    y = precision.einsum(ctx, "bhqk,bhkd->bhqd", probabilities.astype(dtype), v)
    if three_d:
        y = jnp.transpose(y, (0, 2, 1, 3)).reshape(batch, q_len, -1)
    return y, present_key, present_value, qk_output.astype(dtype)


def _native(q, k, v, attn_mask, nonpad_kv_seqlen, is_causal, scale, left, right, q_heads, kv_heads, views=None,
            output_perm=(0, 1, 2, 3)):
    """Attention on the native CPU kernel, reading q, k, v through `views` (HeadViews of the
    buffers they are views of) where given; present_key/value are k and v (no cache)."""
    three_d = q.ndim == 3
    sequence_axis = 1 if three_d else 2
    q_len, kv_len, batch = q.shape[sequence_axis], k.shape[sequence_axis], q.shape[0]
    depth = q.shape[-1] // q_heads if three_d else q.shape[-1]
    bias = None
    if attn_mask is not None or is_causal or left >= 0 or right >= 0 or nonpad_kv_seqlen is not None:
        offset = 0 if nonpad_kv_seqlen is None else jnp.asarray(nonpad_kv_seqlen).reshape(-1) - q_len
        bias = attention_bias(q_len, kv_len, batch, q.dtype, attn_mask, is_causal, offset, nonpad_kv_seqlen, left, right)
    views = views or [native_attention.plain_view(x, heads) for x, heads in ((q, q_heads), (k, kv_heads), (v, kv_heads))]
    y = native_attention.attention(*views, bias, output_perm=output_perm, three_d_output=three_d,
                                   scale=scale if scale is not None else 1.0 / np.sqrt(depth))
    return y, k, v, jnp.zeros((), q.dtype)


@lowering(VIEW_ATTENTION, domain=NATIVE_DOMAIN)
def view_attention(ctx: LoweringContext, q_base: Any, k_base: Any, v_base: Any, attn_mask: Any = None,
                   past_key: Any = None, past_value: Any = None, nonpad_kv_seqlen: Any = None, *, q_chain: str,
                   k_chain: str, v_chain: str, output_perm: list[int], **attributes: Any) -> Any:
    """An Attention whose q, k, v are views (chains) of other tensors and whose output is
    transposed by output_perm (native_rewrites.py): the kernel reads the views in place where it
    can run the node, else the chains, the attention and the transpose run as written."""
    bases = [jnp.asarray(b) for b in (q_base, k_base, v_base)]
    chains = [json.loads(c.decode() if isinstance(c, bytes) else c) for c in (q_chain, k_chain, v_chain)]
    q, k, v = (replay(jnp, base, chain) for base, chain in zip(bases, chains))
    perm = tuple(int(a) for a in output_perm)
    q_heads, kv_heads = ((attributes.get("q_num_heads") or 0, attributes.get("kv_num_heads") or 0) if q.ndim == 3
                         else (q.shape[1], k.shape[1]))
    if native_attention.runs_natively(ctx, q, k, v, past_key=past_key, softcap=attributes.get("softcap", 0.0),
                                      softmax_precision=attributes.get("softmax_precision"), q_heads=q_heads,
                                      kv_heads=kv_heads):
        views = []
        for base, chain, operand, heads in zip(bases, chains, (q, k, v), (q_heads, kv_heads, kv_heads)):
            found = strided_view(tuple(base.shape), chain) if base.dtype == jnp.float32 else None
            view = native_attention.head_view(base, *found, heads) if found else None
            views.append(view or native_attention.plain_view(operand, heads))
        return _native(q, k, v, attn_mask, nonpad_kv_seqlen, attributes.get("is_causal", 0), attributes.get("scale"),
                       attributes.get("left_window_size", -1), attributes.get("right_window_size", -1), q_heads,
                       kv_heads, views=views, output_perm=perm)
    y, present_key, present_value, scores = attention(ctx, q, k, v, attn_mask, past_key, past_value, nonpad_kv_seqlen,
                                                      **attributes)
    return (jnp.transpose(y, perm) if perm != (0, 1, 2, 3) else y), present_key, present_value, scores


def _flex_softmax_dtype(dtype: Any, softmax_precision: int | None) -> Any:
    if softmax_precision is not None:
        return numpy_dtype(softmax_precision)
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype


@lowering("FlexAttention", domain="ai.onnx.preview", since=1)
def flex_attention(ctx: LoweringContext, q: Any, k: Any, v: Any, *, scale: float | None = None, score_mod: Any = None,
                   prob_mod: Any = None, softmax_precision: int | None = None) -> Any:
    """Attention whose scores and probabilities pass through the score_mod / prob_mod subgraphs."""
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    heads = q.shape[1]
    if heads != k.shape[1]:
        k = jnp.repeat(k, heads // k.shape[1], axis=1)
        v = jnp.repeat(v, heads // v.shape[1], axis=1)
    root_scale = jnp.asarray(np.sqrt(np.float32(scale if scale is not None else 1.0 / np.sqrt(q.shape[3]))), q.dtype)
    compute = _flex_softmax_dtype(q.dtype, softmax_precision)
    scores = precision.einsum(ctx, "bhqd,bhkd->bhqk", q * root_scale, k * root_scale).astype(compute)
    if score_mod is not None:
        scores = jnp.asarray(ctx.lower_subgraph(score_mod)(scores)[0]).astype(compute)
    probabilities = jax.nn.softmax(scores, axis=-1)
    if prob_mod is not None:
        probabilities = jnp.asarray(ctx.lower_subgraph(prob_mod)(probabilities)[0]).astype(compute)
    return precision.einsum(ctx, "bhqk,bhkd->bhqd", probabilities, v.astype(compute)).astype(v.dtype)
