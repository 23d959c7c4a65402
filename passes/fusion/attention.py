"""Scaled-dot-product attention: softmax(QK^T * s + mask) V on heads, with the scale as Div or Mul
on the scores (or absent) and an additive mask, -> one Attention op on [B, H, S, D]."""

from __future__ import annotations

import compiler.fused_ops  # noqa: F401  (registers the ai.graphkiln ops)
from compiler.custom_ops import GRAPHKILN_DOMAIN
from compiler.pass_infra import register_pass
from compiler.rewriter import AttrVar, Rule, fail

from ..rewrite_pass import RewritePass
from ._common import is_float, nan_guarded, scalar

_KEY_PERMUTATIONS = {(0, 2, 3, 1): (0, 2, 1, 3), (0, 1, 3, 2): None}  # K^T's perm -> perm giving [B, H, S, D]


def _pattern(scaling: str, masked: bool, two_masks: bool = False):
    def pattern(op, query, key, value, scale, mask, bias):
        transposed_key = op.Transpose(key, perm=AttrVar("key_perm"), _capture="key_transpose")
        scores = op.MatMul(query, transposed_key)
        if scaling == "div":
            scores = op.Div(scores, scale)
        elif scaling == "mul":
            scores = op.Mul(scores, scale)
        if two_masks:  # T5: a position bias, then the padding mask
            scores = op.Add(scores, bias)
        if masked:
            scores = op.Add(scores, mask)
        return op.MatMul(op.Softmax(scores, axis=AttrVar("softmax_axis"), _capture="softmax"), value)
    return pattern


def _split_scale_pattern(masked: bool, guarded: bool, scaled: bool = True):
    """torch's scaled_dot_product_attention as its exporters write it: sqrt(scale) on Q and on K^T
    (none where the model scaled Q itself and passed scale=1, as OPT does), an additive mask
    (transformers' default sdpa attention), and Where(IsNaN(P), 0, P), which makes the
    probabilities of a row whose every key is masked with -inf zeros instead of NaN. K^T is any
    4-D value (the exporter transposes K through a 3-D Reshape)."""
    def pattern(op, query, transposed_key, value, query_scale, key_scale, mask, zero):
        if scaled:
            query, transposed_key = op.Mul(query, query_scale), op.Mul(transposed_key, key_scale)
        scores = op.MatMul(query, transposed_key)
        if masked:
            scores = op.Add(scores, mask)
        probabilities = op.Softmax(scores, axis=AttrVar("softmax_axis"), _capture="softmax")
        if guarded:
            probabilities = nan_guarded(op, probabilities, zero)
        return op.MatMul(probabilities, value)
    return pattern


def _check_split_scale(ctx, query, transposed_key, value, softmax_axis, softmax, query_scale=None, key_scale=None,
                       mask=None, zero=None, **_):
    fits = _operands_fit(ctx, query, transposed_key, value, softmax_axis, softmax, mask)
    if not fits:
        return fits
    if query_scale is not None and (scalar(query_scale) is None or scalar(key_scale) is None):
        return fail("the Q/K scales are not scalar constants", ctx.root)
    if zero is not None and scalar(zero) != 0.0:
        return fail("the NaN guard does not put 0 in place of NaN", ctx.root)
    return True


def _replace_split_scale(op, query, transposed_key, value, query_scale=None, key_scale=None, mask=None, zero=None, **_):
    key = op.Transpose(transposed_key, perm=[0, 1, 3, 2])
    inputs = [query, key, value] + ([mask] if mask is not None else [])
    scale = 1.0 if query_scale is None else scalar(query_scale) * scalar(key_scale)
    output = op.op("Attention", *inputs, scale=scale, _domain=GRAPHKILN_DOMAIN)
    if zero is None:
        return output
    # a row of NaN probabilities gives a NaN output row, so the guard moves to the [B, H, S, D]
    # output: exact for rows masked everywhere, whichever way a backend computes that row
    return nan_guarded(op, output, zero)


def _rank(value) -> int | None:
    return None if value.shape is None else len(value.shape)


