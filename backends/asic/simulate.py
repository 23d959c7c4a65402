"""Run the optimized graph on the modelled accelerator, layer by layer: array compute cycles
(SCALE-Sim's model), vector-unit cycles, SRAM and DRAM traffic, DRAM stalls, latency and energy;
the result is the report's "asic" section, keyed by node name for the visualizer's inspector."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from compiler.custom_ops import GRAPHKILN_DOMAIN
from compiler.ir import Graph, Node, Value

from .config import AsicConfig
from .layers import ArrayLayer, VectorLayer, layer_for
from .systolic import compute_cycles, mapping, refetch_factors, sram_accesses


@dataclass
class Traffic:
    sram_read: float = 0.0
    sram_write: float = 0.0
    dram: float = 0.0


def _off_chip(value: Value | None, size: int, config: AsicConfig) -> bool:
    """An activation lives in DRAM when it is a graph input/output or overflows its SRAM buffer."""
    if value is None:
        return False
    return value.is_graph_input() or value.is_graph_output() or size > config.sram_bytes


def array_costs(layer: ArrayLayer, node: Node, config: AsicConfig) -> dict[str, Any]:
    """Cycles, traffic and energy of one matrix layer."""
    compute, folds = 0, 0
    traffic = Traffic()
    plans = []
    passes = (1, 1, 1)
    ifmap_word, filter_word, ofmap_word = _word_sizes(layer)
    for problem, repeats in layer.problems:
        compute += repeats * compute_cycles(problem, config.rows, config.cols, config.dataflow)
        plan = mapping(problem, config.rows, config.cols, config.dataflow)
        folds += repeats * plan.folds
        plans.append({"ofmap_px": problem.ofmap_px, "window": problem.window, "filters": problem.filters,
                      "repeats": repeats, "row_folds": plan.row_folds, "col_folds": plan.col_folds})
        words = sram_accesses(problem, config.rows, config.cols, config.dataflow)
        traffic.sram_read += repeats * (words.ifmap_reads * ifmap_word + words.filter_reads * filter_word)
        traffic.sram_write += repeats * words.ofmap_writes * ofmap_word
        factors = refetch_factors(problem, config.rows, config.cols, config.dataflow)
        passes = tuple(max(a, b) for a, b in zip(passes, factors))
    traffic.dram = _array_dram(layer, node, config, *passes)
    compute += math.ceil(layer.vector_ops / config.lanes)
    return {"compute": compute, "traffic": traffic, "macs": layer.macs, "vector_ops": layer.vector_ops, "folds": folds,
            "mapping": plans}


def _word_sizes(layer: ArrayLayer) -> tuple[float, float, float]:
    """Bytes per ifmap, filter and ofmap word (weights may be narrower than the datapath)."""
    word = {"int8": 1.0, "fp16": 2.0, "fp32": 4.0}[layer.precision]
    return word, layer.filter_word or word, word


def _array_dram(layer: ArrayLayer, node: Node, config: AsicConfig, ifmap_passes: int, filter_passes: int,
                ofmap_passes: int) -> float:
    """DRAM bytes: weights once (again per pass when they overflow the filter buffer); activations
    only when off chip, re-streamed per pass; partial sums spilled when the output overflows."""
    data, weight, out = node.inputs[0], node.inputs[1 if node.op_type not in ("QLinearConv", "QLinearMatMul") else 3], node.outputs[0]
    dram = 0.0
    if layer.filter_constant:
        dram += layer.filter_bytes * (filter_passes if layer.filter_bytes > config.sram_bytes else 1)
    elif _off_chip(weight, layer.filter_bytes, config):
        dram += layer.filter_bytes * (filter_passes if layer.filter_bytes > config.sram_bytes else 1)
    if _off_chip(data, layer.ifmap_bytes, config):
        dram += layer.ifmap_bytes * (ifmap_passes if layer.ifmap_bytes > config.sram_bytes else 1)
    if layer.ofmap_bytes > config.sram_bytes and ofmap_passes > 1:
        dram += 2 * (ofmap_passes - 1) * layer.ofmap_bytes
    if _off_chip(out, layer.ofmap_bytes, config):
        dram += layer.ofmap_bytes
    return dram


def vector_costs(layer: VectorLayer, node: Node, config: AsicConfig) -> dict[str, Any]:
    """Cycles and traffic of one vector-unit op (config.lanes element operations per cycle)."""
    traffic = Traffic(sram_read=layer.input_bytes + layer.constant_bytes, sram_write=layer.output_bytes)
    if layer.ops:
        traffic.dram += layer.constant_bytes + sum(size for value, size in layer.tensors if _off_chip(value, size, config))
    return {"compute": math.ceil(layer.ops / config.lanes), "traffic": traffic, "macs": 0, "vector_ops": layer.ops}


def layer_energy(costs: Mapping[str, Any], precision: str, config: AsicConfig) -> float:
    """Picojoules: MACs and vector ops at their precision, plus SRAM and DRAM bytes."""
    energy = config.energy_pj
    traffic: Traffic = costs["traffic"]
    return (costs["macs"] * energy["mac"][precision] + costs["vector_ops"] * energy["vector_op"][precision]
            + (traffic.sram_read + traffic.sram_write) * energy["sram_byte"]["any"]
            + traffic.dram * energy["dram_byte"]["any"])


def layer_record(layer: ArrayLayer | VectorLayer, node: Node, config: AsicConfig) -> dict[str, Any]:
    """One entry of section["layers"]."""
    is_array = isinstance(layer, ArrayLayer)
    costs = array_costs(layer, node, config) if is_array else vector_costs(layer, node, config)
    traffic: Traffic = costs["traffic"]
    compute = costs["compute"]
    dram_cycles = math.ceil(traffic.dram / config.dram_bytes_per_cycle) if traffic.dram else 0
    stall = max(0, dram_cycles - compute)  # double-buffered: DRAM overlaps compute
    cycles = compute + stall
    record = {
        "node": layer.node, "op": layer.op, "kind": "array" if is_array else "vector", "precision": layer.precision,
        "cycles": int(cycles), "compute_cycles": int(compute), "stall_cycles": int(stall),
        "utilization": (costs["macs"] / (cycles * config.rows * config.cols)) if is_array and cycles else 0.0,
        "macs": int(costs["macs"]), "vector_ops": int(costs["vector_ops"]),
        "sram_read_bytes": int(round(traffic.sram_read)), "sram_write_bytes": int(round(traffic.sram_write)),
        "dram_bytes": int(round(traffic.dram)),
        "energy_pj": layer_energy(costs, layer.precision, config),
        "latency_us": cycles / config.freq_mhz,
    }
    if is_array:
        record["folds"] = costs["folds"]
        record["mapping"] = costs["mapping"]
        if layer.notes:
            record["notes"] = layer.notes
    return record


def simulation_graph(graph: Graph) -> tuple[Graph, dict[int, tuple[str, str]]]:
    """A copy of `graph` with ai.graphkiln fused ops decomposed into standard ONNX; returns it and
    a map from each new node's id to the (name, op type) of the fused node it came from."""
    from compiler.builder import OpBuilder
    from compiler.custom_ops import get_custom_op
    from compiler.shape_inference import infer_types

    if not any(n.domain == GRAPHKILN_DOMAIN for n in graph.nodes):
        return graph, {}
    copy = graph.copy()
    origin: dict[int, tuple[str, str]] = {}
    for node in list(copy.nodes):
        op = get_custom_op(node.domain, node.op_type) if node.domain == GRAPHKILN_DOMAIN else None
        if op is None:
            continue
        before = {id(n) for n in copy.nodes}
        outputs = op.decompose(OpBuilder(copy, before=node, stamp=f"asic:{node.op_type}"), node)
        for old, new in zip(node.outputs, outputs):
            if new.type is None:
                new.type = old.type
            copy.replace_all_uses_with(old, new)
        copy.remove_node(node)
        origin.update({id(n): (node.name, node.op_type) for n in copy.nodes if id(n) not in before})
    infer_types(copy)
    return copy, origin


