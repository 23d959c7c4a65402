"""ai.graphkiln::Attention(Q, K, V, mask?; scale, is_causal): scaled-dot-product attention on
[B, H, S, D] with grouped-query heads, the op the attention fusion writes below opset 23."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from compiler.builder import OpBuilder
from compiler.custom_ops import GRAPHKILN_DOMAIN, CustomOp, register_custom_op
from compiler.errors import UnsupportedError
from compiler.ir import DataType, Node, Shape, TensorType, Value, ValueType

from ._common import constant_like


def _infer(node: Node) -> Sequence[ValueType | None]:
    query, value = node.inputs[0].type, node.inputs[2].type
    if not isinstance(query, TensorType) or query.shape is None or len(query.shape) != 4:
        return [None]
    value_dim = value.shape[-1] if isinstance(value, TensorType) and value.shape is not None else None
    return [TensorType(query.dtype, Shape((*query.shape[:3], value_dim)))]


def _repeat_heads(op: OpBuilder, node: Node, key: Value, query: Value) -> Value:
    """K or V with its Hkv heads repeated to Q's H heads (grouped-query attention)."""
    heads, kv_heads = query.shape[1] if query.shape else None, key.shape[1] if key.shape else None
    if heads == kv_heads and heads is not None:
        return key
    if not isinstance(heads, int) or not isinstance(kv_heads, int):
        raise UnsupportedError(f"Attention {node.name!r}: head counts must be known to decompose grouped-query attention")
    shape = op.Shape(key)
    batch, rest = op.Slice(shape, np.asarray([0], np.int64), np.asarray([1], np.int64)), op.Slice(
        shape, np.asarray([2], np.int64), np.asarray([4], np.int64))
    groups = np.asarray([kv_heads, heads // kv_heads], np.int64)
    expanded = op.Expand(op.Unsqueeze(key, np.asarray([2], np.int64)), op.Concat(batch, groups, rest, axis=0))
    return op.Reshape(expanded, op.Concat(batch, np.asarray([heads], np.int64), rest, axis=0))


def _same_length(query: Value, key: Value) -> bool:
    """True when Sq and Sk are provably equal (same int or symbol)."""
    if query.shape is None or key.shape is None:
        return False
    return query.shape[-2] is not None and query.shape[-2] == key.shape[-2]


_PROJECTION_OPS = ("Transpose", "Reshape", "Add", "MatMul", "Gemm", "Squeeze", "Unsqueeze", "Split")


def _projection_root(value: Value) -> tuple[Value, list[tuple]]:
    """Follow the first input through projection/head-split ops; returns the source and the chain."""
    chain: list[tuple] = []
    while value.producer is not None and value.producer.op_type in _PROJECTION_OPS and len(chain) < 8:
        node = value.producer
        chain.append((node.op_type, tuple(node.attr("perm") or ())))
        value = node.inputs[0]
    return value, chain


def _self_attention(query: Value, key: Value) -> bool:
    """True when Q and K are projections of the same tensor through the same op chain (so Sq == Sk)."""
    query_root, query_chain = _projection_root(query)
    key_root, key_chain = _projection_root(key)
    return query_root is key_root and query_chain == key_chain and bool(query_chain)


def _mask_over_queries(op: OpBuilder, mask: Value, query: Value, key: Value) -> Value:
    """The mask expanded along the query axis: onnxruntime's Attention-23 does not broadcast it.
    When Sq is the mask's own key length (self-attention), the target shape comes from the mask
    alone, so every layer builds the same nodes and CSE keeps one copy."""
    mask_shape, query_shape = mask.shape or (None,), query.shape or (None, None)
    queries = query_shape[-2]
    if len(mask_shape) >= 2 and mask_shape[-2] == queries and queries is not None:
        return mask
    if isinstance(queries, int):
        target = op.const(np.asarray([queries, 1], np.int64))
    elif (queries is not None and mask_shape[-1] == queries) or _self_attention(query, key):
        target = op.Concat(op.Shape(mask, start=-1), np.asarray([1], np.int64), axis=0)
    else:
        target = op.Concat(op.Shape(query, start=-2, end=-1), np.asarray([1], np.int64), axis=0)
    return op.Expand(mask, target)


def _causal_mask(op: OpBuilder, scores: Value) -> Value:
    """Where(j <= i + Sk - Sq, scores, -inf) over the last two axes of the scores."""
    tail = op.Slice(op.Shape(scores), np.asarray([-2], np.int64), np.asarray([2**62], np.int64))
    ones = op.ConstantOfShape(tail, value=np.ones(1, np.float32))
    lengths = op.Split(tail, num_outputs=2, axis=0, _outputs=2) if op.graph.opset >= 18 else op.Split(tail, axis=0, _outputs=2)
    diagonal = op.Squeeze(op.Sub(lengths[1], lengths[0]), np.asarray([0], np.int64))
    allowed = op.Cast(op.Trilu(ones, diagonal, upper=0), to=int(DataType.BOOL))
    return op.Where(allowed, scores, constant_like(op, scores, -np.inf))


def _decompose(op: OpBuilder, node: Node) -> Sequence[Value]:
    query, key, value = node.inputs[:3]
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    scale, causal = node.attr("scale", None), node.attr("is_causal", 0)
    if op.graph.opset >= 23 and (not causal or _same_length(query, key)):  # ONNX aligns causal top-left
        mask = None if mask is None else _mask_over_queries(op, mask, query, key)
        return [op.Attention(query, key, value, mask, scale=scale, is_causal=causal or None)]
    key, value = _repeat_heads(op, node, key, query), _repeat_heads(op, node, value, query)
    if scale is None:
        depth = query.shape[-1] if query.shape is not None else None
        if not isinstance(depth, int):
            raise UnsupportedError(f"Attention {node.name!r}: the head size is unknown and no scale is given")
        scale = 1.0 / float(np.sqrt(depth))
    scores = op.Mul(op.MatMul(query, op.Transpose(key, perm=[0, 1, 3, 2])), constant_like(op, query, scale))
    if causal:
        scores = _causal_mask(op, scores)
    if mask is not None and mask.dtype == DataType.BOOL:
        scores = op.Where(mask, scores, constant_like(op, query, -np.inf))
    elif mask is not None:
        scores = op.Add(scores, mask)
    return [op.MatMul(op.Softmax(scores, axis=-1), value)]


def attention_reference(query: np.ndarray, key: np.ndarray, value: np.ndarray, mask: np.ndarray | None = None,
                        scale: float | None = None, is_causal: int = 0) -> np.ndarray:
    """softmax(scale * Q K^T + mask) V in float64, heads of K/V repeated for grouped-query attention."""
    groups = query.shape[1] // key.shape[1]
    wide_key = np.repeat(np.asarray(key, np.float64), groups, axis=1)
    wide_value = np.repeat(np.asarray(value, np.float64), groups, axis=1)
    scale = 1.0 / np.sqrt(query.shape[-1]) if scale is None else scale
    scores = scale * np.asarray(query, np.float64) @ np.swapaxes(wide_key, -1, -2)
    if is_causal:
        sq, sk = scores.shape[-2:]
        allowed = np.tril(np.ones((sq, sk), bool), k=sk - sq)
        scores = np.where(allowed, scores, -np.inf)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return (weights @ wide_value).astype(query.dtype)


def _kernel(query, key, value, mask=None, scale=None, is_causal=0) -> list[np.ndarray]:
    return [attention_reference(query, key, value, mask, scale, is_causal)]


ATTENTION = register_custom_op(CustomOp(
    "Attention", _infer, _decompose, _kernel, domain=GRAPHKILN_DOMAIN, min_opset=14,
    doc="Y = softmax(scale * Q K^T + mask) V on [B, H, S, D]; K/V may have fewer (grouped) heads",
    attributes={"scale": "float; absent -> 1/sqrt(D)", "is_causal": "0 (default) or 1: key j <= i + Sk - Sq"},
))
