"""Algebraic no-ops: Mul/Div by 1, Add/Sub of 0, And true, Or false, Pad of 0, Expand and Reshape to
the same shape, identity Transpose; each removed only when it neither broadcasts nor casts. Also
Where branches filled to the output shape become scalars, and Where(Not(c), a, b) -> Where(c, b, a)."""

from __future__ import annotations

import numpy as np

from compiler.ir import Value
from compiler.pass_infra import register_pass
from compiler.rewriter import Rule, can_forward, fail

from .rewrite_pass import RewritePass
from .shape_facts import dimension_tokens, symbolic_vector


def _keeps_shape(x: Value, other_shape: tuple) -> bool:
    """Broadcasting `x` with a tensor of `other_shape` (ints/tokens) leaves x's shape unchanged."""
    tokens = dimension_tokens(x)
    if tokens is None or len(other_shape) > len(tokens):
        return False
    trailing = tokens[len(tokens) - len(other_shape):]
    return all(d == 1 or d == t for d, t in zip(other_shape, trailing))


def _forward(ctx, x) -> bool:
    return can_forward(ctx.root.outputs[0], x) or fail("output name must be kept; nothing cheaper than this op", ctx.root)


def _constant_does_not_broadcast(ctx, x, **_):
    # the pattern matches commutative ops either way round: the constant is the operand that is not x
    constant = next(v for v in ctx.root.inputs if v is not x).constant()
    if not _keeps_shape(x, tuple(np.shape(constant))):
        return fail("the constant broadcasts x to a larger shape", ctx.root)
    if x.dtype is None or ctx.root.outputs[0].dtype != x.dtype:
        return fail("the dtype of x is unknown or differs from the result", ctx.root)
    return _forward(ctx, x)


def _pad_is_zero(ctx, x, **_):
    pads = ctx.root.attr("pads", None)
    if pads is None:
        pads = ctx.root.inputs[1].constant() if len(ctx.root.inputs) > 1 and ctx.root.inputs[1] is not None else None
    if pads is None or np.any(np.asarray(pads) != 0):
        return fail("pads are not constant zeros", ctx.root)
    return _forward(ctx, x)


def _expand_is_noop(ctx, x, shape, **_):
    target = symbolic_vector(shape)
    if target is None or target.scalar or not _keeps_shape(x, target.elements):
        return fail("the Expand target may be larger than x (or is unknown)", ctx.root)
    return _forward(ctx, x)


def _reshape_is_noop(ctx, x, shape, **_):
    target, tokens = symbolic_vector(shape), dimension_tokens(x)
    if target is None or tokens is None or len(target.elements) != len(tokens):
        return fail("the Reshape target is unknown or changes the rank", ctx.root)
    allowzero = ctx.root.attr("allowzero", 0)
    same = [e == t or (e == 0 and not allowzero) for e, t in zip(target.elements, tokens)]
    if same.count(False) > 1 or (same.count(False) == 1 and target.elements[same.index(False)] != -1):
        out = ctx.root.outputs[0].shape
        if out is None or not out.is_static or tuple(out) != tuple(tokens):
            return fail(f"the target {list(target.elements)} differs from the input shape {list(tokens)}", ctx.root)
    return _forward(ctx, x)


def _transpose_is_identity(ctx, x, **_):
    perm = ctx.root.attr("perm", None)
    rank = len(x.shape) if x.shape is not None else None
    if perm is None:
        identity = rank is not None and rank <= 1
    else:
        identity = list(perm) == list(range(len(perm)))
    return _forward(ctx, x) if identity else fail(f"perm {perm} is not the identity", ctx.root)


def _pass_through(op, x, **_):
    return x


def broadcast_tokens(*shapes: tuple) -> tuple | None:
    """Numpy-style broadcast of token shapes; None where two dims may differ."""
    rank = max(len(s) for s in shapes)
    result = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            return None
        result.append(dims.pop() if dims else 1)
    return tuple(result)


