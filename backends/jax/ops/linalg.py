"""Contractions and linear algebra: MatMul, Gemm, Einsum (through the precision helpers, so
--precision bf16/fp16 applies) and Det."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import precision
from ..registry import lowering
from ..native_rewrites import MATMUL_BIAS, MATMUL_TRANSPOSED, NATIVE_DOMAIN
from ..panel_matmul import PanelWeight, activate, panel_matmul, residual_fits, runs_natively
from ..weight_layout import RowsAlongK
from .shape import reshaped_dims


@lowering("MatMul")
def matmul(ctx, a, b):
    return precision.matmul(ctx, a, b)


@lowering("Gemm")
def gemm(ctx, a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=1):  # noqa: N803  (ONNX names)
    if isinstance(b, PanelWeight):  # op(B) packed for the native kernel, whatever transB was
        a, transA, transB = (jnp.transpose(a) if transA else a), 0, 0
        if runs_natively(a, b):
            bias = _row_bias(c, beta, b.n) if alpha == 1.0 else None
            result = panel_matmul(a, b, bias)
            if bias is not None:
                return result
            if alpha != 1.0:
                result = result * jnp.asarray(alpha, result.dtype)
            return result if c is None else _add_c(result, c, beta)
        b = b.dense()
    # the transposes become the product's contracting axes: XLA:CPU copies a transposed weight for a
    # batch-1 product fused with its bias
    if isinstance(b, RowsAlongK):  # stored [N, K] for transB=0
        b, b_axis = b.rows, 1
    else:
        b_axis = 1 if transB else 0
    result = precision.dot_general(ctx, a, b, (((0 if transA else 1,), (b_axis,)), ((), ())))
    if alpha != 1.0:
        result = result * jnp.asarray(alpha, result.dtype)
    return result if c is None else _add_c(result, c, beta)


def _add_c(result, c, beta):
    c = jnp.asarray(c)
    if beta != 1.0:
        c = c * jnp.asarray(beta, c.dtype)
    return (result + c).astype(result.dtype)


def _row_bias(c, beta, columns):
    """Gemm's C as a bias row of `columns` float32 values for the native kernel, when it is one."""
    if c is None or jnp.size(c) != columns or jnp.ndim(c) > 2 or (jnp.ndim(c) and jnp.shape(c)[-1] != columns):
        return None
    if jnp.result_type(c) != jnp.float32:
        return None
    c = jnp.reshape(c, (columns,))
    return c if beta == 1.0 else c * jnp.asarray(beta, c.dtype)


@lowering(MATMUL_BIAS, domain=NATIVE_DOMAIN)
def matmul_bias(ctx, a, b, bias=None, residual=None, shape=None, activation=None, residual_reshaped=0, allowzero=0,
                perm=None, transposed_weight=0):
    """MatMul -> Add(bias row) [-> Gelu] [-> Add(residual)] as native_rewrites merged them: the
    bias, the GELU and the residual applied by the panel kernel where it runs the product (a
    `residual_reshaped` residual is read in the product's shape: the Add was after a Reshape). With
    a `shape` input the node is Add(Transpose(Reshape(product, shape), perm), residual) (no
    Transpose without `perm`): the residual is fused where tracing shows it has those dims exactly
    and the transpose moves only dims of 1, so that the whole view is a reshape. A
    `transposed_weight` W is stored [N, K] (Gemm's transB); its panels hold it as [K, N]."""
    activation = activation.decode() if isinstance(activation, bytes) else activation
    if transposed_weight and not isinstance(b, PanelWeight):
        b, transposed_weight = jnp.transpose(b), 0
    columns = b.n if isinstance(b, PanelWeight) else jnp.shape(b)[-1]
    product_dims = tuple(jnp.shape(a)[:-1]) + (columns,)
    if shape is not None:
        dims = reshaped_dims(product_dims, shape, allowzero)
        order = tuple(perm) if perm is not None else tuple(range(len(dims)))
        viewed = tuple(dims[axis] for axis in order)
        # jax's == on symbolic dims is False unless provable, so an undecided dim counts as moved
        moved = [axis for axis in order if dims[axis] != 1]
        if moved == sorted(moved) and tuple(jnp.shape(residual)) == viewed:
            fused = matmul_bias(ctx, a, b, bias, jnp.reshape(residual, product_dims), activation=activation)
            return jnp.reshape(fused, viewed)
        product = jnp.reshape(matmul_bias(ctx, a, b, bias, activation=activation), dims)
        return jnp.transpose(product, order) + residual
    if residual is not None and residual_reshaped:
        residual = jnp.reshape(residual, product_dims)
    if (isinstance(b, PanelWeight) and runs_natively(a, b) and (bias is None or jnp.result_type(bias) == jnp.float32)
            and (residual is None or residual_fits(a, b, residual))):
        return panel_matmul(a, b, None if bias is None else jnp.reshape(bias, (b.n,)), activation, residual)
    product = precision.matmul(ctx, a, b)
    result = product if bias is None else (product + jnp.asarray(bias)).astype(product.dtype)
    result = activate(result, activation)
    return result if residual is None else result + residual


@lowering(MATMUL_TRANSPOSED, domain=NATIVE_DOMAIN)
def matmul_transposed(ctx, a, b):
    """x @ W^T as native_rewrites.fuse_transposed_weights wrote it: W's transpose packed once for the
    panel kernel where it runs the product (a PanelWeight already holds the transpose)."""
    if isinstance(b, PanelWeight):
        return panel_matmul(a, b) if runs_natively(a, b) else precision.matmul(ctx, a, b.dense())
    return precision.dot_general(ctx, a, b, (((jnp.ndim(a) - 1,), (1,)), ((), ())))


@lowering("Einsum")
def einsum(ctx, *operands, equation):
    return precision.einsum(ctx, equation.replace(" ", ""), *operands)


@lowering("Det")
def det(ctx, x):
    return jnp.linalg.det(x)
