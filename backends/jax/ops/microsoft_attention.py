"""onnxruntime's com.microsoft attention ops: its transformers optimizer's EmbedLayerNormalization,
packed-weight self-Attention and MultiHeadAttention, RotaryEmbedding, and onnxruntime-genai's
GroupQueryAttention with its KV cache. Tests compare with onnxruntime itself."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from compiler.errors import UnsupportedError

from .. import precision
from ..registry import LoweringContext, lowering
from .normalization import layer_norm_math
from .transformer import rotary_embedding

MICROSOFT = "com.microsoft"


@lowering("EmbedLayerNormalization", domain=MICROSOFT)
def embed_layer_normalization(ctx: LoweringContext, input_ids: Any, segment_ids: Any, word_embedding: Any,
                              position_embedding: Any, segment_embedding: Any = None, gamma: Any = None, beta: Any = None,
                              mask: Any = None, position_ids: Any = None, epsilon: float = 1e-12,
                              mask_index_type: int = 1) -> tuple:
    """LayerNorm(word[ids] + position[0..S) (or [position_ids]) + segment[segment_ids]):
    (output, mask_index = the number of attended tokens per sequence, embedding_sum)."""
    ids = jnp.asarray(input_ids)
    length = ids.shape[1]
    positions = jnp.arange(length)[None, :] if position_ids is None else jnp.asarray(position_ids)
    total = jnp.take(jnp.asarray(word_embedding), ids, axis=0) + jnp.take(jnp.asarray(position_embedding), positions, axis=0)
    if segment_embedding is not None and segment_ids is not None:
        total = total + jnp.take(jnp.asarray(segment_embedding), jnp.asarray(segment_ids), axis=0)
    y = layer_norm_math(total, gamma, beta, -1, epsilon)[0]
    if mask is None:
        mask_index = jnp.zeros((ids.shape[0],), jnp.int32)
    else:
        mask_index = jnp.sum(jnp.asarray(mask) != 0, axis=1).astype(jnp.int32)
    return y, (mask_index if mask_index_type else None), total


def _key_mask(mask_index: Any, batch: int, query_length: int, key_length: int) -> Any:
    """True where a key may be attended, [B, 1, S or 1, T], from Attention's mask_index forms:
    [B] (lengths, right padding), [2B] (ends then starts), [B, T] (0/1), [B, S, T] (0/1)."""
    mask = jnp.asarray(mask_index)
    keys = jnp.arange(key_length)
    if mask.ndim == 1 and mask.shape[0] == batch:
        return (keys[None, :] < mask[:, None])[:, None, None, :]
    if mask.ndim == 1 and mask.shape[0] == 2 * batch:
        ends, starts = mask[:batch], mask[batch:]
        return ((keys[None, :] < ends[:, None]) & (keys[None, :] >= starts[:, None]))[:, None, None, :]
    if mask.ndim == 2:
        return (mask != 0)[:, None, None, :]
    if mask.ndim == 3:
        return (mask != 0)[:, None, :, :]
    raise UnsupportedError(f"attention mask of shape {tuple(mask.shape)} is none of the forms [B], [2B], [B, T], [B, S, T]")


@lowering("Attention", domain=MICROSOFT)
def microsoft_attention(ctx: LoweringContext, x: Any, weights: Any, bias: Any = None, mask_index: Any = None,
                        past: Any = None, attention_bias: Any = None, past_sequence_length: Any = None, *,
                        num_heads: int, unidirectional: int = 0, qkv_hidden_sizes: Sequence[int] | None = None,
                        mask_filter_value: float = -10000.0, scale: float = 0.0, do_rotary: int = 0,
                        past_present_share_buffer: int = 0, rotary_embedding_dim: int = 0) -> Any:
    """Self-attention with packed Q/K/V weights [D, q + k + v]: softmax(scale Q K^T + masks) V,
    masked scores getting mask_filter_value as onnxruntime does."""
    if past is not None or do_rotary:
        raise ctx.fail("past state and rotary embeddings are not lowered")
    x = jnp.asarray(x)
    batch, length = x.shape[0], x.shape[1]
    qkv = precision.matmul(ctx, x, weights)
    if bias is not None:
        qkv = qkv + jnp.asarray(bias, qkv.dtype)
    q_size, k_size, _ = qkv_hidden_sizes or [qkv.shape[-1] // 3] * 3
    q, k, v = qkv[..., :q_size], qkv[..., q_size:q_size + k_size], qkv[..., q_size + k_size:]
    q, k, v = (t.reshape(batch, length, num_heads, -1).transpose(0, 2, 1, 3) for t in (q, k, v))
    return _masked_attention(ctx, q, k, v, mask_index, attention_bias, unidirectional, mask_filter_value, scale)


def _masked_attention(ctx: LoweringContext, q: Any, k: Any, v: Any, key_mask: Any, attention_bias: Any,
                      unidirectional: int, mask_filter_value: float, scale: float) -> Any:
    """softmax(scale Q K^T + masks + bias) V on heads [B, N, S|T, H] -> [B, S, N H]; masked scores
    get mask_filter_value added (onnxruntime's Attention/MultiHeadAttention), the causal mask
    aligning the last query with the last key."""
    batch, length, keys = q.shape[0], q.shape[2], k.shape[2]
    factor = scale if scale else 1.0 / math.sqrt(q.shape[-1])
    scores = precision.einsum(ctx, "bnqd,bnkd->bnqk", q, k) * jnp.asarray(factor, q.dtype)
    filler = jnp.asarray(mask_filter_value, scores.dtype)
    if key_mask is not None:
        scores = jnp.where(_key_mask(key_mask, batch, length, keys), scores, scores + filler)
    if unidirectional:
        causal = jnp.arange(keys)[None, :] <= jnp.arange(length)[:, None] + (keys - length)
        scores = jnp.where(causal, scores, scores + filler)
    if attention_bias is not None:
        scores = scores + jnp.asarray(attention_bias, scores.dtype)
    out = precision.einsum(ctx, "bnqk,bnkd->bnqd", jax.nn.softmax(scores, axis=-1), v)
    return out.transpose(0, 2, 1, 3).reshape(batch, length, -1)


@lowering("RotaryEmbedding", domain=MICROSOFT)
def microsoft_rotary_embedding(ctx: LoweringContext, x: Any, position_ids: Any, cos_cache: Any, sin_cache: Any, *,
                               interleaved: int = 0, num_heads: int = 0, rotary_embedding_dim: int = 0,
                               scale: float = 1.0, is_packed_batching: int = 0) -> Any:
    """ONNX RotaryEmbedding-23's math with the contrib input order (X, position_ids, cos, sin);
    position_ids [B, S], or one offset for positions offset..offset+S; num_heads 0 reads the head
    size off the cache (2 x its width)."""
    if is_packed_batching or scale != 1.0:
        raise ctx.fail("packed batching and a custom scale are not lowered")
    x = jnp.asarray(x)
    positions = jnp.asarray(position_ids)
    length = x.shape[2] if x.ndim == 4 else x.shape[1]
    if positions.ndim < 2:
        positions = positions.reshape(()) + jnp.arange(length)[None, :]
    if x.ndim == 3 and not num_heads:
        num_heads = x.shape[-1] // (rotary_embedding_dim or 2 * jnp.shape(cos_cache)[1])
    return rotary_embedding(ctx, x, cos_cache, sin_cache, positions, interleaved, num_heads, rotary_embedding_dim)


def _rotate(x: Any, positions: Any, cos_cache: Any, sin_cache: Any, interleaved: int) -> Any:
    """Rotary embedding of x [B, S, heads, H] at absolute positions [B, S] (the first 2 x cache
    width features of each head)."""
    batch, length, heads, head_size = x.shape
    flat = x.reshape(batch, length, heads * head_size)
    rotary = 2 * jnp.shape(cos_cache)[1]
    return rotary_embedding(None, flat, cos_cache, sin_cache, positions, interleaved, heads, rotary).reshape(x.shape)


def _cache_is_preallocated(ctx: LoweringContext, total_sequence_length: Any, capacity: int) -> bool:
    """Whether present has past's length (onnxruntime: max(past length, total_sequence_length)),
    i.e. the cache is a preallocated buffer the new keys are written into; else present = past + new.
    Read off a static total length, or off the model declaring present with past's length."""
    if isinstance(total_sequence_length, np.ndarray) and total_sequence_length.dtype != object:
        return int(total_sequence_length.reshape(-1)[0]) <= capacity
    past, present = ctx.node.inputs[3].shape, ctx.node.outputs[1].shape if len(ctx.node.outputs) > 1 else None
    return past is not None and present is not None and len(past) == len(present) == 4 and past[2] == present[2]


@lowering("GroupQueryAttention", domain=MICROSOFT)
def group_query_attention(ctx: LoweringContext, query: Any, key: Any = None, value: Any = None, past_key: Any = None,
                          past_value: Any = None, seqlens_k: Any = None, total_sequence_length: Any = None,
                          cos_cache: Any = None, sin_cache: Any = None, position_ids: Any = None,
                          attention_bias: Any = None, head_sink: Any = None, *, num_heads: int, kv_num_heads: int,
                          do_rotary: int = 0, rotary_interleaved: int = 0, local_window_size: int = -1,
                          scale: float = 0.0, softcap: float = 0.0, smooth_softmax: int = 0, qk_output: int = 0) -> tuple:
    """Causal grouped-query attention with a KV cache (onnxruntime-genai's decoder layers): the new
    keys/values go after each sequence's past (seqlens_k + 1 = its total length), queries sit at
    positions past .. past + S, optionally rotated; present is past + new, or past with the new
    keys written in where the cache is preallocated (_cache_is_preallocated)."""
    if position_ids is not None or head_sink is not None or smooth_softmax or qk_output:
        raise ctx.fail("position_ids, head_sink, smooth_softmax and qk_output are not lowered")
    query = jnp.asarray(query)
    batch, length = query.shape[0], query.shape[1]
    if key is None:  # packed [B, S, (N + 2 Nkv) H]
        head_size = query.shape[-1] // (num_heads + 2 * kv_num_heads)
        q_width, kv_width = num_heads * head_size, kv_num_heads * head_size
        query, key, value = query[..., :q_width], query[..., q_width:q_width + kv_width], query[..., q_width + kv_width:]
    head_size = query.shape[-1] // num_heads
    q = query.reshape(batch, length, num_heads, head_size)
    k = jnp.asarray(key).reshape(batch, length, kv_num_heads, head_size)
    v = jnp.asarray(value).reshape(batch, length, kv_num_heads, head_size)
    total = jnp.asarray(seqlens_k).astype(jnp.int32).reshape(batch) + 1
    past_capacity = 0 if past_key is None else jnp.shape(past_key)[2]
    past_length = total - length if past_capacity else jnp.zeros_like(total)  # per sequence
    positions = past_length[:, None] + jnp.arange(length, dtype=jnp.int32)[None, :]
    if do_rotary:
        q = _rotate(q, positions, cos_cache, sin_cache, rotary_interleaved)
        k = _rotate(k, positions, cos_cache, sin_cache, rotary_interleaved)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, Nkv, S, H]
    if past_capacity:
        in_place = _cache_is_preallocated(ctx, total_sequence_length, past_capacity)

        def append(past: Any, new: Any, start: Any) -> Any:
            grown = past if in_place else jnp.concatenate([past, jnp.zeros_like(new)], axis=1)
            kept = jnp.arange(grown.shape[1])[None, :, None] < start  # slots past this sequence's past are zero
            zero = jnp.zeros((), start.dtype)
            return jax.lax.dynamic_update_slice(jnp.where(kept, grown, 0), new, (zero, start, zero))

        present_key = jax.vmap(append)(jnp.asarray(past_key), k, past_length)
        present_value = jax.vmap(append)(jnp.asarray(past_value), v, past_length)
    else:
        present_key, present_value = k, v
    groups = num_heads // kv_num_heads
    keys = jnp.repeat(present_key, groups, axis=1)
    values = jnp.repeat(present_value, groups, axis=1)
    factor = scale if scale else 1.0 / math.sqrt(head_size)
    scores = precision.einsum(ctx, "bsnh,bnth->bnst", q, keys) * jnp.asarray(factor, q.dtype)
    if softcap:
        scores = jnp.tanh(scores / softcap) * softcap
    key_positions = jnp.arange(keys.shape[2])[None, None, :]
    query_positions = positions[:, :, None]
    allowed = (key_positions <= query_positions) & (key_positions < total[:, None, None])
    if local_window_size > 0:
        allowed = allowed & (key_positions > query_positions - local_window_size)
    if attention_bias is not None:
        scores = scores + jnp.asarray(attention_bias, scores.dtype)
    scores = jnp.where(allowed[:, None], scores, jnp.finfo(scores.dtype).min)
    probabilities = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
    out = precision.einsum(ctx, "bnst,bnth->bsnh", probabilities, values)
    return out.reshape(batch, length, num_heads * head_size), present_key, present_value


