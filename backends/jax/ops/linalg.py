"""Contractions and linear algebra: MatMul, Gemm, Einsum (through the precision helpers, so
--precision bf16/fp16 applies) and Det."""

from __future__ import annotations

import jax.numpy as jnp

from .. import precision
from ..registry import lowering


@lowering("MatMul")
def matmul(ctx, a, b):
    return precision.matmul(ctx, a, b)


@lowering("Gemm")
def gemm(ctx, a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=1):  # noqa: N803  (ONNX names)
    a = jnp.swapaxes(a, 0, 1) if transA else a
    b = jnp.swapaxes(b, 0, 1) if transB else b
    result = precision.matmul(ctx, a, b)
    if alpha != 1.0:
        result = result * jnp.asarray(alpha, result.dtype)
    if c is None:
        return result
    c = jnp.asarray(c)
    if beta != 1.0:
        c = c * jnp.asarray(beta, c.dtype)
    return (result + c).astype(result.dtype)


@lowering("Einsum")
def einsum(ctx, *operands, equation):
    return precision.einsum(ctx, equation.replace(" ", ""), *operands)


@lowering("Det")
def det(ctx, x):
    return jnp.linalg.det(x)
