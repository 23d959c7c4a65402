"""SCALE-Sim v3 files for the simulated layers (topology CSVs, config, layout) so users can run
SCALE-Sim themselves, and a cross-check that runs the `scalesim` package on the same layers."""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from typing import Any, Iterable, Sequence

from .config import AsicConfig
from .layers import ArrayLayer, TopologyRow
from .systolic import MatrixProblem, compute_cycles

CONV_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"
GEMM_HEADER = "Layer, M, N, K,"
LAYOUT_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"


def _label(index: int, row: TopologyRow) -> str:
    """A CSV-safe layer name; SCALE-Sim expands any name containing 'DP' as depthwise, so only
    depthwise rows may contain it."""
    text = re.sub(r"[^A-Za-z0-9_.#-]+", "_", row.name).strip("_") or "layer"
    text = text.replace("DP", "Dp")
    return f"{'DP_' if row.depthwise else ''}L{index}_{text}"


def topology_rows(layers: Sequence[ArrayLayer]) -> tuple[list[tuple[str, TopologyRow]], list[tuple[str, TopologyRow]]]:
    """(conv rows, gemm rows) with their labels; batch images and batched GEMMs become one row each."""
    conv, gemm = [], []
    for index, layer in enumerate(layers):
        for row in layer.topology:
            label = _label(index, row)
            target = conv if row.kind == "conv" else gemm
            for copy in range(row.repeat):
                target.append((label + (f"#b{copy}" if row.repeat > 1 else ""), row))
    return conv, gemm


def topology_text(rows: Iterable[tuple[str, TopologyRow]], kind: str) -> str:
    lines = [CONV_HEADER if kind == "conv" else GEMM_HEADER]
    lines += [f"{label}, " + ", ".join(str(int(d)) for d in row.dims) + "," for label, row in rows]
    return "\n".join(lines) + "\n"


def config_text(config: AsicConfig, run_name: str = "kiln") -> str:
    """A SCALE-Sim v3 .cfg for the accelerator (CALC bandwidth mode: SCALE-Sim estimates the DRAM
    bandwidth the layers need; our own DRAM model uses --bandwidth)."""
    sram_kb = max(1, int(round(config.sram_kb)))
    return f"""[general]
run_name = {run_name}

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {config.rows}
ArrayWidth = {config.cols}
ifmapsramszkB = {sram_kb}
filtersramszkB = {sram_kb}
ofmapsramszkB = {sram_kb}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {config.dataflow}
Bandwidth = {max(1, int(config.dram_bytes_per_cycle))}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40
"""


def write_scalesim_files(folder: str, layers: Sequence[ArrayLayer], config: AsicConfig) -> list[str]:
    """Write scalesim/{scale.cfg, topology_conv.csv, topology_gemm.csv, layout.csv, README.txt}."""
    from compiler.onnx_io import write_bytes_atomic

    target = os.path.join(folder, "scalesim")
    os.makedirs(target, exist_ok=True)
    conv, gemm = topology_rows(layers)
    files = {
        "scale.cfg": config_text(config),
        "topology_conv.csv": topology_text(conv, "conv"),
        "topology_gemm.csv": topology_text(gemm, "gemm"),
        "layout.csv": LAYOUT_HEADER + "\n",
        "README.txt": (
            "SCALE-Sim v3 inputs for the array layers of this model (pip install scalesim):\n"
            "  python -m scalesim.scale -c scale.cfg -t topology_conv.csv -l layout.csv -p out -i conv\n"
            "  python -m scalesim.scale -c scale.cfg -t topology_gemm.csv -l layout.csv -p out -i gemm\n"
            "Conv rows use the padded ifmap size; batch images and batched MatMuls are one row each;\n"
            "DP_* rows are depthwise (SCALE-Sim runs one layer per channel). Per-layer 'Total Cycles'\n"
            "in COMPUTE_REPORT.csv is what report.json's asic compute_cycles reproduces.\n"
        ),
    }
    written = []
    for name, text in files.items():
        path = os.path.join(target, name)
        write_bytes_atomic(path, text.encode())
        written.append(path)
    return written


