"""Shape-subgraph folding with symbolic dimensions: Shape->Gather/Slice/Concat chains become constants
where their dims are static, and Reshape targets computed from shapes become constants using 0
(copy the input dim) and -1 (the one remaining dim) so only truly symbolic work is left."""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph
from compiler.pass_infra import GraphwisePass, register_pass
from compiler.rewriter import AttrVar, MatchFailure, Rule, fail

from .rewrite_pass import RewritePass
from .shape_facts import encode_reshape_target, symbolic_vector

SHAPE_OPS = frozenset({"Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Add", "Sub", "Mul", "Div"})


def fold_static_shape_values(graph: Graph) -> int:
    """Replace shape computations whose symbolic value is all integers by constants."""
    folded = 0
    for node in list(graph.nodes):
        if node.graph is not graph or node.domain or node.op_type not in SHAPE_OPS or len(node.outputs) != 1:
            continue
        output = node.outputs[0]
        if output.is_graph_output() or not output.uses:
            continue
        facts = symbolic_vector(output)
        if facts is None or not facts.is_static:
            continue
        if all(v is not None and v.constant() is not None for v in node.inputs):
            continue  # plain constant folding's job
        constant = graph.make_constant(facts.array().astype(output.dtype.numpy if output.dtype else np.int64),
                                       name=graph.make_name(f"{output.name}_folded"))
        graph.replace_all_uses_with(output, constant)
        graph.remove_node(node)
        folded += 1
    return folded


@register_pass
class FoldShapeValues(GraphwisePass):
    name = "fold_shape_values"
    description = "fold Shape/Gather/Slice/Concat chains to constants where the dims they read are static"
    counter = "shape_values_folded"
    pins_shapes = True

    def transform(self, graph: Graph) -> int:
        return fold_static_shape_values(graph)


def reshape_target(x, shape, allowzero: int) -> np.ndarray | MatchFailure:
    """The constant equivalent of a computed Reshape target, or a failure saying what is unknown."""
    facts = symbolic_vector(shape)
    if facts is None or facts.scalar:
        return fail("the target shape is not a computation over known dims")
    if allowzero and 0 not in facts.elements:
        allowzero = 0  # no literal zero: copying a dim and keeping a 0-sized one agree
    target = encode_reshape_target(facts.elements, x, allowzero)
    if target is None:
        return fail(f"target dims {list(facts.elements)} leave more than one symbolic dim that is not a copy of an input dim")
    return target


def _reshape(op, x, shape):
    return op.Reshape(x, shape, allowzero=AttrVar("allowzero", 0))


def _target_is_computed(ctx, x, shape, allowzero, **_):
    if shape.constant() is not None:
        return fail("the target is already a constant", ctx.root)
    target = reshape_target(x, shape, allowzero)
    if not isinstance(target, np.ndarray):
        target.nodes = (ctx.root,)
        return target
    return True


def _constant_target(op, x, shape, allowzero, **_):
    target = reshape_target(x, shape, allowzero)
    keep_zero = allowzero and 0 in target.tolist() and 0 in (symbolic_vector(shape).elements)
    return op.Reshape(x, op.const(target), allowzero=1 if keep_zero else None)


RULES = [Rule("reshape_target_to_constant", _reshape, _constant_target, _target_is_computed)]


@register_pass
class FoldReshapeTargets(RewritePass):
    name = "fold_reshape_targets"
    description = "turn Reshape targets computed from shapes into constants with 0/-1"
    changes_shapes = True  # constant targets let inference pin dims it could not before
    rules = RULES
