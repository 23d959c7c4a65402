"""`--backend cpu|gpu|tpu`: lower the optimized graph to one pure JAX function `f(params, *inputs)`,
jit it once for the platform (weights as arguments, resident on the device), and save it as a
jax.export artifact that reloads on that platform in a fresh process."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import jax
import numpy as np

from compiler.backend_registry import BackendSpec, CompiledModel, register_backend
from compiler.errors import ModelLoadError, UnsupportedError
from compiler.ir import Graph
from compiler.pass_infra import PassContext, switched_off

from .allocator import keep_freed_buffers_mapped
from .artifacts import read_exported, read_params, write_artifacts
from .cache import enable_persistent_cache
from .export import (EXPORT_PLATFORMS, RUNTIME_PLATFORMS, check_bounds, export_function, local_platform, parse_static_shapes,
                     platform_present)
from .interpreter import LoweringOptions, build_function
from .low_precision_weights import CAST_SUFFIX
from .native import unavailable_reason
from .precision import with_matmul_precision
from .runtime import JitRunner, run_cpu_programs_inline
from .sharding import make_placement

enable_persistent_cache()
run_cpu_programs_inline()
keep_freed_buffers_mapped()


class JaxCompiledModel(CompiledModel):
    """A model lowered for one JAX platform. Callable where the platform exists; `save` writes the
    jax.export artifact, StableHLO text and weights for it from any machine."""

    backend_name = "cpu"

    def __init__(self, graph: Graph, report: Any, ctx: PassContext, platform: str):
        super().__init__(graph, report, ctx)
        enable_persistent_cache()
        self.backend_name = platform
        self.platform = platform
        self.precision = ctx.option("precision") or "fp32"
        self._options = LoweringOptions(precision=self.precision, platform=platform, extra=dict(ctx.options),
                                        conv_weight_layout=True)
        self._xla_form: tuple[Any, dict[str, Any], dict[str, Any]] | None = None  # built on first need
        self.static_shapes = parse_static_shapes(ctx.option("static_shapes"))
        self.present = platform_present(platform)
        self._exported: jax.export.Exported | None = None
        self._symbols: dict[str, str] = {}
        self._bounds: list[str] = []  # bounds on symbolic dims the graph implies (export.py)
        self._artifact_entries: dict[str, Any] = {}
        self.runner: JitRunner | None = None
        self.native_products: int | None = None  # weight products on the native kernels (None: not in use)
        self.native_convolutions: int | None = None  # convolutions on the native kernel (None: not in use)
        self._native_missing: str | None = None  # why the native kernels are not used, where they would be
        if self.present:
            placement = make_placement(platform, ctx.option("devices"), ctx.option("model_parallel"),
                                       ctx.option("model_parallel_min_elements"))
            native = None
            if _wants_native_kernels(platform, self.precision, placement, ctx):
                self._native_missing = unavailable_reason()
                if self._native_missing is None:
                    native, params = build_function(graph, replace(self._options, native_kernels=True))
                    function = with_matmul_precision(native, self.precision)
                    self.native_products = len(native.panel_weights)
                    self.native_convolutions = len(native.conv_kernels)
            if native is None:
                function, params = self.function, self.params
            self.runner = JitRunner(function, params, placement, graph)

    def _lowered_for_xla(self) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """The lowering with XLA's ops only (what export and artifacts hold), built once when first
        needed: a runner on the native kernels never needs it, so compile() skips its second copy of
        the weights."""
        if self._xla_form is None:
            function, params = build_function(self.graph, self._options)
            self._xla_form = (with_matmul_precision(function, self.precision), params, dict(function.param_layouts))
        return self._xla_form

    @property
    def function(self) -> Any:
        """f(params, *inputs) with XLA's ops only."""
        return self._lowered_for_xla()[0]

    @property
    def params(self) -> dict[str, Any]:
        """The weights `function` takes, in the layouts it reads them in."""
        return self._lowered_for_xla()[1]

    @property
    def param_layouts(self) -> dict[str, Any]:
        """name -> permutation from the ONNX order, for weights `params` stores transposed."""
        return self._lowered_for_xla()[2]

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        arrays = self.bind_inputs(args, kwargs)
        return self._require_runner()(arrays)

    def _require_runner(self) -> JitRunner:
        if self.runner is None:
            raise UnsupportedError(f"model was compiled for {self.platform}; this machine has {local_platform()}",
                                   "save it (kiln compile -o OUT) and run the artifact where that platform exists")
        return self.runner

    def export(self) -> jax.export.Exported:
        """The jax.export of the model for its platform (symbolic input dims kept), made once."""
        if self._exported is None:
            self._exported, self._symbols, self._bounds = export_function(self.function, self.params, self.graph, self.platform,
                                                            self.static_shapes)
        return self._exported

    def save_artifacts(self, folder: str) -> None:
        exported = self.export()
        self._artifact_entries = write_artifacts(folder, exported, self.params)
        if self.runner is not None:
            _warm_cache(exported, self.params, self.graph, self.runner.placement)

    def manifest(self) -> dict[str, Any]:
        entries = {
            "platform": self.platform,
            "precision": self.precision,
            "devices": self.runner.placement.device_count if self.runner else int(self.ctx.option("devices") or 1),
            "model_parallel": int(self.ctx.option("model_parallel") or 1),
            "symbolic_dims": dict(self._symbols),
            "symbolic_bounds": list(self._bounds),
            # weights, each once (a copy cast for the products beside its float32 original is not another)
            "param_count": int(sum(np.size(a) for name, a in self.params.items() if not name.endswith(CAST_SUFFIX))),
            "param_bytes": int(sum(np.asarray(a).nbytes for a in self.params.values())),
            # weights stored transposed for XLA's kernels: name -> permutation from the ONNX order
            "param_layouts": {name: list(perm) for name, perm in sorted(self.param_layouts.items())},
        }
        entries.update(self._artifact_entries)
        return {"jax": entries}

    def describe(self) -> str:
        """One line for `kiln compile`: what was lowered, for what, and where it runs."""
        params = self.runner.host_params if self.runner else self.params
        megabytes = sum(np.asarray(a).nbytes for a in params.values()) / 1e6
        where = self.runner.placement.describe() if self.runner else f"not runnable here ({local_platform()} machine)"
        symbols = ", ".join(self._symbols) or "none"
        return (f"jax {self.platform}: {len(params)} weights ({megabytes:.1f} MB) passed as arguments, "
                f"precision {self.precision}, {where}{self._native_note()}; symbolic dims: {symbols}")

    def _native_note(self) -> str:
        if self.native_products is not None:
            return (f", native CPU kernels ({self.native_products} weight products in panels, "
                    f"{self.native_convolutions} convolution kernels packed; attention, layer norm, pools and row ops where "
                    "their shapes allow; the artifact keeps XLA's ops)")
        if self._native_missing:
            return f", XLA's ops throughout (native CPU kernels unavailable: {self._native_missing})"
        return ""


