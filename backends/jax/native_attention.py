"""ONNX Attention on the native CPU kernel (native/attention.cc) through jax.ffi: fp32, grouped-query
heads, any additive bias (masks, causal and window frontiers folded into it by attention_bias), no
KV cache, softcap or qk_matmul_output. Q, K, V and the output are passed as strided views of their
buffers: a plain 3-D or 4-D operand, or a view of a fused projection found by native_rewrites.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .view_chains import contiguous_strides

TARGET = "kiln_attention"
FLOAT = 1  # ONNX TensorProto.FLOAT, the only softmax_precision the kernel computes in


@dataclass(frozen=True)
class HeadView:
    """One operand as the kernel reads it: its buffer, the element offset and the batch, head and
    position strides of its [batch, heads, positions, features] view (features contiguous)."""

    buffer: Any
    offset: int
    strides: tuple[int, int, int]
    shape: tuple[int, int, int, int]  # batch, heads, positions, features

    def attribute(self) -> np.ndarray:
        return np.array([self.offset, *self.strides], np.int64)


def head_view(buffer: Any, shape: tuple[int, ...], strides: tuple[int, ...], offset: int, heads: int) -> HeadView | None:
    """The HeadView of a view with `shape`/`strides` ([B, S, H*D] with `heads`, or [B, H, S, D]), or
    None where its features are not contiguous."""
    if len(shape) == 3 and heads > 0 and shape[2] % heads == 0 and (strides[2] == 1 or shape[2] == 1):
        depth = shape[2] // heads
        return HeadView(buffer, offset, (strides[0], depth, strides[1]), (shape[0], heads, shape[1], depth))
    if len(shape) == 4 and (strides[3] == 1 or shape[3] == 1):
        return HeadView(buffer, offset, (strides[0], strides[1], strides[2]), tuple(shape))
    return None


def plain_view(x: Any, heads: int) -> HeadView | None:
    """The HeadView of a whole contiguous 3-D or 4-D operand."""
    shape = tuple(jnp.shape(x))
    return head_view(x, shape, contiguous_strides(shape), 0, heads)


def runs_natively(ctx: Any, q: Any, k: Any, v: Any, *, past_key: Any, softcap: float, softmax_precision: int | None,
                  q_heads: int, kv_heads: int) -> bool:
    """Whether this Attention node can run on the kernel (q, k, v: the operands as ONNX sees them)."""
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


def attention(q: HeadView, k: HeadView, v: HeadView, bias: Any, *, output_perm: tuple[int, ...] = (0, 1, 2, 3),
              three_d_output: bool = False, scale: float) -> Any:
    """softmax(q k^T * scale + bias) v. The output is [B, H, S, Dv] transposed by `output_perm`
    (features last), or [B, S, H*Dv] with `three_d_output`. `bias` broadcasts to [B, Hq, Sq, Skv]."""
    batch, q_heads, q_len, depth = q.shape
    kv_heads, kv_len, v_depth = k.shape[1], k.shape[2], v.shape[3]
    if three_d_output:
        shape = (batch, q_len, q_heads * v_depth)
        y_view = (0, q_len * q_heads * v_depth, v_depth, q_heads * v_depth)
    else:
        logical = (batch, q_heads, q_len, v_depth)
        shape = tuple(logical[axis] for axis in output_perm)
        strides = contiguous_strides(shape)
        by_axis = {axis: strides[position] for position, axis in enumerate(output_perm)}
        y_view = (0, by_axis[0], by_axis[1], by_axis[2])
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(shape, jnp.float32))
    return call(q.buffer, k.buffer, v.buffer, _bias4(bias),
                sizes=np.array([batch, q_heads, kv_heads, q_len, kv_len, depth, v_depth], np.int64),
                q_view=q.attribute(), k_view=k.attribute(), v_view=v.attribute(), y_view=np.array(y_view, np.int64),
                scale=np.float32(scale))


def _bias4(bias: Any) -> Any:
    """The additive bias as a 4-D float32 array (one zero where there is none)."""
    if bias is None:
        return jnp.zeros((1, 1, 1, 1), jnp.float32)
    bias = jnp.asarray(bias, jnp.float32)
    return bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