def expected_cycles(row: TopologyRow, config: AsicConfig) -> int:
    """Our compute cycles for one topology row as SCALE-Sim will count them."""
    if row.kind == "gemm":
        m, n, k = row.dims
        return compute_cycles(MatrixProblem(m, k, n), config.rows, config.cols, config.dataflow)
    height, width, fh, fw, channels, filters, stride = row.dims
    pixels = ((height - fh) // stride + 1) * ((width - fw) // stride + 1)
    if row.depthwise:
        return channels * compute_cycles(MatrixProblem(pixels, fh * fw, filters), config.rows, config.cols, config.dataflow)
    return compute_cycles(MatrixProblem(pixels, fh * fw * channels, filters), config.rows, config.cols, config.dataflow)


def scalesim_available() -> bool:
    try:
        import scalesim  # noqa: F401
    except ImportError:
        return False
    return True


def run_scalesim(config: AsicConfig, rows: Sequence[tuple[str, TopologyRow]], kind: str) -> list[int]:
    """Per-row compute cycles from the `scalesim` package (DP rows summed over their channels).
    Uses the full simulator; where its memory model fails (scalesim 3.0.0 converts 1-element
    arrays with int(), an error under NumPy >= 2.4) it falls back to SCALE-Sim's own compute
    model (operand matrices -> systolic_compute_<df> demand matrices), whose trace length is the
    same "Total Cycles" the simulator reports when no stalls occur."""
    with tempfile.TemporaryDirectory(prefix="kiln-scalesim-") as folder:
        cfg, topo, layout = (os.path.join(folder, n) for n in ("scale.cfg", "topology.csv", "layout.csv"))
        for path, text in ((cfg, config_text(config)), (topo, topology_text(rows, kind)), (layout, LAYOUT_HEADER + "\n")):
            with open(path, "w") as handle:
                handle.write(text)
        try:
            per_layer = _full_simulation(cfg, topo, layout, kind, folder)
        except TypeError:
            per_layer = _compute_model(cfg, topo, layout, kind)
    return _group_depthwise(per_layer, rows)


def _full_simulation(cfg: str, topo: str, layout: str, kind: str, folder: str) -> list[tuple[str, int]]:
    from scalesim.scale_sim import scalesim

    sim = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=layout,
                   input_type_gemm=(kind == "gemm"))
    with contextlib.redirect_stdout(io.StringIO()):
        sim.run_scale(top_path=os.path.join(folder, "out"))
    results = []
    for layer in sim.runner.single_layer_sim_object_list:
        layer.calc_report_data()
        name = sim.topo.get_layer_name(layer.layer_id)
        results.append((name, int(layer.total_cycles) - int(layer.stall_cycles)))
    return results


def _compute_model(cfg: str, topo: str, layout: str, kind: str) -> list[tuple[str, int]]:
    from scalesim.compute.operand_matrix import operand_matrix
    from scalesim.compute.systolic_compute_is import systolic_compute_is
    from scalesim.compute.systolic_compute_os import systolic_compute_os
    from scalesim.compute.systolic_compute_ws import systolic_compute_ws
    from scalesim.layout_utils import layouts
    from scalesim.scale_config import scale_config
    from scalesim.topology_utils import topologies

    config = scale_config()
    config.read_conf_file(cfg)
    topology, layout_obj = topologies(), layouts()
    topology.load_arrays(topofile=topo, mnk_inputs=(kind == "gemm"))
    layout_obj.load_arrays(layoutfile=layout, mnk_inputs=(kind == "gemm"))
    systems = {"os": systolic_compute_os, "ws": systolic_compute_ws, "is": systolic_compute_is}
    results = []
    for layer_id in range(topology.get_num_layers()):
        operands = operand_matrix()
        operands.set_params(config_obj=config, topoutil_obj=topology, layoututil_obj=layout_obj, layer_id=layer_id)
        operands.create_operand_matrices()
        system = systems[config.get_dataflow()]()
        _, ifmap = operands.get_ifmap_matrix()
        _, filters = operands.get_filter_matrix()
        _, ofmap = operands.get_ofmap_matrix()
        system.set_params(config_obj=config, ifmap_op_mat=ifmap, filter_op_mat=filters, ofmap_op_mat=ofmap)
        demand, _, _ = system.get_demand_matrices()
        results.append((topology.get_layer_name(layer_id), int(demand.shape[0]) - 1))
    return results


def _group_depthwise(per_layer: list[tuple[str, int]], rows: Sequence[tuple[str, TopologyRow]]) -> list[int]:
    """SCALE-Sim splits a DP row into '<name>Channel_<i>' layers; sum them back per row."""
    totals: dict[str, int] = {}
    for name, cycles in per_layer:
        key = name.split("Channel_")[0] if "Channel_" in name else name
        totals[key] = totals.get(key, 0) + cycles
    return [totals[label] for label, _ in rows]


def cross_check(layers: Sequence[ArrayLayer], config: AsicConfig) -> list[dict[str, Any]]:
    """Per topology row: our cycles, SCALE-Sim's, and the relative difference."""
    conv, gemm = topology_rows(layers)
    report = []
    for kind, rows in (("conv", conv), ("gemm", gemm)):
        if not rows:
            continue
        theirs = run_scalesim(config, rows, kind)
        for (label, row), cycles in zip(rows, theirs):
            ours = expected_cycles(row, config)
            report.append({"layer": label, "node": row.name, "kind": kind, "ours": ours, "scalesim": cycles,
                           "rel_diff": abs(ours - cycles) / max(1, cycles)})
    return report
