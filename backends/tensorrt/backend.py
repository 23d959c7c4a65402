"""`--backend tensorrt`: standard ONNX restricted to what TensorRT 10's ONNX parser accepts (checked
against support_table.json; blocking nodes reported), Q/DQ placed by the quantization pass's
`tensorrt` profile, static shapes (--shapes) or an optimization profile, and an engine built, timed
and compared with the JAX backend where `tensorrt` and an NVIDIA GPU exist."""

from __future__ import annotations

import copy
import os
from typing import Any

from compiler.backend_registry import BackendSpec, CompiledModel, register_backend
from compiler.ir import Graph, Shape
from compiler.onnx_io import import_model, load_graph, write_bytes_atomic
from compiler.pass_infra import PassContext

from backends.onnx.backend import OnnxCompiledModel

from .engine import engine_section, engine_unavailable
from .opset import fit_opset
from .shapes import optimization_profile, parse_shape_ranges, symbols_from_shapes
from .support import check_graph


class TensorRTCompiledModel(OnnxCompiledModel):
    backend_name = "tensorrt"

    def __init__(self, graph: Graph, report: Any, ctx: PassContext):
        super().__init__(graph, report, ctx)
        self.engine: bytes | None = None

    @property
    def section(self) -> dict[str, Any]:
        return self.report.sections["tensorrt"]

    def save_artifacts(self, folder: str) -> None:
        if self.engine is not None:
            write_bytes_atomic(os.path.join(folder, "model.engine"), self.engine)

    def manifest(self) -> dict[str, Any]:
        return {"engine": "model.engine" if self.engine is not None else None}

    def describe(self) -> str:
        section = self.section
        lines = [f"tensorrt: {'all' if section['supported'] else 'NOT all'} nodes accepted by the {section['table']} ONNX parser"
                 f" (opset {section['opset']}); shapes: {'static' if section['shapes']['static'] else 'optimization profile'}"]
        lines += [f"  blocking: {b['node']} ({b['op']}): {b['reason']}" for b in section["blocking"][:20]]
        if len(section["blocking"]) > 20:
            lines.append(f"  ... and {len(section['blocking']) - 20} more (see report.json)")
        return "\n".join(lines)


def apply_static_shapes(graph: Graph, symbols: dict[str, int]) -> int:
    """Replace the bound symbolic dims by their sizes on every value; returns values changed."""
    changed = 0
    values = list(graph.inputs) + [v for node in graph.all_nodes() for v in node.outputs] + list(graph.outputs)
    for value in values:
        shape = value.shape
        if shape is None or not any(isinstance(d, str) and d in symbols for d in shape):
            continue
        value.shape = Shape([symbols.get(d, d) if isinstance(d, str) else d for d in shape])
        changed += 1
    return changed


def quantization_summary(graph: Graph, ctx: PassContext) -> dict[str, Any] | None:
    """How the quantization pass placed Q/DQ (None when the model is not quantized)."""
    quantize = sum(1 for n in graph.all_nodes() if n.op_type == "QuantizeLinear")
    dequantize = sum(1 for n in graph.all_nodes() if n.op_type == "DequantizeLinear")
    if not (quantize or dequantize or ctx.option("quantize")):
        return None
    return {"mode": ctx.option("quantize"), "profile": ctx.option("quantize_profile"),
            "quantize_linear": quantize, "dequantize_linear": dequantize}


def _compile(graph: Graph, ctx: PassContext, report: Any) -> CompiledModel:
    graph, conversion = fit_opset(graph, ctx)
    ranges = parse_shape_ranges(ctx.option("static_shapes"))
    profile = optimization_profile(graph, ranges)
    static = {name: r["opt"] for name, r in ranges.items() if r["min"] == r["max"]}
    if static:
        apply_static_shapes(graph, symbols_from_shapes(graph, static))
    compiled = TensorRTCompiledModel(graph, report, ctx)
    section = check_graph(import_model(compiled.model))
    section["opset_conversion"] = conversion
    section["shapes"] = profile
    section["quantization"] = quantization_summary(graph, ctx)
    section["engine"] = None
    reason = engine_unavailable()
    if reason is None and not section["supported"]:
        reason = "the model has nodes TensorRT cannot parse"
    if reason is None:
        try:
            section["engine"], compiled.engine = _build(compiled, profile, ctx)
        except Exception as error:  # TensorRT or CUDA runtime failure: report it, keep the ONNX
            section["engine"] = {"built": False, "errors": [f"{type(error).__name__}: {' '.join(str(error).split())}"]}
        engine = section["engine"]
        status = (f"engine built in {engine['build_seconds']:.1f} s, median latency {engine['latency_ms']:.3f} ms, "
                  f"max abs error vs JAX {engine['compare']['max_abs_error']:.3g}" if compiled.engine is not None
                  else f"engine build failed: {'; '.join(engine['errors'])[:300]}")
    else:
        status = f"no engine built: {reason}; the ONNX for TensorRT is written"
    section["engine_status"] = status
    ctx.note(f"tensorrt: {status}")
    ctx.artifacts["report:tensorrt"] = section
    report.sections["tensorrt"] = section
    return compiled


def _build(compiled: TensorRTCompiledModel, profile: dict[str, Any], ctx: PassContext):
    """Engine build + timing + comparison with the JAX gpu backend on inputs at the opt shapes."""
    from compiler.backend_registry import get_backend
    from compiler.reference import random_inputs

    sizes: dict[str, int] = {}
    for value in compiled.graph.inputs:
        dims = profile["inputs"].get(value.name, {}).get("opt")
        for declared, size in zip(value.shape or (), dims or ()):
            if isinstance(declared, str):
                sizes[declared] = size
    feeds = random_inputs(compiled.graph, dim_sizes=sizes)

    def reference():
        jax_model = get_backend("gpu").compile(compiled.graph.copy(), PassContext(backend="gpu"), copy.copy(compiled.report))
        return jax_model(**feeds)

    return engine_section(compiled.model.SerializeToString(), profile, feeds,
                          fp16=ctx.option("precision") == "fp16", int8=bool(ctx.option("quantize")), reference=reference)


def _load(folder: str, report: dict) -> CompiledModel:
    from compiler.report import Report

    graph = load_graph(os.path.join(folder, "model.onnx"))
    summary = Report(model=report.get("model", "model"), backend="tensorrt", opt_level=report.get("opt_level", 0),
                     pipeline=report.get("pipeline", ""), before=report.get("before", {}), after=report.get("after", {}))
    summary.sections.update(report.get("sections", {}))
    return TensorRTCompiledModel(graph, summary, PassContext(backend="tensorrt"))


register_backend(BackendSpec("tensorrt", _compile, _load, pipeline_family="tensorrt",
                             description="ONNX for TensorRT 10 (support-table checked, Q/DQ, profiles); engine where available",
                             options={"quantize_profile": "tensorrt"}))
