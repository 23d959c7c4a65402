"""`--backend onnx`: write the optimized graph as standard ONNX (checked by onnx.checker) and run
it with onnxruntime when called."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx

from compiler.backend_registry import BackendSpec, CompiledModel, register_backend
from compiler.errors import UnsupportedError
from compiler.ir import Graph
from compiler.onnx_io import export_model, load_graph
from compiler.pass_infra import PassContext


class OnnxCompiledModel(CompiledModel):
    backend_name = "onnx"

    def __init__(self, graph: Graph, report: Any, ctx: PassContext):
        super().__init__(graph, report, ctx)
        ctx.options.setdefault("decompose_custom", True)
        self.model = export_model(graph, decompose_custom=True)
        try:
            onnx.checker.check_model(self.model, full_check=False)
        except onnx.checker.ValidationError as error:
            raise UnsupportedError(f"the optimized model fails onnx.checker: {str(error).splitlines()[0]}") from None
        self._session = None

    def session(self):
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            self._session = ort.InferenceSession(self.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return self._session

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        arrays = self.bind_inputs(args, kwargs)
        return self.session().run(None, dict(zip(self.input_names, arrays)))


def _compile(graph: Graph, ctx: PassContext, report: Any) -> CompiledModel:
    return OnnxCompiledModel(graph, report, ctx)


def _load(folder: str, report: dict) -> CompiledModel:
    from compiler.report import Report

    graph = load_graph(os.path.join(folder, "model.onnx"))
    ctx = PassContext(backend="onnx")
    summary = Report(model=report.get("model", "model"), backend="onnx", opt_level=report.get("opt_level", 0),
                     pipeline=report.get("pipeline", ""), before=report.get("before", {}), after=report.get("after", {}))
    return OnnxCompiledModel(graph, summary, ctx)


register_backend(BackendSpec("onnx", _compile, _load, pipeline_family="onnx", description="standard ONNX, run by onnxruntime"))
