"""ONNX Attention on the native CPU kernel (native/attention.cc) through jax.ffi: fp32 Q/K/V in
either ONNX layout, grouped-query heads, any additive bias (masks, causal and window frontiers
folded into it by attention_bias), no KV cache, softcap or qk_matmul_output."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TARGET, TARGET_PACKED = "kiln_attention", "kiln_packed_attention"
FLOAT = 1  # ONNX TensorProto.FLOAT, the only softmax_precision the kernel computes in


def runs_natively(ctx: Any, q: Any, k: Any, v: Any, *, past_key: Any, softcap: float, softmax_precision: int | None,
                  q_heads: int, kv_heads: int) -> bool:
    """Whether this Attention node can run on the kernel."""
    if not ctx.native or past_key is not None or (softcap and softcap > 0) or ctx.output_needed(3):
        return False
    if softmax_precision not in (None, FLOAT) or any(jnp.result_type(x) != jnp.float32 for x in (q, k, v)):
        return False
    if not (jnp.ndim(q) == jnp.ndim(k) == jnp.ndim(v) and jnp.ndim(q) in (3, 4)):
        return False
    if q_heads <= 0 or kv_heads <= 0 or q_heads % kv_heads:
        return False
    sequence_axis = 1 if jnp.ndim(q) == 3 else 2
    return jnp.shape(k)[sequence_axis] > 0 and jnp.shape(q)[-1] > 0 and all(
        isinstance(d, (int, np.integer)) for x in (q, k, v) for d in jnp.shape(x))


def attention(q: Any, k: Any, v: Any, bias: Any, *, q_heads: int, kv_heads: int, scale: float) -> Any:
    """softmax(q k^T * scale + bias) v with q, k, v all [B, S, H*D] or all [B, H, S, D]; the output is
    in q's layout with v's head size. `bias` broadcasts to [B, Hq, Sq, Skv] (None for no bias)."""
    three_d = jnp.ndim(q) == 3
    batch = jnp.shape(q)[0]
    q_len = jnp.shape(q)[1 if three_d else 2]
    v_depth = jnp.shape(v)[2] // kv_heads if three_d else jnp.shape(v)[3]
    shape = (batch, q_len, q_heads * v_depth) if three_d else (batch, q_heads, q_len, v_depth)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(shape, jnp.float32))
    return call(q, k, v, _bias4(bias), q_heads=np.int64(q_heads), kv_heads=np.int64(kv_heads), scale=np.float32(scale))


def packed_attention(qkv: Any, bias: Any, *, widths: tuple[int, int, int], q_heads: int, kv_heads: int,
                     scale: float) -> Any:
    """attention() of the q, k, v that lie side by side (widths) in the rows of qkv [B, S, W]."""
    batch, length = jnp.shape(qkv)[:2]
    shape = (batch, length, q_heads * (widths[2] // kv_heads))
    call = jax.ffi.ffi_call(TARGET_PACKED, jax.ShapeDtypeStruct(shape, jnp.float32))
    return call(qkv, _bias4(bias), q_heads=np.int64(q_heads), kv_heads=np.int64(kv_heads), scale=np.float32(scale),
                q_width=np.int64(widths[0]), k_width=np.int64(widths[1]))


def _bias4(bias: Any) -> Any:
    """The additive bias as a 4-D float32 array (one zero where there is none)."""
    if bias is None:
        return jnp.zeros((1, 1, 1, 1), jnp.float32)
    bias = jnp.asarray(bias, jnp.float32)
    return bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
