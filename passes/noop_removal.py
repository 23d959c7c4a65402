"""Identity and no-op removal: ops that hand their input through unchanged at inference."""

from __future__ import annotations

import numpy as np

from compiler.ir import Value
from compiler.pass_infra import register_pass
from compiler.rewriter import Rule, can_forward, fail

from .rewrite_pass import RewritePass


def _same_type(a: Value, b: Value) -> bool:
    return a.type is not None and a.type == b.type


def _identity(op, x):
    return op.Identity(x)


def _dropout(op, x):
    return op.Dropout(x, _outputs=1)


def _dropout_with_ratio(op, x, ratio):
    return op.Dropout(x, ratio, _outputs=1)


def _dropout_full(op, x, ratio, training):
    return op.Dropout(x, ratio, training, _outputs=1)


def _is_inference_dropout(ctx, training=None, **_):
    if ctx.root.attr("is_test", 1) == 0 and ctx.opset < 7:
        return fail("Dropout runs in training mode", ctx.root)
    if len(ctx.root.outputs) > 1 and (ctx.root.outputs[1].uses or ctx.root.outputs[1].is_graph_output()):
        return fail("the dropout mask is read", ctx.root)
    if training is not None:
        mode = training.constant()
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            return fail("training_mode is not a constant false", ctx.root)
    return True


def _cast(op, x):
    return op.Cast(x, _capture="cast")


def _cast_is_noop(ctx, x, cast, **_):
    if x.dtype is None or int(x.dtype) != cast.attr("to"):
        return fail("Cast changes the type", cast)
    return _forwardable(ctx, x)


def _forwardable(ctx, x, **_):
    """The op's output may be replaced by its input (no Identity needed to keep a name)."""
    return can_forward(ctx.root.outputs[0], x) or fail("output name must be kept; an Identity is the cheapest carrier", ctx.root)


def _inference_dropout(ctx, x, training=None, **_):
    return _forwardable(ctx, x) and _is_inference_dropout(ctx, training)


def _pass_through(op, x, **_):
    return x


RULES = [
    Rule("remove_identity", _identity, _pass_through, _forwardable),
    Rule("remove_dropout", _dropout, _pass_through, _inference_dropout),
    Rule("remove_dropout_ratio", _dropout_with_ratio, _pass_through, _inference_dropout),
    Rule("remove_dropout_training_input", _dropout_full, _pass_through, _inference_dropout),
    Rule("remove_cast_to_same_type", _cast, _pass_through, _cast_is_noop),
]


@register_pass
class RemoveNoOps(RewritePass):
    name = "remove_noops"
    description = "remove Identity, inference-time Dropout and Cast to the same type"
    rules = RULES
