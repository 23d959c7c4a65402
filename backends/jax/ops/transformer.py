"""Transformer building blocks besides softmax attention: RotaryEmbedding, SwiGLU and
LinearAttention (recurrent state updates linear|gated|delta|gated_delta, run with lax.scan)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .. import precision
from ..registry import LoweringContext, lowering


@lowering("RotaryEmbedding", since=23)
def rotary_embedding(ctx: LoweringContext, x: Any, cos_cache: Any, sin_cache: Any, position_ids: Any = None,
                     interleaved: int = 0, num_heads: int = 0, rotary_embedding_dim: int = 0) -> Any:
    """Rotate the first rotary_embedding_dim features of each head; X is [B, H, S, D] or [B, S, H*D]."""
    x = jnp.asarray(x)
    original_shape = x.shape
    heads_first = x.ndim == 4
    work = jnp.transpose(x, (0, 2, 1, 3)) if heads_first else x.reshape(x.shape[0], x.shape[1], num_heads, -1)
    head_size = work.shape[3]
    rotary = rotary_embedding_dim or head_size
    cos, sin = jnp.asarray(cos_cache), jnp.asarray(sin_cache)
    if position_ids is not None:
        positions = jnp.asarray(position_ids)
        cos, sin = cos[positions], sin[positions]
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    rotate, keep = work[..., :rotary], work[..., rotary:]
    if interleaved:
        first, second = rotate[..., 0::2], rotate[..., 1::2]
    else:
        first, second = jnp.split(rotate, 2, axis=-1)
    real = cos * first - sin * second
    imag = sin * first + cos * second
    if interleaved:
        rotated = jnp.stack([real, imag], axis=-1).reshape(rotate.shape)
    else:
        rotated = jnp.concatenate([real, imag], axis=-1)
    out = jnp.concatenate([rotated, keep], axis=-1)
    return jnp.transpose(out, (0, 2, 1, 3)) if heads_first else out.reshape(original_shape)


@lowering("SwiGLU", since=28)
def swiglu(ctx: LoweringContext, a: Any, b: Any, alpha: float = 1.0) -> Any:
    """a * sigmoid(alpha * a) * b."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    return (a * jax.nn.sigmoid(jnp.asarray(alpha, a.dtype) * a) * b).astype(a.dtype)


def _heads(x: Any, heads: int) -> Any:
    """[B, T, H*D] -> [T, B, H, D] (time first, for the scan)."""
    batch, steps, hidden = x.shape
    return jnp.transpose(x.reshape(batch, steps, heads, hidden // heads), (1, 0, 2, 3))


@lowering("LinearAttention", since=27)
def linear_attention(ctx: LoweringContext, query: Any, key: Any, value: Any, past_state: Any = None,
                     decay: Any = None, beta: Any = None, *, q_num_heads: int, kv_num_heads: int,
                     scale: float = 0.0, update_rule: str = "gated_delta", chunk_size: int = 64) -> Any:
    """Recurrent linear attention: state S [B, Hkv, Dk, Dv] decays (gated), is corrected toward v
    (delta), gains k v^T each step; output scale * q S (state shared by grouped query heads)."""
    query, key, value = (jnp.asarray(t) for t in (query, key, value))
    out_dtype = query.dtype
    batch, steps, _ = query.shape
    depth = query.shape[-1] // q_num_heads
    value_depth = value.shape[-1] // kv_num_heads
    group = q_num_heads // kv_num_heads
    q, k, v = (_heads(t, h).astype(jnp.float32) for t, h in ((query, q_num_heads), (key, kv_num_heads), (value, kv_num_heads)))
    gates = None if decay is None else _per_head(jnp.asarray(decay), kv_num_heads)
    betas = None if beta is None else _per_head(jnp.asarray(beta), jnp.asarray(beta).shape[-1])
    if past_state is not None:
        state_dtype = jnp.asarray(past_state).dtype
        state = jnp.asarray(past_state).astype(jnp.float32)
    else:
        state_dtype = out_dtype
        state = jnp.zeros((batch, kv_num_heads, depth, value_depth), jnp.float32)
    scale_value = scale if scale else 1.0 / float(depth) ** 0.5

    def step(state, inputs):
        q_t, k_t, v_t, g_t, b_t = inputs
        if g_t is not None:
            state = state * jnp.exp(g_t)[..., None]
        if b_t is not None:
            retrieved = precision.einsum(ctx, "bhdm,bhd->bhm", state, k_t)
            v_t = b_t * (v_t - retrieved)
        state = state + k_t[..., :, None] * v_t[..., None, :]
        read = jnp.repeat(state, group, axis=1) if group > 1 else state
        return state, scale_value * precision.einsum(ctx, "bhd,bhdm->bhm", q_t, read)

    state, outputs = lax.scan(step, state, (q, k, v, gates, betas))
    output = jnp.transpose(outputs, (1, 0, 2, 3)).reshape(batch, steps, q_num_heads * value_depth)
    return output.astype(out_dtype), state.astype(state_dtype)


def _per_head(x: Any, heads: int) -> Any:
    """Decay/beta [B, T, H] or [B, T, H*D] -> [T, B, H, 1 or D] float32."""
    batch, steps, last = x.shape
    return jnp.transpose(x.reshape(batch, steps, heads, last // heads), (1, 0, 2, 3)).astype(jnp.float32)
