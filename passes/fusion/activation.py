"""GELU from the forms both PyTorch exporters write: 0.5*x*(1+erf(x/sqrt2)) and the tanh
approximation 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))), grouped in any order."""

from __future__ import annotations

import math

import compiler.fused_ops  # noqa: F401  (registers the ai.graphkiln ops)
from compiler.custom_ops import GRAPHKILN_DOMAIN
from compiler.pass_infra import register_pass
from compiler.rewriter import Rule

from ..rewrite_pass import RewritePass
from ._common import is_float

_ATOL = 1e-4


def _erf_curve(scaled_by_division: bool):
    def curve(op, x):
        if scaled_by_division:
            argument = op.Div(x, op.const(math.sqrt(2.0), _ATOL))
        else:
            argument = op.Mul(x, op.const(1.0 / math.sqrt(2.0), _ATOL))
        return op.Add(op.Erf(argument), 1.0)
    return curve


def _tanh_curve(cube_by_pow: bool):
    def curve(op, x):
        cube = op.Pow(x, 3.0) if cube_by_pow else op.Mul(op.Mul(x, x), x)
        inner = op.Add(x, op.Mul(cube, op.const(0.044715, 1e-6)))
        return op.Add(op.Tanh(op.Mul(inner, op.const(math.sqrt(2.0 / math.pi), _ATOL))), 1.0)
    return curve


def _groupings(curve):
    """The three ways exporters associate 0.5 * x * curve(x)."""
    return {
        "half_last": lambda op, x: op.Mul(op.Mul(x, curve(op, x)), 0.5),
        "half_curve": lambda op, x: op.Mul(x, op.Mul(curve(op, x), 0.5)),
        "half_x": lambda op, x: op.Mul(op.Mul(x, 0.5), curve(op, x)),
    }


def _check(ctx, x, **_):
    return is_float(x, ctx.root)


def _replacement(approximate: str):
    def replace(op, x, **_):
        return op.Gelu(x, approximate=approximate, _domain=GRAPHKILN_DOMAIN)
    return replace


def _rules() -> list[Rule]:
    rules = []
    curves = {
        "erf_div": (_erf_curve(True), "none"), "erf_mul": (_erf_curve(False), "none"),
        "tanh_pow": (_tanh_curve(True), "tanh"), "tanh_cube": (_tanh_curve(False), "tanh"),
    }
    for curve_name, (curve, approximate) in curves.items():
        for grouping, pattern in _groupings(curve).items():
            rules.append(Rule(f"fuse_gelu_{curve_name}_{grouping}", pattern, _replacement(approximate), _check,
                              description=f"GELU ({approximate}) written as {curve_name}, {grouping}"))
    return rules


RULES = _rules()


@register_pass
class FuseGelu(RewritePass):
    name = "fuse_gelu"
    description = "erf and tanh GELU subgraphs -> one ai.graphkiln Gelu (standard Gelu-20 on export)"
    rules = RULES
