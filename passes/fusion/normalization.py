"""LayerNormalization and RMSNorm from their decomposed forms:
(x - mean(x)) / sqrt(mean((x - mean)^2) + eps) * w + b  and  x * rsqrt(mean(x^2) + eps) * w."""

from __future__ import annotations

import numpy as np

import compiler.fused_ops  # noqa: F401  (registers the ai.graphkiln ops)
from compiler.custom_ops import GRAPHKILN_DOMAIN
from compiler.pass_infra import register_pass
from compiler.rewriter import AttrVar, Rule, fail

from ..rewrite_pass import RewritePass
from ._common import is_float, last_axis_reduction, matches_last_dim, scalar


def _layer_norm_pattern(axes_as_input: bool, with_bias: bool, square_by_pow: bool):
    def pattern(op, x, scale, bias, epsilon, mean_axes, variance_axes):
        mean = op.ReduceMean(x, mean_axes, _capture="mean") if axes_as_input else op.ReduceMean(x, _capture="mean")
        centered = op.Sub(x, mean)
        square = op.Pow(centered, 2.0) if square_by_pow else op.Mul(centered, centered)
        variance = (op.ReduceMean(square, variance_axes, _capture="variance") if axes_as_input
                    else op.ReduceMean(square, _capture="variance"))
        normalized = op.Div(centered, op.Sqrt(op.Add(variance, epsilon)))
        scaled = op.Mul(normalized, scale)
        return op.Add(scaled, bias) if with_bias else scaled
    return pattern


def _rms_norm_pattern(axes_as_input: bool, inverse: str, scaled: bool = True):
    def pattern(op, x, scale, epsilon, mean_axes):
        mean_square = (op.ReduceMean(op.Pow(x, 2.0), mean_axes, _capture="mean") if axes_as_input
                       else op.ReduceMean(op.Pow(x, 2.0), _capture="mean"))
        root = op.Sqrt(op.Add(mean_square, epsilon))
        if inverse == "reciprocal":
            normalized = op.Mul(x, op.Reciprocal(root))
        elif inverse == "one_over":
            normalized = op.Mul(x, op.Div(1.0, root))
        else:
            normalized = op.Div(x, root)
        return op.Mul(normalized, scale) if scaled else normalized
    return pattern


def _scale_pattern(op, x, scale, weight):
    norm = op.RMSNormalization(x, scale, axis=AttrVar("axis", -1), epsilon=AttrVar("epsilon", 1e-5),
                               _domain=GRAPHKILN_DOMAIN, _capture="norm")
    return op.Mul(norm, weight)


def _check_scale(ctx, x, scale, weight, axis, norm, **_):
    rank = None if x.shape is None else len(x.shape)
    if rank is None or axis % rank != rank - 1:
        return fail("the normalization is not over the last axis alone", norm)
    if scale.constant() is None or weight.constant() is None:
        return fail("the scales are not both constant", ctx.root)
    return matches_last_dim(weight, x, ctx.root)


def _replace_scale(op, x, scale, weight, axis, epsilon, **_):
    product = np.asarray(scale.constant() * weight.constant(), dtype=x.dtype.numpy).reshape(-1)
    product = np.broadcast_to(product, (int(x.shape[-1]),)).copy()
    return op.op("RMSNormalization", x, op.const(product), axis=axis, epsilon=epsilon, _domain=GRAPHKILN_DOMAIN)


def _check_layer_norm(ctx, x, scale, epsilon, mean, variance, bias=None, **_):
    for check in (is_float(x, ctx.root), last_axis_reduction(mean, x), last_axis_reduction(variance, x),
                  matches_last_dim(scale, x, ctx.root)):
        if not check:
            return check
    if bias is not None and not matches_last_dim(bias, x, ctx.root):
        return matches_last_dim(bias, x, ctx.root)
    if scalar(epsilon) is None:
        return fail("epsilon is not a scalar constant", ctx.root)
    return True


def _check_rms_norm(ctx, x, epsilon, mean, scale=None, **_):
    for check in (is_float(x, ctx.root), last_axis_reduction(mean, x),
                  True if scale is None else matches_last_dim(scale, x, ctx.root)):
        if not check:
            return check
    return scalar(epsilon) is not None or fail("epsilon is not a scalar constant", ctx.root)


