"""A rewrite rule: a pattern, a check and a replacement, each a short function in the op
vocabulary; data flows from the check to the replacement through the match bindings."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..builder import OpBuilder
from ..ir import Graph, Node, Value
from ._match import Match, Matcher, MatchFailure, external_uses, fail
from ._pattern import TracedPattern, trace_pattern


@dataclass
class RewriteContext:
    """What a check sees besides the bindings: the graph, the match and pass-level options."""

    graph: Graph
    match: Match
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> Node:
        return self.match.root

    @property
    def opset(self) -> int:
        return self.graph.opset


class Rule:
    """`Rule(name, pattern, replacement, check=None)`.

    pattern(op, *vars) -> output of the root op;  check(ctx, **bindings) -> True or fail(...);
    replacement(op, **bindings) -> value(s) standing for the root's outputs. Bindings hold the
    pattern variables (Values), attribute variables and captured nodes (`_capture="name"`).
    With `allow_shared`, intermediate nodes read elsewhere are kept and only the root replaced."""

    def __init__(
        self,
        name: str,
        pattern: Callable[..., Any],
        replacement: Callable[..., Any],
        check: Callable[..., Any] | None = None,
        *,
        allow_shared: bool = False,
        description: str = "",
    ):
        self.name = name
        self.traced: TracedPattern = trace_pattern(pattern)
        self.replacement = replacement
        self.check = check
        self.allow_shared = allow_shared
        self.description = description or (inspect.getdoc(pattern) or "")
        self.matcher = Matcher(self.traced)
        self._required_ops = frozenset((node.domain, node.op_type) for node in self.traced.nodes)

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, root={self.traced.root.op_type})"

    @property
    def required_ops(self) -> frozenset[tuple[str, str]]:
        """(domain, op type) of every op in the pattern: a graph lacking one cannot match."""
        return self._required_ops

    @property
    def root_key(self) -> tuple[str, str]:
        root = self.traced.root
        return (root.domain, root.op_type)

    def try_match(self, node: Node, options: dict[str, Any] | None = None) -> Match | MatchFailure:
        """Match at `node` and run the check; returns the Match or why it failed."""
        match = self.matcher.match(node)
        if match is None:  # (a MatchFailure is falsy: test for None, or its reason would be lost)
            failure = self.matcher.best_failure
            return failure if failure is not None else fail("no match", node)
        graph = node.graph
        if not self.allow_shared:
            leaks = external_uses(match, graph)
            if leaks:
                value, reader = leaks[0]
                who = f"{reader.op_type} {reader.name!r}" if reader is not None else "a graph output"
                return fail(f"intermediate value {value.name!r} is also read by {who}; fusing would duplicate work", node)
        if self.check is not None:
            context = RewriteContext(graph, match, options or {})
            verdict = _call_with_bindings(self.check, context, match)
            if not verdict:
                return verdict if isinstance(verdict, MatchFailure) else fail("check rejected the match", node)
        return match

    def apply(self, match: Match) -> list[Node]:
        """Build the replacement before the root, reroute the root's readers, drop dead nodes."""
        root = match.root
        graph = root.graph
        builder = OpBuilder(graph, before=root, stamp=self.name)
        result = _call_with_bindings(self.replacement, builder, match)
        new_values = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(new_values) > len(root.outputs):
            raise ValueError(f"rule {self.name!r} replaced {len(root.outputs)} outputs with {len(new_values)} values")
        new_values += [None] * (len(root.outputs) - len(new_values))
        provenance = _provenance(match.nodes)
        for node in builder.created:
            node.meta["fused_from"] = provenance
        for old, new in zip(root.outputs, new_values):
            if new is None:
                if old.uses or old.is_graph_output():
                    raise ValueError(f"rule {self.name!r} dropped output {old.name!r} that is still read")
                continue
            if new.type is None and old.type is not None:
                new.type = old.type
            graph.replace_all_uses_with(old, new)
        remove_dead(graph, match.nodes)
        return builder.created


def can_forward(old: Value, new: Value) -> bool:
    """Whether `new` can stand in for `old` without an Identity: true unless `old` is a graph
    output and `new` cannot take its name (a graph input, initializer or another output)."""
    if not old.is_graph_output():
        return True
    return new.producer is not None and new.graph is old.graph and not new.is_graph_output()


def _provenance(nodes: list[Node]) -> list[str]:
    names: list[str] = []
    for node in nodes:
        earlier = node.meta.get("fused_from")
        if earlier:
            names.extend(earlier)
        else:
            names.append(node.name or node.op_type)
    return list(dict.fromkeys(names))


def remove_dead(graph: Graph, candidates: list[Node]) -> None:
    """Remove the candidates whose outputs nobody reads, repeatedly (consumers before producers)."""
    pending = [n for n in candidates if n.graph is graph]
    progress = True
    while pending and progress:
        progress = False
        for node in list(pending):
            if all(not v.uses and not v.is_graph_output() for v in node.outputs):
                graph.remove_node(node)
                pending.remove(node)
                progress = True


def _call_with_bindings(function: Callable[..., Any], first: Any, match: Match) -> Any:
    bindings = match.bindings()
    parameters = _keyword_parameters(function)
    if parameters is None:
        return function(first, **bindings)
    accepted = {k: v for k, v in bindings.items() if k in parameters}
    return function(first, **accepted)


@functools.lru_cache(maxsize=None)
def _keyword_parameters(function: Callable[..., Any]) -> frozenset[str] | None:
    """The names `function` accepts, or None when it takes **kwargs (signatures are read once)."""
    parameters = inspect.signature(function).parameters
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        return None
    return frozenset(parameters)
