"""A pass made of rewrite rules: the common shape of every pattern-based pass."""

from __future__ import annotations

from typing import ClassVar, Sequence

from compiler.ir import Graph
from compiler.pass_infra import Pass, PassContext, PassResult
from compiler.rewriter import MatchTracer, Rule, apply_rules


class RewritePass(Pass):
    """Subclasses list their `rules`; the one driver applies them to a fixed point."""

    rules: ClassVar[Sequence[Rule]] = ()
    max_iterations: ClassVar[int] = 32

    def rules_for(self, graph: Graph, ctx: PassContext) -> Sequence[Rule]:
        return self.rules

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        tracer = None
        if ctx.debug_rewrites:
            tracer = ctx.artifacts.setdefault("match_tracer", MatchTracer())
        counts = apply_rules(
            graph,
            self.rules_for(graph, ctx),
            max_iterations=self.max_iterations,
            disabled=ctx.disabled_rules,
            tracer=tracer,
            options={"opt_level": ctx.opt_level, "backend": ctx.backend, **ctx.options},
        )
        return PassResult(graph, bool(counts), dict(counts))
