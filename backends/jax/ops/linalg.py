"""Contractions and linear algebra: MatMul, Gemm, Einsum (through the precision helpers, so
--precision bf16/fp16 applies) and Det."""

from __future__ import annotations

import jax.numpy as jnp

from .. import precision
from ..registry import lowering
from ..weight_layout import RowsAlongK


@lowering("MatMul")
def matmul(ctx, a, b):
    return precision.matmul(ctx, a, b)


@lowering("Gemm")
def gemm(ctx, a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=1):  # noqa: N803  (ONNX names)
    # the transposes become the product's contracting axes: XLA:CPU copies a transposed weight for a
    # batch-1 product fused with its bias
    if isinstance(b, RowsAlongK):  # stored [N, K] for transB=0
        b, b_axis = b.rows, 1
    else:
        b_axis = 1 if transB else 0
    result = precision.dot_general(ctx, a, b, (((0 if transA else 1,), (b_axis,)), ((), ())))
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
