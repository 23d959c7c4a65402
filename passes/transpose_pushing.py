"""Transpose pushed through elementwise ops so Transposes meet and cancel: op(T(a,p), T(b,p)) ->
T(op(a,b),p); T(u(T(x,p1)),p2) -> T(u(x), p1.p2); T(op(T(x,p1), c),p2) with c a constant."""

from __future__ import annotations

import numpy as np

from compiler.pass_infra import register_pass
from compiler.rewriter import AttrVar, Rule, fail

from .layout_chains import compose_permutations
from .rewrite_pass import RewritePass

UNARY = ("Relu", "Sigmoid", "Tanh", "Exp", "Log", "Abs", "Neg", "Sqrt", "Erf", "Reciprocal", "Floor", "Ceil",
         "LeakyRelu", "Elu", "Softplus", "HardSigmoid", "Sign", "Not", "Cast", "Sin", "Cos", "Selu", "Gelu")
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "And", "Or", "Equal", "Less", "Greater")


def _inverse(perm: list[int]) -> list[int]:
    return [int(i) for i in np.argsort(perm)]


def _settle(op, x, perm):
    """Transpose by perm, or nothing when it is the identity."""
    return x if list(perm) == list(range(len(perm))) else op.Transpose(x, perm=perm)


def _copy(op, node, *inputs):
    return op.op(node.op_type, *inputs, _domain=node.domain, **dict(node.attributes))


def _unary_pattern(op_type):
    def pattern(op, x):
        inner = op.Transpose(x, perm=AttrVar("inner"))
        middle = getattr(op, op_type)(inner, _capture="elementwise")
        return op.Transpose(middle, perm=AttrVar("outer"))
    return pattern


def _perms_given(ctx, inner, outer, **_):
    if inner is None or outer is None or len(inner) != len(outer):
        return fail("a Transpose has no explicit perm (or the ranks differ)", ctx.root)
    return True


def _unary_replacement(op, x, inner, outer, elementwise, **_):
    return _settle(op, _copy(op, elementwise, x), compose_permutations(inner, outer))


def _both_pattern(op_type):
    def pattern(op, a, b):
        left = op.Transpose(a, perm=AttrVar("left"))
        right = op.Transpose(b, perm=AttrVar("right"))
        return getattr(op, op_type)(left, right, _capture="elementwise", _commute=False)
    return pattern


def _same_perm(ctx, left, right, **_):
    if left is None or right is None or list(left) != list(right):
        return fail(f"the two Transposes differ ({left} vs {right})", ctx.root)
    return True


def _both_replacement(op, a, b, left, elementwise, **_):
    return op.Transpose(_copy(op, elementwise, a, b), perm=list(left))


def _constant_pattern(op_type):
    def pattern(op, x, c):
        inner = op.Transpose(x, perm=AttrVar("inner"))
        middle = getattr(op, op_type)(inner, c, _capture="elementwise", _commute=False)
        return op.Transpose(middle, perm=AttrVar("outer"))
    return pattern


def _constant_fits(ctx, c, inner, outer, **_):
    given = _perms_given(ctx, inner, outer)
    if not given:
        return given
    array = c.constant()
    if array is None or array.ndim > len(inner) or array.size > 1 << 20:
        return fail("the other operand is not a small constant of at most the same rank", ctx.root)
    return True


def _constant_replacement(op, x, c, inner, outer, elementwise, **_):
    array = c.constant()
    full = array.reshape((1,) * (len(inner) - array.ndim) + array.shape)
    moved = op.const(np.transpose(full, _inverse(inner)))
    return _settle(op, _copy(op, elementwise, x, moved), compose_permutations(inner, outer))


def _rules() -> list[Rule]:
    rules = []
    for op_type in UNARY:
        rules.append(Rule(f"push_transpose_through_{op_type.lower()}", _unary_pattern(op_type), _unary_replacement, _perms_given))
    for op_type in BINARY:
        lower = op_type.lower()
        rules.append(Rule(f"hoist_transpose_over_{lower}", _both_pattern(op_type), _both_replacement, _same_perm))
        rules.append(Rule(f"push_transpose_through_{lower}_constant", _constant_pattern(op_type), _constant_replacement, _constant_fits))
    return rules


RULES = _rules()


@register_pass
class PushTransposes(RewritePass):
    name = "push_transposes"
    description = "move Transposes through elementwise ops so that they merge or cancel"
    rules = RULES
