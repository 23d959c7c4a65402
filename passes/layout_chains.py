"""Layout chains: Transpose pairs merge (or cancel), and chains of Reshape/Flatten/Squeeze/Unsqueeze
collapse into one Reshape (or nothing) when the final shape is expressible as a constant target."""

from __future__ import annotations

from compiler.pass_infra import register_pass
from compiler.rewriter import AttrVar, Rule, can_forward, fail

from .reshape_sinking import RULES as SINK_RULES
from .rewrite_pass import RewritePass
from .shape_facts import dimension_tokens, encode_reshape_target


def compose_permutations(inner: list[int], outer: list[int]) -> list[int]:
    """The perm of Transpose(Transpose(x, inner), outer) as one Transpose of x."""
    return [inner[axis] for axis in outer]


def _is_identity(perm: list[int]) -> bool:
    return list(perm) == list(range(len(perm)))


def _transpose_pair(op, x):
    return op.Transpose(op.Transpose(x, perm=AttrVar("inner"), _capture="first"), perm=AttrVar("outer"))


def _perms_known(ctx, inner, outer, **_):
    if inner is None or outer is None or len(inner) != len(outer):
        return fail("a Transpose has no explicit perm (or the ranks differ)", ctx.root)
    return True


def _cancels(ctx, x, inner, outer, **_):
    known = _perms_known(ctx, inner, outer)
    if not known:
        return known
    if not _is_identity(compose_permutations(inner, outer)):
        return fail(f"perms {inner} then {outer} do not cancel", ctx.root)
    return can_forward(ctx.root.outputs[0], x) or fail("output name must be kept", ctx.root)


def _merged_transpose(op, x, inner, outer, **_):
    return op.Transpose(x, perm=compose_permutations(inner, outer))


def _forward_x(op, x, **_):
    return x


# --- Reshape-like chains -------------------------------------------------------------------------

def _reshape_like_forms():
    """(op_type, pattern-maker) pairs for each input arity of the shape-only ops."""
    return [
        ("reshape", lambda op, inner, extra: op.Reshape(inner, extra[0])),
        ("flatten", lambda op, inner, extra: op.Flatten(inner)),
        ("squeeze", lambda op, inner, extra: op.Squeeze(inner)),
        ("squeeze", lambda op, inner, extra: op.Squeeze(inner, extra[0])),
        ("unsqueeze", lambda op, inner, extra: op.Unsqueeze(inner)),
        ("unsqueeze", lambda op, inner, extra: op.Unsqueeze(inner, extra[0])),
    ]


def _chain_pattern(inner_form, outer_form):
    def pattern(op, x, inner_extra, outer_extra):
        first = inner_form(op, x, [inner_extra])
        return outer_form(op, first, [outer_extra])

    return pattern


def _final_target(ctx, x):
    tokens = dimension_tokens(ctx.root.outputs[0])
    if tokens is None or x.shape is None:
        return None, fail("the chain's input or output shape is unknown", ctx.root)
    if tokens == dimension_tokens(x):
        return "same", True
    target = encode_reshape_target(tokens, x)
    if target is None:
        return None, fail(f"output dims {list(tokens)} have several symbols not copied from the input", ctx.root)
    return target, True


def _chain_collapses(ctx, x, **_):
    target, verdict = _final_target(ctx, x)
    if target is None:
        return verdict
    if isinstance(target, str) and not can_forward(ctx.root.outputs[0], x):
        return fail("output name must be kept", ctx.root)
    return True


def _collapsed(op, x, **_):
    tokens = dimension_tokens(op.before.outputs[0])
    if tokens == dimension_tokens(x):
        return x
    return op.Reshape(x, op.const(encode_reshape_target(tokens, x)))


def _chain_rules() -> list[Rule]:
    rules = []
    for inner_name, inner_form in _reshape_like_forms():
        for outer_name, outer_form in _reshape_like_forms():
            name = f"merge_{inner_name}_{outer_name}"
            rules.append(Rule(name, _chain_pattern(inner_form, outer_form), _collapsed, _chain_collapses,
                              description=f"{inner_name} then {outer_name} -> one Reshape (or nothing)"))
    return rules


RULES = [
    *SINK_RULES,
    Rule("cancel_transposes", _transpose_pair, _forward_x, _cancels, allow_shared=True),
    Rule("merge_transposes", _transpose_pair, _merged_transpose, _perms_known),
    *_chain_rules(),
]


@register_pass
class SimplifyLayoutChains(RewritePass):
    name = "simplify_layout_chains"
    description = ("merge or cancel Transpose pairs and Reshape/Flatten/Squeeze/Unsqueeze chains; move Reshapes "
                   "across elementwise regions")
    rules = RULES