def simulate(graph: Graph, config: AsicConfig, symbols: Mapping[str, int]) -> tuple[dict[str, Any], list]:
    """The "asic" report section for `graph`, and the array layers (for the topology writer)."""
    sim_graph, origin = simulation_graph(graph)
    records: dict[str, dict[str, Any]] = {}
    array_layers = []
    for node in sim_graph.nodes:
        layer = layer_for(node, symbols)
        if isinstance(layer, ArrayLayer):
            array_layers.append(layer)
        record = layer_record(layer, node, config)
        source = origin.get(id(node))
        if source is None:
            records[node.name] = record
        else:
            _merge(records, source, record)
    layers = list(records.values())
    return {"config": config.to_json(), "symbols": dict(symbols), "layers": layers, "total": totals(layers, config)}, array_layers


def _merge(records: dict[str, dict[str, Any]], source: tuple[str, str], record: dict[str, Any]) -> None:
    """Fold the cost of one decomposed node into the entry of the fused node it came from."""
    name, op_type = source
    fused = records.get(name)
    if fused is None:
        record = dict(record, node=name, op=f"{GRAPHKILN_DOMAIN}::{op_type}", parts=[record["op"]])
        records[name] = record
        return
    for key in ("cycles", "compute_cycles", "stall_cycles", "macs", "vector_ops", "sram_read_bytes",
                "sram_write_bytes", "dram_bytes", "energy_pj", "latency_us"):
        fused[key] += record[key]
    if record["kind"] == "array":
        fused["kind"] = "array"
    fused["parts"].append(record["op"])


def totals(layers: list[dict[str, Any]], config: AsicConfig) -> dict[str, Any]:
    """Whole-model sums; utilization is MACs over all cycles (array and vector) times the PEs."""
    keys = ("cycles", "compute_cycles", "stall_cycles", "macs", "vector_ops", "sram_read_bytes", "sram_write_bytes",
            "dram_bytes", "energy_pj")
    total: dict[str, Any] = {key: sum(layer[key] for layer in layers) for key in keys}
    total["array_cycles"] = sum(layer["cycles"] for layer in layers if layer["kind"] == "array")
    total["vector_cycles"] = sum(layer["cycles"] for layer in layers if layer["kind"] == "vector")
    total["array_layers"] = sum(1 for layer in layers if layer["kind"] == "array")
    total["vector_layers"] = sum(1 for layer in layers if layer["kind"] == "vector" and layer["cycles"])
    total["utilization"] = total["macs"] / (total["cycles"] * config.rows * config.cols) if total["cycles"] else 0.0
    total["latency_us"] = total["cycles"] / config.freq_mhz
    total["energy_uj"] = total["energy_pj"] / 1e6
    return total
