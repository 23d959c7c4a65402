"""The Python API: load, compile and optimize (the CLI is a thin layer over these)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import onnx

from .backend_registry import CompiledModel, get_backend
from .errors import OptionError
from .instruments import (
    DumpInstrument,
    NumericCheckInstrument,
    PassInstrument,
    ProgressInstrument,
    SnapshotInstrument,
    VerifyInstrument,
)
from .ir import Graph
from .onnx_io import load_graph
from .pass_infra import PassContext
from .pass_manager import PassManager
from .pipeline import Pipeline, build_pipeline
from .report import Report, graph_stats

ModelSource = "str | os.PathLike | onnx.ModelProto | Graph"
PRECISIONS = ("fp32", "bf16", "fp16")


def load(source: ModelSource) -> Graph:
    """A path or onnx.ModelProto -> IR graph, types inferred, external data mapped lazily."""
    if isinstance(source, Graph):
        return source
    return load_graph(source)


def _verify_by_default() -> bool:
    return os.environ.get("KILN_VERIFY", "") not in ("", "0")


def run_pipeline(
    graph: Graph,
    *,
    opt_level: int = 2,
    backend: str = "onnx",
    passes: str | None = None,
    disable: list[str] | tuple[str, ...] = (),
    options: dict[str, Any] | None = None,
    extra_steps: list[str] | None = None,
    check_each_pass: bool = False,
    verify_each_pass: bool | None = None,
    keep_snapshots: bool = False,
    dump_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
    model_name: str = "model",
) -> tuple[Graph, Report, PassContext]:
    """Run the pipeline for (opt_level, backend), edited by passes/disable, over `graph` in place."""
    pipeline, log = build_pipeline(opt_level, backend, passes, disable)
    if extra_steps:
        pipeline = Pipeline(pipeline.steps + Pipeline.parse(",".join(extra_steps)).steps)
    ctx = PassContext(
        opt_level=opt_level,
        backend=backend,
        options=dict(options or {}),
        verify_each_pass=_verify_by_default() if verify_each_pass is None else verify_each_pass,
        check_each_pass=check_each_pass,
        keep_snapshots=keep_snapshots,
        progress=progress,
        disabled_rules=set((options or {}).get("disabled_rules", ())),
        debug_rewrites=bool((options or {}).get("debug_rewrites", False)),
    )
    ctx.log.extend(log)
    instruments: list[PassInstrument] = [ProgressInstrument()]
    if ctx.verify_each_pass:
        instruments.append(VerifyInstrument())
    if check_each_pass:
        instruments.append(NumericCheckInstrument(ctx.option("check_inputs")))
    snapshots = None
    if keep_snapshots:
        snapshots = SnapshotInstrument()
        instruments.append(snapshots)
    if dump_dir:
        instruments.append(DumpInstrument(dump_dir))
    report = Report(model=model_name, backend=backend, opt_level=opt_level, pipeline=str(pipeline), before=graph_stats(graph))
    start = time.perf_counter()
    graph, records = PassManager(pipeline, ctx, instruments).run(graph)
    report.total_seconds = time.perf_counter() - start
    report.passes = records
    report.after = graph_stats(graph)
    report.log = ctx.log
    if snapshots is not None:
        report.sections["snapshots"] = snapshots.snapshots
    for key, value in ctx.artifacts.items():
        if key.startswith("report:"):
            report.sections[key[len("report:"):]] = value
    return graph, report, ctx


def _model_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source))
    if isinstance(source, Graph):
        return source.name or "graph"
    return getattr(getattr(source, "graph", None), "name", None) or "model"


def compile(
    model: ModelSource,
    backend: str = "cpu",
    opt_level: int = 2,
    quantize: str | None = None,
    prune: float | None = None,
    calibration: Any = None,
    precision: str = "fp32",
    *,
    passes: str | None = None,
    disable: list[str] | tuple[str, ...] = (),
    check_each_pass: bool = False,
    keep_snapshots: bool = False,
    progress: Callable[[str], None] | None = None,
    dump_dir: str | None = None,
    **options: Any,
) -> CompiledModel:
    """Import, optimize and lower a model for `backend`; returns a callable CompiledModel whose
    `.report` lists every pass and whose `.save(folder)` writes the artifacts."""
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if quantize not in (None, "int8", "int4"):
        raise OptionError(f"--quantize must be int8 or int4, not {quantize!r}")
    if prune is not None and not 0.0 < float(prune) < 1.0:
        raise OptionError(f"--prune takes a ratio between 0 and 1 (exclusive), not {prune}")
    if quantize == "int8" and calibration is None and not options.get("weight_only"):
        raise OptionError("--quantize int8 quantizes activations and needs calibration data",
                          "pass --calibration DATA (an .npz, a folder of .npy/.npz, or module:function), "
                          "or use --quantize int4 for weight-only quantization")
    if options.get("recover") and calibration is None:
        raise OptionError("--recover distill fine-tunes on calibration data", "pass --calibration DATA")
    spec = get_backend(backend)
    graph = load(model)
    if isinstance(model, Graph):
        graph = graph.copy()
    options = dict(options)
    for key, value in spec.options.items():  # backend defaults (e.g. tensorrt's quantize_profile)
        if options.get(key) is None:
            options[key] = value
    options.update(quantize=quantize, prune=prune, calibration=calibration, precision=precision)
    extra = compression_steps(options)
    graph, report, ctx = run_pipeline(
        graph,
        opt_level=opt_level,
        backend=spec.pipeline_family or backend,
        passes=passes,
        disable=disable,
        options=options,
        extra_steps=extra,
        check_each_pass=check_each_pass,
        keep_snapshots=keep_snapshots,
        progress=progress,
        dump_dir=dump_dir,
        model_name=_model_name(model),
    )
    report.backend = backend
    return spec.compile(graph, ctx, report)


def compression_steps(options: dict[str, Any]) -> list[str]:
    """Passes that compression options add after the optimization pipeline."""
    steps: list[str] = []
    if options.get("prune"):
        steps.append("prune")
    if options.get("quantize"):
        steps.append("quantize")
    if options.get("recover"):
        steps.append("recover")
    if options.get("quantize") == "int8":
        steps.append("int8_kernels")  # int8 x int8 -> int32 ops where the backend has them (JAX)
    return steps


def optimize(model: onnx.ModelProto, opt_level: int = 2, **options: Any) -> onnx.ModelProto:
    """ModelProto -> optimized ModelProto with the same interface, like onnxsim's simplify."""
    if not isinstance(model, onnx.ModelProto):
        raise OptionError(f"optimize takes an onnx.ModelProto, got {type(model).__name__}")
    from .onnx_io import export_model

    graph = load(model)
    passes = options.pop("passes", None)
    disable = options.pop("disable", ())
    graph, _report, ctx = run_pipeline(graph, opt_level=opt_level, backend="onnx", passes=passes, disable=disable, options=options)
    return export_model(graph, decompose_custom=not ctx.option("keep_custom_ops", False))