@lowering("MultiHeadAttention", domain=MICROSOFT)
def multi_head_attention(ctx: LoweringContext, query: Any, key: Any = None, value: Any = None, bias: Any = None,
                         key_padding_mask: Any = None, attention_bias: Any = None, past_key: Any = None,
                         past_value: Any = None, past_sequence_length: Any = None, cache_indirection: Any = None, *,
                         num_heads: int, mask_filter_value: float = -10000.0, scale: float = 0.0,
                         unidirectional: int = 0) -> tuple:
    """Attention of query [B, S, D] over key/value [B, L, D] (self or cross), with the q/k/v bias,
    a key padding mask (lengths [B] or 0/1 [B, L]; masked scores get mask_filter_value), an additive
    attention_bias, an optional causal mask and past key/value [B, N, P, H] (present = past + new)."""
    if key is None or value is None or jnp.ndim(key) != 3 or cache_indirection is not None:
        raise ctx.fail("only separate 3-D query/key/value inputs are lowered (no packed QKV, no past-format keys)")
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    if bias is not None:
        bias = jnp.asarray(bias, query.dtype)
        q_width, k_width = query.shape[-1], key.shape[-1]
        query, key, value = query + bias[:q_width], key + bias[q_width:q_width + k_width], value + bias[q_width + k_width:]
    batch, length = query.shape[0], query.shape[1]
    q = query.reshape(batch, length, num_heads, -1).transpose(0, 2, 1, 3)
    k = key.reshape(batch, key.shape[1], num_heads, -1).transpose(0, 2, 1, 3)
    v = value.reshape(batch, value.shape[1], num_heads, -1).transpose(0, 2, 1, 3)
    if past_key is not None:
        k = jnp.concatenate([jnp.asarray(past_key, k.dtype), k], axis=2)
        v = jnp.concatenate([jnp.asarray(past_value, v.dtype), v], axis=2)
    out = _masked_attention(ctx, q, k, v, key_padding_mask, attention_bias, unidirectional, mask_filter_value, scale)
    return out, k, v