def _filled(ctx, fill=None, **_):
    """The filled operand may become a scalar: the other operands alone give the same output shape."""
    filled_node = ctx.match.captures["filled"]
    value = filled_node.attr("value", None) if filled_node.op_type == "ConstantOfShape" else fill.constant()
    if filled_node.op_type == "Expand" and (value is None or np.size(value) != 1):
        return fail("the expanded value is not a constant scalar", filled_node)
    others = [dimension_tokens(v) for v in ctx.root.inputs if v is not None and v is not filled_node.outputs[0]]
    wanted = dimension_tokens(ctx.root.outputs[0])
    if wanted is None or any(t is None for t in others) or broadcast_tokens(*others) != wanted:
        return fail("without the filled operand the output shape could change", ctx.root)
    return True


def _scalar_of(op, filled):
    if filled.op_type == "Expand":
        array = filled.inputs[0].constant()
    else:
        tensor = filled.attr("value", None)
        array = np.zeros(1, np.float32) if tensor is None else np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)
    return op.const(np.asarray(array).reshape(()))


def _where_filled_else(op, condition, x, filled, **_):
    return op.Where(condition, x, _scalar_of(op, filled))


def _where_filled_then(op, condition, y, filled, **_):
    return op.Where(condition, _scalar_of(op, filled), y)


def _fill(op, fill, shape):
    return op.ConstantOfShape(shape, _capture="filled")


def _expanded(op, fill, shape):
    return op.Expand(fill, shape, _capture="filled")


def _where_else(filler):
    def pattern(op, condition, x, fill, shape):
        return op.Where(condition, x, filler(op, fill, shape))
    return pattern


def _where_then(filler):
    def pattern(op, condition, y, fill, shape):
        return op.Where(condition, filler(op, fill, shape), y)
    return pattern


def _where_not(op, condition, x, y):
    return op.Where(op.Not(condition), x, y)


def _swap_branches(op, condition, x, y):
    return op.Where(condition, y, x)


RULES = [
    Rule("remove_mul_by_one", lambda op, x: op.Mul(x, 1), _pass_through, _constant_does_not_broadcast),
    Rule("remove_div_by_one", lambda op, x: op.Div(x, 1), _pass_through, _constant_does_not_broadcast),
    Rule("remove_add_zero", lambda op, x: op.Add(x, 0), _pass_through, _constant_does_not_broadcast),
    Rule("remove_sub_zero", lambda op, x: op.Sub(x, 0), _pass_through, _constant_does_not_broadcast),
    Rule("remove_and_true", lambda op, x: op.And(x, True), _pass_through, _constant_does_not_broadcast),
    Rule("remove_or_false", lambda op, x: op.Or(x, False), _pass_through, _constant_does_not_broadcast),
    Rule("remove_zero_pad", lambda op, x: op.Pad(x), _pass_through, _pad_is_zero),
    Rule("remove_zero_pad_input", lambda op, x, pads: op.Pad(x, pads), _pass_through, _pad_is_zero),
    Rule("remove_zero_pad_value", lambda op, x, pads, value: op.Pad(x, pads, value), _pass_through, _pad_is_zero),
    Rule("remove_expand_to_same_shape", lambda op, x, shape: op.Expand(x, shape), _pass_through, _expand_is_noop),
    Rule("remove_reshape_to_same_shape", lambda op, x, shape: op.Reshape(x, shape), _pass_through, _reshape_is_noop),
    Rule("remove_identity_transpose", lambda op, x: op.Transpose(x), _pass_through, _transpose_is_identity),
    Rule("where_else_fill_to_scalar", _where_else(_fill), _where_filled_else, _filled),
    Rule("where_then_fill_to_scalar", _where_then(_fill), _where_filled_then, _filled),
    Rule("where_else_expand_to_scalar", _where_else(_expanded), _where_filled_else, _filled),
    Rule("where_then_expand_to_scalar", _where_then(_expanded), _where_filled_then, _filled),
    Rule("where_not_to_swapped_branches", _where_not, _swap_branches),
]


@register_pass
class RemoveAlgebraicNoOps(RewritePass):
    name = "remove_algebraic_noops"
    description = ("remove Mul/Div by 1, Add/Sub of 0, zero Pad, same-shape Expand/Reshape, identity Transpose; "
                   "Where branches filled to the output shape become scalars, Where(Not(c)) swaps branches")
    rules = RULES
