"""Writes the fused ai.graphkiln ops as standard ONNX: raises the model's opset with onnx's version
converter to where the ops exist (Gelu 20, LayerNormalization 17, RMSNormalization/Attention 23),
then rewrites them 1:1. With --keep-opset they stay ai.graphkiln ops and the opset is untouched."""

from __future__ import annotations

import onnx
from onnx import version_converter

from compiler.custom_ops import GRAPHKILN_DOMAIN
from compiler.decompose import decompose_custom_ops
from compiler.ir import Graph, stable_topological_order
from compiler.onnx_io import import_model
from compiler.onnx_io._export import graph_to_model
from compiler.pass_infra import Pass, PassContext, PassResult, register_pass

_LARGE_BYTES = 4096  # weights at least this big skip the converter (no adapter reads them)
STANDARD_SINCE = {"Gelu": 20, "LayerNormalization": 17, "RMSNormalization": 23, "Attention": 23}


def required_opset(graph: Graph) -> int:
    """The default-domain opset at which every fused op of the graph is a standard op (0 if none)."""
    needed = [STANDARD_SINCE[n.op_type] for n in graph.all_nodes()
              if n.domain == GRAPHKILN_DOMAIN and n.op_type in STANDARD_SINCE]
    return max(needed, default=0)


def raise_opset(graph: Graph, target: int) -> Graph:
    """A copy of `graph` converted to default-domain opset `target` by onnx.version_converter
    (interface kept: the converter keeps input/output names, dtypes and symbolic dims)."""
    model = graph_to_model(graph, keep_data=lambda value: value.const_value.nbytes < _LARGE_BYTES)
    fused = [node for node in model.graph.node if node.domain == GRAPHKILN_DOMAIN]
    parked = _park(model.graph, fused)
    converted = version_converter.convert_version(model, target)
    kept_inputs = [i for i in converted.graph.input if i.name not in parked]
    converted.graph.ClearField("input")
    converted.graph.input.extend(kept_inputs)
    converted.graph.node.extend(fused)
    _sort_nodes(converted.graph)
    raised = import_model(converted, source_path=graph.model.source_path if graph.model else None)
    _reattach_weights(raised, graph)
    return raised


def _park(graph: onnx.GraphProto, fused: list[onnx.NodeProto]) -> set[str]:
    """Remove the fused nodes (the converter knows only standard domains) and make their outputs
    temporary graph inputs so that their readers stay defined; returns the parked names."""
    types = {info.name: info for info in [*graph.value_info, *graph.output]}
    parked: set[str] = set()
    for node in fused:
        graph.node.remove(node)
        for name in node.output:
            info = types.get(name)
            if info is None:
                raise ValueError(f"no type for {name!r}")
            graph.input.append(info)
            parked.add(name)
    return parked


def _reattach_weights(raised: Graph, original: Graph) -> None:
    """The large weights were exported as typed inputs (no copy through the converter): make them
    initializers again, holding the original (possibly memory-mapped) tensors."""
    interface = {value.name for value in original.inputs}
    for value in list(raised.inputs):
        source = original.initializers.get(value.name)
        if source is not None and value.name not in interface:
            raised.inputs.remove(value)
            value.const_value = source.const_value
            raised.add_initializer(value)
    if [value.name for value in raised.inputs] != [value.name for value in original.inputs]:
        raise ValueError("the converted graph's inputs differ from the original's")


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Topologically order nodes (the converter may add nodes ahead of re-inserted ones), ties kept
    in the converter's order; a cycle is left as it is for the verifier to name."""
    nodes = list(graph.node)
    producer = {name: index for index, node in enumerate(nodes) for name in node.output if name}
    order = stable_topological_order([[producer[name] for name in node.input if name in producer] for node in nodes])
    if len(order) < len(nodes):
        placed = set(order)
        order += [index for index in range(len(nodes)) if index not in placed]
    ordered = [nodes[index] for index in order]
    graph.ClearField("node")
    graph.node.extend(ordered)


@register_pass
class WriteFusedOps(Pass):
    name = "write_fused_ops"
    description = "fused ops -> standard ONNX ops (opset raised by onnx's version converter) unless --keep-opset"
    in_place = False
    changes_shapes = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        target = required_opset(graph)
        if not target or ctx.option("keep_opset") or ctx.option("keep_custom_ops"):
            return PassResult(graph, False, {})
        counters = {"opset_before": graph.opset}
        if graph.opset < target:
            try:
                graph = raise_opset(graph, target)
            except Exception as error:  # the converter lacks an adapter: keep the ai.graphkiln ops
                ctx.note(f"write_fused_ops: cannot raise opset {graph.opset} -> {target} ({error}); fused ops kept")
                return PassResult(graph, False, {})
        counters["fused_ops_written"] = decompose_custom_ops(graph)
        counters["opset_after"] = graph.opset
        return PassResult(graph, True, counters)
