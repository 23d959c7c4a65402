"""The one rewrite driver: applies rule sets to a fixed point under an iteration cap (not
converging is an error), with rules disabled by name and an optional match tracer."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import KilnError
from ..ir import Graph, Node
from ._match import MatchFailure
from ._rule import Rule


class RewriteDidNotConverge(KilnError):
    """Rules kept firing past the iteration cap (usually two rules undoing each other)."""


@dataclass
class MatchTracer:
    """Debug mode: for each (rule, node) that was tried, the best partial match and why it failed."""

    failures: dict[tuple[str, str], MatchFailure] = field(default_factory=dict)
    applied: list[tuple[str, str]] = field(default_factory=list)

    def record(self, rule: Rule, node: Node, result: Any) -> None:
        key = (rule.name, node.name or node.op_type)
        if isinstance(result, MatchFailure):
            self.failures[key] = result
        else:
            self.applied.append(key)
            self.failures.pop(key, None)

    def explain(self, rule_name: str, node_name: str) -> str:
        """Why `rule_name` did not rewrite at node `node_name` (or that it did)."""
        if (rule_name, node_name) in self.applied:
            return f"rule {rule_name!r} applied at {node_name!r}"
        failure = self.failures.get((rule_name, node_name))
        if failure is None:
            return f"rule {rule_name!r} was never tried at {node_name!r} (its root op differs or the node was gone)"
        where = ", ".join(f"{n.op_type} {n.name!r}" for n in failure.nodes)
        return f"rule {rule_name!r} did not match at {node_name!r}: {failure.reason}" + (f" [at {where}]" if where else "")


def apply_rules(
    graph: Graph,
    rules: Iterable[Rule],
    *,
    max_iterations: int = 32,
    disabled: Iterable[str] = (),
    tracer: MatchTracer | None = None,
    options: dict[str, Any] | None = None,
    recurse: bool = True,
) -> Counter:
    """Rewrite `graph` (and its subgraphs) until no rule applies; returns applications per rule."""
    off = set(disabled)
    by_root: dict[tuple[str, str], list[Rule]] = defaultdict(list)
    for rule in rules:
        if rule.name not in off:
            by_root[rule.root_key].append(rule)
    counts: Counter = Counter()
    graphs = graph.self_and_subgraphs() if recurse else [graph]
    for target in graphs:
        _rewrite_to_fixed_point(target, by_root, max_iterations, tracer, options or {}, counts)
    return counts


def _rules_that_can_match(graph: Graph, by_root: dict) -> dict:
    """The rules whose every pattern op occurs in `graph` (recomputed each sweep, so ops that an
    earlier sweep created count); a tracer sees all rules, so that explanations stay complete."""
    present = {(node.domain, node.op_type) for node in graph.nodes}
    kept: dict = {}
    for key, rules in by_root.items():
        if key in present:
            usable = [rule for rule in rules if rule.required_ops <= present]
            if usable:
                kept[key] = usable
    return kept


def _rewrite_to_fixed_point(graph, by_root, max_iterations, tracer, options, counts) -> None:
    for iteration in range(max_iterations):
        fired: Counter = Counter()
        budget = 4 * len(graph.nodes) + 64  # rewrites per sweep; more means rules feed each other
        candidates = by_root if tracer is not None else _rules_that_can_match(graph, by_root)
        if not candidates:
            return
        for node in graph.nodes:
            if node.graph is not graph:
                continue
            if sum(fired.values()) > budget:
                break
            for rule in candidates.get((node.domain, node.op_type), ()):
                result = rule.try_match(node, options)
                if tracer is not None:
                    tracer.record(rule, node, result)
                if isinstance(result, MatchFailure):
                    continue
                rule.apply(result)
                fired[rule.name] += 1
                break
        if not fired:
            return
        counts.update(fired)
    still = ", ".join(sorted(fired))
    raise RewriteDidNotConverge(
        f"rewrite rules did not reach a fixed point in {max_iterations} iterations on graph {graph.name!r}; "
        f"still firing: {still}",
        "disable one of them with --disable-rule NAME",
    )