def _wants_native_kernels(platform: str, precision: str, placement: Any, ctx: PassContext) -> bool:
    """The in-process CPU runner runs fp32 products and attention on the native kernels (native/)
    unless turned off (native_kernels=False, KILN_NATIVE=0) or the batch is sharded over devices."""
    if switched_off(ctx.option("native_kernels")):
        return False
    return platform == "cpu" and precision == "fp32" and placement.device_count == 1 and int(ctx.option("model_parallel") or 1) == 1


def _warm_cache(exported: jax.export.Exported, params: dict[str, Any], graph: Graph, placement: Any) -> None:
    """With fully static input shapes, compile the exported module now, jitted and placed as
    JaxArtifactModel runs it, so `kiln run` in a later process finds it in the persistent cache."""
    if any(not isinstance(d, int) for aval in exported.in_avals for d in aval.shape):
        return
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exported.in_avals[len(params):]]
    JitRunner(exported.call, params, placement, graph).lower_abstract(specs).compile()


class JaxArtifactModel(CompiledModel):
    """A saved JAX artifact (model.jax_export + params.npz) reloaded for the platform it names."""

    def __init__(self, folder: str, report: dict):
        from compiler.onnx_io import load_graph
        from compiler.report import Report

        manifest = report.get("artifacts") or {}
        entries = manifest.get("jax")
        if not entries:
            raise ModelLoadError(f"{folder} holds no JAX artifact (report.json names none)", "recompile with kiln compile --backend cpu|gpu|tpu")
        if entries.get("x64") and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
        enable_persistent_cache()
        exported = read_exported(folder, entries)
        graph = load_graph(os.path.join(folder, "model.onnx"))
        summary = Report(model=report.get("model", "model"), backend=manifest.get("backend", "cpu"),
                         opt_level=report.get("opt_level", 0), pipeline=report.get("pipeline", ""),
                         before=report.get("before", {}), after=report.get("after", {}))
        summary.artifacts = manifest
        ctx = PassContext(backend=summary.backend, options={"precision": entries.get("precision", "fp32")})
        super().__init__(graph, summary, ctx)
        self.backend_name = summary.backend
        self.exported = exported
        runtime = next(RUNTIME_PLATFORMS[p] for p in exported.platforms if platform_present(p))
        devices = min(int(entries.get("devices", 1)), len(jax.devices(runtime)))
        model_parallel = int(entries.get("model_parallel", 1))
        if devices % model_parallel:
            model_parallel = 1
        placement = make_placement(runtime, devices, model_parallel)
        self.runner = JitRunner(exported.call, read_params(folder, entries), placement, graph)
        self.bounds = list(entries.get("symbolic_bounds", ()))

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        arrays = self.bind_inputs(args, kwargs)
        check_bounds(self.exported, arrays, self.bounds)
        return self.runner(arrays)


def _compile_for(platform: str):
    def compile_graph(graph: Graph, ctx: PassContext, report: Any) -> CompiledModel:
        return JaxCompiledModel(graph, report, ctx, platform)

    return compile_graph


def _load(folder: str, report: dict) -> CompiledModel:
    return JaxArtifactModel(folder, report)


for _platform in EXPORT_PLATFORMS:
    register_backend(BackendSpec(_platform, _compile_for(_platform), _load, pipeline_family="jax",
                                 description=f"JAX/XLA on {_platform}"))
