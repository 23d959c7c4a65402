"""Standard Attention-23 on 3-D [B, S, H*D] inputs: the head split (Reshape + Transpose) of Q, K, V
and the head merge of the output move into the op (q_num_heads / kv_num_heads), 7-8 nodes fewer."""

from __future__ import annotations

import numpy as np

from compiler.pass_infra import register_pass
from compiler.rewriter import AttrVar, Rule, fail

from ..rewrite_pass import RewritePass
from ._common import nan_guarded

_HEADS_FIRST = [0, 2, 1, 3]


def _pattern(guarded: bool):
    """The head split of Q, K, V, Attention, and the head merge of its output; `guarded`: with the
    Where(IsNaN(Y), 0, Y) that fuse_attention leaves on the output of torch's sdpa, which moves
    to the 3-D output."""
    def pattern(op, query, key, value, mask, query_shape, key_shape, value_shape, merged_shape, zero):
        def heads(x, shape, name):
            return op.Transpose(op.Reshape(x, shape, _capture=f"{name}_split"), perm=_HEADS_FIRST)
        attention = op.Attention(heads(query, query_shape, "query"), heads(key, key_shape, "key"),
                                 heads(value, value_shape, "value"), mask, scale=AttrVar("scale"), _capture="attention")
        output = nan_guarded(op, attention, zero) if guarded else attention
        return op.Reshape(op.Transpose(output, perm=_HEADS_FIRST), merged_shape, _capture="merge")
    return pattern


def _split_heads(split, name: str):
    """(heads, size) when `split` only splits the last axis of a rank-3 value into [heads, size]."""
    source, result = split.inputs[0].shape, split.outputs[0].shape
    if source is None or result is None or len(source) != 3 or len(result) != 4:
        return fail(f"the {name} reshape is not [B, S, H*D] -> [B, S, H, D]", split)
    heads, size = result[2], result[3]
    if list(result[:2]) != list(source[:2]) or None in source[:2] or not isinstance(heads, int) or not isinstance(size, int) \
            or source[2] != heads * size:
        return fail(f"the {name} reshape is not [B, S, H*D] -> [B, S, H, D]", split)
    return heads, size


def _target_keeps_meaning(merge) -> bool:
    """Reshape reads row-major data, and [B, S, H, Dv] (heads merged back) and the 3-D output
    [B, S, H*Dv] hold it in the same order; only a 0 ("copy this input dim") beyond the first two
    target entries could read differently. True when the target provably has none."""
    target = merge.inputs[1]
    constant = target.constant()
    if constant is not None:
        return bool(np.all(np.asarray(constant).reshape(-1)[2:] != 0)) or bool(merge.attr("allowzero", 0))
    concat = target.producer
    if concat is None or concat.op_type != "Concat":
        return False
    pieces = [value.constant() for value in concat.inputs[2:]]
    sizes = [value.shape for value in concat.inputs[:2]]
    return (all(shape is not None and list(shape) == [1] for shape in sizes)
            and all(piece is not None and np.all(np.asarray(piece) != 0) for piece in pieces))


def _check(ctx, attention, query_split, key_split, value_split, merge, **_):
    if ctx.opset < 23 or attention.attr("is_causal", 0) or len(attention.outputs) > 1 and any(
            v.uses for v in attention.outputs[1:]):
        return fail("needs a plain Attention-23", attention)
    splits = [_split_heads(s, n) for s, n in ((query_split, "query"), (key_split, "key"), (value_split, "value"))]
    for split in splits:
        if not isinstance(split, tuple):
            return split
    (heads, _), (kv_heads, _), (value_heads, _) = splits
    if value_heads != kv_heads or heads % kv_heads:
        return fail("K and V head counts differ", attention)
    if not _target_keeps_meaning(merge):
        return fail("the output reshape target may copy a head axis (0 beyond the first two entries)", merge)
    return True


def _replace(op, query, key, value, attention, key_split, merge, merged_shape, mask=None, scale=None, zero=None, **_):
    heads = attention.inputs[0].shape[1]  # [B, H, S, D] after the split
    kv_heads = key_split.outputs[0].shape[2]  # [B, S, Hkv, D]
    result = op.Attention(query, key, value, mask, scale=scale, q_num_heads=int(heads), kv_num_heads=int(kv_heads))
    if zero is not None:
        result = nan_guarded(op, result, zero)
    merged, source = merge.outputs[0].shape, query.shape
    if merged is not None and source is not None and len(merged) == 3 and list(merged) == [*source[:2], result_width(attention)]:
        return result
    return op.Reshape(result, merged_shape, allowzero=merge.attr("allowzero", 0))


def result_width(attention) -> int | None:
    """H * Dv of the 4-D Attention output [B, H, S, Dv], when both are known."""
    shape = attention.outputs[0].shape
    if shape is None or not isinstance(shape[1], int) or not isinstance(shape[3], int):
        return None
    return shape[1] * shape[3]


RULES = [Rule("attention_on_merged_heads", _pattern(False), _replace, _check),
         Rule("attention_on_merged_heads_nan_guarded", _pattern(True), _replace, _check)]


@register_pass
class FuseAttentionHeads(RewritePass):
    name = "fuse_attention_heads"
    description = "Reshape/Transpose head split and merge around Attention-23 -> its 3-D form"
    rules = RULES
