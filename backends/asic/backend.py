"""`--backend asic`: simulate the optimized graph on a systolic-array accelerator (report section
"asic"), write the standard ONNX plus SCALE-Sim topology/config files, and run the model with
onnxruntime when called (the simulator is a cost model, not an executor)."""

from __future__ import annotations

import os
from typing import Any

from compiler.backend_registry import BackendSpec, CompiledModel, register_backend
from compiler.ir import Graph
from compiler.onnx_io import load_graph
from compiler.pass_infra import PassContext

from backends.onnx.backend import OnnxCompiledModel
from backends.tensorrt.shapes import parse_shapes, symbols_from_shapes

from .config import AsicConfig, config_from_options
from .scalesim_io import write_scalesim_files
from .simulate import simulate


class AsicCompiledModel(OnnxCompiledModel):
    backend_name = "asic"

    def __init__(self, graph: Graph, report: Any, ctx: PassContext, config: AsicConfig, array_layers: list):
        super().__init__(graph, report, ctx)
        self.config = config
        self.array_layers = array_layers

    @property
    def simulation(self) -> dict[str, Any]:
        return self.report.sections["asic"]

    def save_artifacts(self, folder: str) -> None:
        write_scalesim_files(folder, self.array_layers, self.config)

    def manifest(self) -> dict[str, Any]:
        return {"scalesim": ["scalesim/scale.cfg", "scalesim/topology_conv.csv", "scalesim/topology_gemm.csv"],
                "asic": {"array": f"{self.config.rows}x{self.config.cols}", "dataflow": self.config.dataflow,
                         "sram_kb": self.config.sram_kb, "bandwidth_gbps": self.config.bandwidth_gbps,
                         "freq_mhz": self.config.freq_mhz}}

    def describe(self) -> str:
        total = self.simulation["total"]
        c = self.config
        return (f"asic {c.rows}x{c.cols} {c.dataflow}: {total['cycles']:,} cycles ({total['array_cycles']:,} array, "
                f"{total['vector_cycles']:,} vector, {total['stall_cycles']:,} stall), utilization "
                f"{total['utilization'] * 100:.1f}%, {total['latency_us']:.1f} us at {c.freq_mhz:g} MHz, "
                f"SRAM {total['sram_read_bytes'] + total['sram_write_bytes']:,} B, DRAM {total['dram_bytes']:,} B, "
                f"{total['energy_uj']:.2f} uJ")


def _compile(graph: Graph, ctx: PassContext, report: Any) -> CompiledModel:
    config = config_from_options(ctx.options)
    symbols = symbols_from_shapes(graph, parse_shapes(ctx.option("static_shapes")))
    unbound = sorted({d for v in graph.inputs for d in (v.shape or ()) if isinstance(d, str) and d not in symbols})
    if unbound:
        symbols.update({name: 1 for name in unbound})
        ctx.note(f"asic: symbolic dims {', '.join(unbound)} simulated as 1 (give --shapes NAME=DIMS for other sizes)")
    section, array_layers = simulate(graph, config, symbols)
    ctx.artifacts["report:asic"] = section
    report.sections["asic"] = section
    return AsicCompiledModel(graph, report, ctx, config, array_layers)


def _load(folder: str, report: dict) -> CompiledModel:
    from compiler.report import Report

    graph = load_graph(os.path.join(folder, "model.onnx"))
    options = dict(report.get("artifacts", {}).get("asic", {}))
    ctx = PassContext(backend="asic")
    summary = Report(model=report.get("model", "model"), backend="asic", opt_level=report.get("opt_level", 0),
                     pipeline=report.get("pipeline", ""), before=report.get("before", {}), after=report.get("after", {}))
    summary.sections.update(report.get("sections", {}))
    config = config_from_options({"array": options.get("array"), "dataflow": options.get("dataflow"),
                                  "sram": options.get("sram_kb"), "bandwidth": options.get("bandwidth_gbps"),
                                  "freq": options.get("freq_mhz")})
    return AsicCompiledModel(graph, summary, ctx, config, [])


register_backend(BackendSpec("asic", _compile, _load, pipeline_family="onnx",
                             description="systolic-array simulator (SCALE-Sim compute model), standard ONNX out"))
