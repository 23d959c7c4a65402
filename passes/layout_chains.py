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


# --- a transpose of trailing axes between merging and splitting the leading ones ----------------

def _merged_leading_transpose(op, x, merge_target, split_target):
    merged = op.Reshape(x, merge_target, _capture="merge")
    return op.Reshape(op.Transpose(merged, perm=AttrVar("perm")), split_target)


def _leading_dims_merged(merge, x) -> int | None:
    """How many leading dims of x the Reshape `merge` folds into its first one, keeping x's other
    dims as they are (x [B, H, S, D] -> [B*H, S, D] gives 2), else None."""
    tokens, merged = dimension_tokens(x), dimension_tokens(merge.outputs[0])
    if tokens is None or merged is None or not 1 < len(merged) < len(tokens):
        return None
    count = len(tokens) - len(merged) + 1
    return count if tokens[count:] == merged[1:] else None


def _transposes_only_trailing(ctx, x, perm, merge, **_):
    count = _leading_dims_merged(merge, x)
    if count is None:
        return fail("the first Reshape does not merge leading dims of the input and keep the rest", merge)
    if perm is None or perm[0] != 0:
        return fail("the Transpose moves the merged axis", ctx.root)
    tokens, out = dimension_tokens(x), dimension_tokens(ctx.root.outputs[0])
    expected = tokens[:count] + tuple(tokens[count - 1 + axis] for axis in perm[1:])
    if out is None or out != expected:
        return fail(f"the last Reshape gives {list(out or [])}, not the merged dims split back ({list(expected)})", ctx.root)
    return True


def _lifted_transpose(op, x, perm, merge, **_):
    count = _leading_dims_merged(merge, x)
    return op.Transpose(x, perm=list(range(count)) + [count - 1 + axis for axis in perm[1:]])


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
    Rule("transpose_between_leading_merge_and_split", _merged_leading_transpose, _lifted_transpose,
         _transposes_only_trailing,
         description="Reshape [B, H, S, D] -> [B*H, S, D], Transpose, Reshape back -> one Transpose (torch's k.transpose(-2, -1) "
                     "as its exporters write it)"),
    *_chain_rules(),
]


@register_pass
class SimplifyLayoutChains(RewritePass):
    name = "simplify_layout_chains"
    description = ("merge or cancel Transpose pairs and Reshape/Flatten/Squeeze/Unsqueeze chains; move Reshapes "
                   "across elementwise regions")
    rules = RULES