def _batch_broadcast(query, key, value) -> bool:
    """Whether the product broadcasts one side's batch of 1 against the other's (DETR-style
    learned queries [1, H, S, D] against a batch of keys): MatMul does, Attention does not."""
    batches = [v.shape[0] for v in (query, key, value)]
    return any(b == 1 for b in batches) and not all(b == 1 for b in batches)


def _operands_fit(ctx, query, key, value, softmax_axis, softmax, mask=None):
    """The checks of every attention rule: float 4-D Q, K (or K^T) and V of one batch size, the
    Softmax over the last axis, and a float mask broadcastable to the scores."""
    if not is_float(query, ctx.root):
        return is_float(query, ctx.root)
    if not all(_rank(v) == 4 for v in (query, key, value)):
        return fail("Q, K and V are not 4-D head tensors", ctx.root)
    if _batch_broadcast(query, key, value):
        return fail("Q and K/V have different batch sizes (the product broadcasts one)", ctx.root)
    axis = softmax_axis if softmax_axis is not None else (-1 if ctx.opset >= 13 else 1)
    if axis not in (-1, 3):
        return fail("Softmax is not over the last axis", softmax)
    if mask is not None and not _score_shaped(mask, query):
        return fail("the mask is not a float tensor broadcastable to the scores", ctx.root)
    return True


def _score_shaped(tensor, query) -> bool:
    """A tensor of Q's float type and at most 4 dims (so it broadcasts to the [B, H, Sq, Sk] scores)."""
    return _rank(tensor) is not None and _rank(tensor) <= 4 and tensor.dtype == query.dtype


def _check(ctx, query, key, value, key_perm, softmax_axis, softmax, scale=None, mask=None, bias=None, **_):
    fits = _operands_fit(ctx, query, key, value, softmax_axis, softmax, mask)
    if not fits:
        return fits
    if tuple(key_perm or ()) not in _KEY_PERMUTATIONS:
        return fail(f"K is transposed with perm {key_perm}, not to [B, H, D, S]", ctx.root)
    if scale is not None and scalar(scale) is None:
        return fail("the score scale is not a scalar constant", ctx.root)
    if bias is not None and not _score_shaped(bias, query):
        return fail("the score bias is not a float tensor broadcastable to the scores", ctx.root)
    return True


def _replacement(scaling: str):
    def replace(op, query, key, value, key_perm, scale=None, mask=None, bias=None, **_):
        permutation = _KEY_PERMUTATIONS[tuple(key_perm)]
        heads_key = op.Transpose(key, perm=list(permutation)) if permutation else key
        factor = 1.0 if scaling == "none" else scalar(scale)
        if scaling == "div":
            factor = 1.0 / factor
        if bias is not None:  # shared by every layer in T5, so CSE keeps one sum
            mask = op.Add(bias, mask)
        return op.op("Attention", query, heads_key, value, mask, scale=float(factor), _domain=GRAPHKILN_DOMAIN)
    return replace


def _rules() -> list[Rule]:
    rules = []
    for scaling in ("div", "mul", "none"):
        for masked in (True, False):
            name = f"fuse_attention_{scaling}_scale{'_masked' if masked else ''}"
            rules.append(Rule(name, _pattern(scaling, masked), _replacement(scaling), _check))
        rules.append(Rule(f"fuse_attention_{scaling}_scale_bias_masked", _pattern(scaling, True, True),
                          _replacement(scaling), _check))
    # torch's sdpa forms with any K^T; unscaled (OPT scales Q itself; T5 has no scale and a position
    # bias in its mask) tried after the Transpose rules above, which take K without the extra transpose
    for scaled in (True, False):
        for masked in (True, False):
            for guarded in (True, False):
                name = (f"fuse_attention_{'split_scale' if scaled else 'unscaled'}{'_masked' if masked else ''}"
                        f"{'_nan_guarded' if guarded else ''}")
                rules.append(Rule(name, _split_scale_pattern(masked, guarded, scaled), _replace_split_scale,
                                  _check_split_scale))
    return rules


RULES = _rules()


@register_pass
class FuseAttention(RewritePass):
    name = "fuse_attention"
    description = "softmax(Q K^T * scale + mask) V on heads -> one ai.graphkiln Attention (standard at opset 23)"
    rules = RULES
