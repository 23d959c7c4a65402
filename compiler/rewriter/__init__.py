"""Declarative rewrites: patterns written in the op vocabulary, checked, replaced by one driver.

    def pattern(op, x):            return op.Identity(x)
    def replacement(op, x):        return x
    rule = Rule("remove_identity", pattern, replacement)
    apply_rules(graph, [rule])
"""

from ._driver import MatchTracer, RewriteDidNotConverge, apply_rules
from ._match import Match, MatchFailure, fail
from ._pattern import AnyOf, AttrVar, PatternBuilder, trace_pattern
from ._rule import RewriteContext, Rule, can_forward, remove_dead

__all__ = [
    "AnyOf", "AttrVar", "Match", "MatchFailure", "MatchTracer", "PatternBuilder", "RewriteContext",
    "RewriteDidNotConverge", "Rule", "apply_rules", "can_forward", "fail", "remove_dead", "trace_pattern",
]
