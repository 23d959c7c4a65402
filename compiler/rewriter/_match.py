"""Matching a traced pattern against the graph, rooted at one node, with backtracking over
commutative inputs. Every failure says why (the tracer keeps the deepest failure per rule)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..ir import Graph, Node, Value
from ._pattern import AnyOf, AttrVar, ConstPattern, NodeOutput, PatternNode, TracedPattern, Var


class MatchFailure:
    """A falsy result carrying the reason a match or check failed and the nodes involved."""

    def __init__(self, reason: str, *nodes: Node):
        self.reason = reason
        self.nodes = nodes

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        where = ", ".join(f"{n.op_type} {n.name!r}" for n in self.nodes)
        return f"MatchFailure({self.reason!r}{' at ' + where if where else ''})"


def fail(reason: str, *nodes: Node) -> MatchFailure:
    """The one convention for saying why a pattern or check does not apply."""
    return MatchFailure(reason, *nodes)


@dataclass
class Match:
    """A successful structural match: bindings of variables, attribute variables and captures."""

    root: Node
    nodes: list[Node]
    values: dict[str, Value | None] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    captures: dict[str, Node] = field(default_factory=dict)

    def bindings(self) -> dict[str, Any]:
        merged: dict[str, Any] = dict(self.values)
        merged.update(self.attrs)
        merged.update(self.captures)
        return merged


@dataclass
class _State:
    values: dict[str, Value | None]
    attrs: dict[str, Any]
    captures: dict[str, Node]
    nodes: dict[int, Node]  # id(pattern node) -> graph node

    def copy(self) -> "_State":
        return _State(dict(self.values), dict(self.attrs), dict(self.captures), dict(self.nodes))


class Matcher:
    """Matches one traced pattern; records the deepest failure for explanations."""

    def __init__(self, pattern: TracedPattern):
        self.pattern = pattern
        self.best_depth = -1
        self.best_failure: MatchFailure | None = None
        root = pattern.root
        # op types that must produce some input of the root: a cheap test before the full match
        self._feeding_ops = tuple(
            (v.node.op_type, v.node.domain) for v in root.inputs if isinstance(v, NodeOutput)
        )

    def _failed(self, state: _State, reason: str, *nodes: Node) -> None:
        depth = len(state.nodes)
        if depth >= self.best_depth:
            self.best_depth = depth
            self.best_failure = MatchFailure(f"{reason} (after matching {depth}/{len(self.pattern.nodes)} ops)", *nodes)

    def match(self, node: Node) -> Match | None:
        self.best_depth, self.best_failure = -1, None
        for op_type, domain in self._feeding_ops:
            for value in node.inputs:
                producer = value.producer if value is not None else None
                if producer is not None and producer.op_type == op_type and producer.domain == domain:
                    break
            else:
                self.best_depth = 1
                self.best_failure = MatchFailure(f"no input of {node.op_type} comes from a {op_type} (after matching "
                                                 f"1/{len(self.pattern.nodes)} ops)", node)
                return None
        state = _State({}, {}, {}, {})
        for final in self._match_node(self.pattern.root, node, state):
            nodes = list(final.nodes.values())
            return Match(node, nodes, final.values, final.attrs, final.captures)
        return None

    def _match_node(self, pnode: PatternNode, node: Node, state: _State) -> Iterator[_State]:
        if node.op_type != pnode.op_type or node.domain != pnode.domain:
            self._failed(state, f"expected {pnode.op_type}, found {node.op_type}", node)
            return
        already = state.nodes.get(id(pnode))
        if already is not None:
            if already is node:
                yield state
            else:
                self._failed(state, f"{pnode.op_type} would match two different nodes", node)
            return
        if any(n is node for n in state.nodes.values()):
            self._failed(state, "node already matched by another pattern op", node)
            return
        if len(node.outputs) < pnode.num_outputs:
            self._failed(state, f"{node.op_type} has fewer than {pnode.num_outputs} outputs", node)
            return
        state = state.copy()
        if not self._match_attributes(pnode, node, state):
            return
        state.nodes[id(pnode)] = node
        if pnode.capture:
            state.captures[pnode.capture] = node
        actual = list(node.inputs)
        expected = list(pnode.inputs)
        if len(actual) < len(expected):
            actual += [None] * (len(expected) - len(actual))
        if any(v is not None for v in actual[len(expected):]):
            self._failed(state, f"{node.op_type} has more inputs than the pattern", node)
            return
        orders = [expected]
        if pnode.commute and len(expected) == 2:
            orders.append([expected[1], expected[0]])
        for order in orders:
            yield from self._match_inputs(order, actual, 0, state, node)

    def _match_inputs(self, patterns, values, index: int, state: _State, node: Node) -> Iterator[_State]:
        if index == len(patterns):
            yield state
            return
        for next_state in self._match_value(patterns[index], values[index], state, node, index):
            yield from self._match_inputs(patterns, values, index + 1, next_state, node)

    def _match_value(self, pvalue, value: Value | None, state: _State, node: Node, index: int) -> Iterator[_State]:
        if pvalue is None:
            if value is None:
                yield state
            else:
                self._failed(state, f"input {index} of {node.op_type} should be absent", node)
            return
        if isinstance(pvalue, Var):
            if pvalue.name in state.values:
                if state.values[pvalue.name] is value:
                    yield state
                else:
                    self._failed(state, f"{pvalue.name!r} bound to two different values", node)
                return
            state = state.copy()
            state.values[pvalue.name] = value
            yield state
            return
        if value is None:
            self._failed(state, f"input {index} of {node.op_type} is absent", node)
            return
        if isinstance(pvalue, ConstPattern):
            constant = value.constant()
            if constant is None:
                self._failed(state, f"input {index} of {node.op_type} is not a constant", node)
                return
            if not _constant_equals(constant, pvalue):
                self._failed(state, f"input {index} of {node.op_type} is not {pvalue.value.tolist()}", node)
                return
            yield state
            return
        if isinstance(pvalue, NodeOutput):
            producer = value.producer
            if producer is None:
                self._failed(state, f"input {index} of {node.op_type} has no producer (expected {pvalue.node.op_type})", node)
                return
            if producer.graph is not node.graph:
                self._failed(state, f"input {index} of {node.op_type} comes from an enclosing graph", node)
                return
            if value.index != pvalue.index:
                self._failed(state, f"input {index} of {node.op_type} is output {value.index} of its producer", node)
                return
            yield from self._match_node(pvalue.node, producer, state)
            return
        raise TypeError(f"unknown pattern value {pvalue!r}")

    def _match_attributes(self, pnode: PatternNode, node: Node, state: _State) -> bool:
        for name, constraint in pnode.attributes.items():
            present = name in node.attributes
            actual = node.attr(name)
            if isinstance(constraint, AttrVar):
                state.attrs[constraint.name] = actual if present else constraint.default
                continue
            if callable(constraint) and not isinstance(constraint, (AnyOf, type)):
                if not constraint(actual):
                    self._failed(state, f"attribute {name}={actual!r} of {node.op_type} rejected", node)
                    return False
                continue
            options = constraint.options if isinstance(constraint, AnyOf) else (constraint,)
            if not any(_attr_equals(actual, option) for option in options):
                self._failed(state, f"attribute {name}={actual!r} of {node.op_type}, pattern wants {constraint!r}", node)
                return False
        return True


def _attr_equals(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple)):
        return actual is not None and list(actual) == list(wanted)
    if isinstance(wanted, float) and isinstance(actual, (int, float)):
        return abs(actual - wanted) <= 1e-6 * max(1.0, abs(wanted))
    return actual == wanted


def _constant_equals(constant: np.ndarray, pattern: ConstPattern) -> bool:
    if constant.dtype == object or constant.size > 4096:
        return False
    try:
        wanted = np.broadcast_to(pattern.value, constant.shape) if constant.size else pattern.value
        if constant.size == 0:
            return False
        if not np.broadcast_shapes(constant.shape, pattern.value.shape) == constant.shape:
            return False
        return bool(np.all(np.abs(constant.astype(np.float64) - wanted.astype(np.float64)) <= pattern.atol))
    except (ValueError, TypeError):
        return False


def external_uses(match: Match, graph: Graph) -> list[tuple[Value, Node | None]]:
    """Values made by non-root matched nodes that are read outside the match (or are outputs)."""
    matched = {id(n) for n in match.nodes}
    leaks: list[tuple[Value, Node | None]] = []
    for node in match.nodes:
        if node is match.root:
            continue
        for value in node.outputs:
            if value.is_graph_output():
                leaks.append((value, None))
            for use in value.uses:
                if id(use.node) not in matched:
                    leaks.append((value, use.node))
    return leaks
