"""`--backend cpu|gpu|tpu`: lower the optimized graph to one pure JAX function and jit it once."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from compiler.backend_registry import BackendSpec, CompiledModel, register_backend
from compiler.ir import Graph
from compiler.pass_infra import PassContext

from .interpreter import LoweringOptions, build_function


class JaxCompiledModel(CompiledModel):
    """A jit-compiled model for one JAX platform; weights are passed as arguments."""

    backend_name = "cpu"

    def __init__(self, graph: Graph, report: Any, ctx: PassContext, platform: str):
        super().__init__(graph, report, ctx)
        self.backend_name = platform
        self.platform = platform
        options = LoweringOptions(precision=ctx.option("precision") or "fp32", platform=platform, extra=dict(ctx.options))
        self.function, self.params = build_function(graph, options)
        self._compiled = jax.jit(self.function)

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        arrays = self.bind_inputs(args, kwargs)
        outputs = self._compiled(self.params, *arrays)
        return [np.asarray(o) if not isinstance(o, list) else [np.asarray(x) for x in o] for o in outputs]


def _compile_for(platform: str):
    def compile_graph(graph: Graph, ctx: PassContext, report: Any) -> CompiledModel:
        return JaxCompiledModel(graph, report, ctx, platform)

    return compile_graph


for _platform in ("cpu", "gpu", "tpu"):
    register_backend(BackendSpec(_platform, _compile_for(_platform), None, pipeline_family="jax",
                                 description=f"JAX/XLA on {_platform}"))