def _as_vector(op, parameter, x):
    """A scalar scale/bias broadcast to x's last axis (the fused ops want a vector)."""
    if parameter.shape is not None and len(parameter.shape) == 1:
        return parameter
    return op.const(np.full(int(x.shape[-1]), scalar(parameter), dtype=x.dtype.numpy))


def _replace_layer_norm(op, x, scale, epsilon, bias=None, **_):
    bias = None if bias is None else _as_vector(op, bias, x)
    return op.op("LayerNormalization", x, _as_vector(op, scale, x), bias, axis=-1, epsilon=scalar(epsilon),
                 _domain=GRAPHKILN_DOMAIN)


def _replace_rms_norm(op, x, epsilon, scale=None, **_):
    scale = op.const(np.ones(int(x.shape[-1]), x.dtype.numpy)) if scale is None else _as_vector(op, scale, x)
    return op.op("RMSNormalization", x, scale, axis=-1, epsilon=scalar(epsilon), _domain=GRAPHKILN_DOMAIN)


def _layer_norm_rules() -> list[Rule]:
    rules = []
    for axes_as_input in (False, True):
        for with_bias in (True, False):
            for square_by_pow in (True, False):
                name = (f"fuse_layer_norm{'_axes_input' if axes_as_input else ''}{'' if with_bias else '_no_bias'}"
                        f"{'' if square_by_pow else '_mul_square'}")
                pattern = _layer_norm_pattern(axes_as_input, with_bias, square_by_pow)
                rules.append(Rule(name, pattern, _replace_layer_norm, _check_layer_norm))
    return rules


def _bias_pattern(domain: str):
    def pattern(op, x, scale, bias):
        norm = op.LayerNormalization(x, scale, axis=AttrVar("axis", -1), epsilon=AttrVar("epsilon", 1e-5),
                                     stash_type=AttrVar("stash_type", 1), _domain=domain, _capture="norm")
        return op.Add(norm, bias)
    return pattern


def _check_bias(ctx, x, scale, bias, axis, norm, **_):
    rank = None if x.shape is None else len(x.shape)
    if rank is None or axis % rank != rank - 1:
        return fail("the normalization is not over the last axis alone", norm)
    if len(norm.outputs) > 1 and any(v.uses or v.is_graph_output() for v in norm.outputs[1:]):
        return fail("the mean/inverse-std outputs are read", norm)
    return matches_last_dim(bias, x, ctx.root)


def _replace_bias(op, x, scale, bias, axis, epsilon, stash_type, norm, **_):
    return op.op("LayerNormalization", x, scale, _as_vector(op, bias, x), axis=axis, epsilon=epsilon,
                 stash_type=stash_type, _domain=norm.domain)


def _bias_rules() -> list[Rule]:
    return [Rule(f"fold_bias_into_layer_norm{'_graphkiln' if domain else ''}", _bias_pattern(domain), _replace_bias,
                 _check_bias) for domain in (GRAPHKILN_DOMAIN, "")]


def _rms_norm_rules() -> list[Rule]:
    rules = []
    for axes_as_input in (False, True):
        for inverse in ("reciprocal", "one_over", "divide"):
            pattern = _rms_norm_pattern(axes_as_input, inverse)
            rules.append(Rule(f"fuse_rms_norm_{inverse}{'_axes_input' if axes_as_input else ''}", pattern,
                              _replace_rms_norm, _check_rms_norm))
            rules.append(Rule(f"fuse_rms_norm_{inverse}{'_axes_input' if axes_as_input else ''}_unscaled",
                              _rms_norm_pattern(axes_as_input, inverse, scaled=False), _replace_rms_norm, _check_rms_norm))
    rules.append(Rule("fold_scale_into_rms_norm", _scale_pattern, _replace_scale, _check_scale))
    return rules


@register_pass
class FuseLayerNorm(RewritePass):
    name = "fuse_layer_norm"
    description = "decomposed layer normalization -> one ai.graphkiln LayerNormalization (standard at opset 17)"
    rules = [*_layer_norm_rules(), *_bias_rules()]


@register_pass
class FuseRmsNorm(RewritePass):
    name = "fuse_rms_norm"
    description = "x * rsqrt(mean(x^2) + eps) * w -> one ai.graphkiln RMSNormalization (standard at opset 23)"
    rules = _rms_norm_rules()
