"""Reshape moved across an elementwise region: Reshape(f(Reshape(x, a)), b) -> Reshape(f(x), b) when
f is built only from elementwise ops and scalar constants and reads nothing else (its nodes have no
readers outside the region). Elementwise math ignores layout, so one Reshape goes (often both)."""

from __future__ import annotations

import numpy as np

from compiler.ir import Node, Value
from compiler.rewriter import AttrVar, Rule, fail

UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "Exp", "Log", "Abs", "Neg", "Sqrt", "Erf", "Reciprocal", "Floor",
                   "Ceil", "LeakyRelu", "Elu", "Softplus", "HardSigmoid", "Sign", "Sin", "Cos", "Selu", "Gelu"})
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"})
MAX_REGION = 64


class _Region:
    """The elementwise nodes between the inner Reshape and the root, in producer-first order."""

    def __init__(self, rank_limit: int):
        self.nodes: list[Node] = []
        self.inner: Node | None = None
        self.rank_limit = rank_limit
        self.constant_rank = 0

    def collect(self, value: Value) -> str | None:
        """Walk producers of `value`; returns why the region is not closed, or None."""
        node = value.producer
        if node is None or node.graph is None:
            return f"{value.name!r} is not computed by an elementwise op"
        if node.op_type == "Reshape" and not node.domain:
            if self.inner is not None and self.inner is not node:
                return "the region reads two different Reshapes"
            self.inner = node
            return None
        if node in self.nodes:
            return None
        if node.domain or not (node.op_type in UNARY and len(node.inputs) == 1 or node.op_type in BINARY):
            return f"{node.op_type} {node.name!r} is not an elementwise op the region can carry"
        if len(self.nodes) >= MAX_REGION:
            return "the region is too large"
        for operand in node.inputs:
            array = operand.constant() if operand is not None else None
            if array is not None:
                if array.size != 1 or array.ndim > self.rank_limit:
                    return f"constant {operand.name!r} is not a scalar"
                self.constant_rank = max(self.constant_rank, array.ndim)
                continue
            why = self.collect(operand)
            if why:
                return why
        self.nodes.append(node)
        return None

    def closed(self, root: Node) -> str | None:
        members = {id(n) for n in self.nodes} | {id(root)}
        for node in [*self.nodes, self.inner]:
            for value in node.outputs:
                if value.is_graph_output() or any(id(use.node) not in members for use in value.uses):
                    return f"{node.op_type} {node.name!r} is also read outside the region"
        return None


def _reshape_of_region(op, y, shape):
    return op.Reshape(y, shape, allowzero=AttrVar("allowzero", 0))


def _walk(root: Node, y: Value) -> tuple[_Region, str | None]:
    """The region feeding the root Reshape and why it cannot be carried across (None if it can)."""
    region = _Region(min(len(root.outputs[0].shape or ()), len(y.shape or ())))
    why = region.collect(y)
    if why is None and (region.inner is None or not region.nodes):
        why = "no Reshape feeds an elementwise region here"
    why = why or region.closed(root)
    source = region.inner.inputs[0] if region.inner is not None else None
    if not why and (source is None or source.shape is None or region.constant_rank > len(source.shape)):
        why = "a constant has more dims than the Reshape's input"
    return region, why


def _sinkable(ctx, y, shape, allowzero, **_):
    target = shape.constant()
    if target is None or (not allowzero and np.any(np.asarray(target) == 0)):
        return fail("the outer target is not a constant free of 0 (copy) entries", ctx.root)
    if ctx.root.outputs[0].shape is None or y.shape is None:
        return fail("the ranks are unknown", ctx.root)
    _, why = _walk(ctx.root, y)
    return fail(why, ctx.root) if why else True


def _sunk(op, y, shape, allowzero, **_):
    region, _ = _walk(op.before, y)
    copies: dict[int, Value] = {id(region.inner.outputs[0]): region.inner.inputs[0]}
    for node in region.nodes:
        inputs = [copies.get(id(v), v) for v in node.inputs]
        copies[id(node.outputs[0])] = op.op(node.op_type, *inputs, **dict(node.attributes))
    return op.Reshape(copies[id(y)], shape, allowzero=allowzero or None)


RULES = [Rule("sink_reshape_through_elementwise", _reshape_of_region, _sunk, _sinkable)]
