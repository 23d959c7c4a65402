"""`kiln viz --format json`: the stage graphs and per-node data as one JSON document, documented
in README.md ("JSON format"). The document is shaped like a Model Explorer graph collection
(`label`, `graphs[].nodes[]` with id/label/namespace/attrs/incomingEdges/style), extended with
graphkiln's own fields (uid, op, inputs, attributes, rule, fused_from, diff status)."""

from __future__ import annotations

import json
from typing import Any

from .pack import pass_records, report_meta, report_sections
from .scopes import node_scope
from .stages import Stage, diff_graphs, report_stages

FORMAT_NAME = "graphkiln-viz"
FORMAT_VERSION = 1
# Sections whose "layers" entries are keyed by node name and copied into node_data.
PER_NODE_SECTIONS = ("quantization", "pruning", "asic", "tensorrt")
# Border colours of nodes a pass added or changed (Model Explorer's GraphNodeStyle).
STATUS_STYLE = {"added": {"borderColor": "#1a9e4b"}, "changed": {"borderColor": "#e09100"}}


def export_document(report: Any) -> dict[str, Any]:
    """The JSON export of a report with snapshots."""
    stages = report_stages(report)
    documents, graphs = [], []
    for stage in stages:
        previous = stages[stage.index - 1].graph if stage.index else None
        diff = diff_graphs(previous, stage.graph) if previous is not None else {"added": [], "removed": [], "changed": []}
        graph_id = _graph_id(stage) if stage.same_as is None else _graph_id(stages[stage.same_as])
        documents.append({"index": stage.index, "label": stage.label, "pass": stage.pass_name,
                          "same_as": stage.same_as, "graph_id": graph_id, "diff": diff})
        if stage.same_as is None:
            graphs.append(stage_graph(stage, diff))
    sections = report_sections(report)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "label": f"{getattr(report, 'model', '') or 'model'} (graphkiln passes)",
        **report_meta(report),
        "passes": pass_records(report),
        "stages": documents,
        "graphs": graphs,
        "node_data": node_data(sections),
        "sections": sections,
    }


def _graph_id(stage: Stage) -> str:
    return f"{stage.index:02d} {stage.label}"


def stage_graph(stage: Stage, diff: dict[str, list[int]]) -> dict[str, Any]:
    """One stage as a Model-Explorer-shaped graph with graphkiln fields."""
    graph = stage.graph
    status = {uid: "added" for uid in diff["added"]}
    status.update({uid: "changed" for uid in diff["changed"]})
    producer: dict[str, tuple[str, int]] = {name: (f"input:{name}", 0) for name in graph.get("inputs") or []}
    values = graph.get("values") or {}
    nodes = [_io_node(f"input:{name}", "Input", "graph_input", name, values) for name in graph.get("inputs") or []]
    for node in graph["nodes"]:
        nodes.append(_node(node, producer, values, status.get(node["uid"], "unchanged")))
        for index, name in enumerate(node.get("outputs") or []):
            if name:
                producer[name] = (str(node["uid"]), index)
    for name in graph.get("outputs") or []:
        output = _io_node(f"output:{name}", "Output", "graph_output", name, values)
        if name in producer:
            source, index = producer[name]
            output["incomingEdges"] = [{"sourceNodeId": source, "sourceNodeOutputId": str(index), "targetNodeInputId": "0"}]
        nodes.append(output)
    return {"id": _graph_id(stage), "stage": stage.index, "nodes": nodes, "values": values,
            "inputs": graph.get("inputs") or [], "outputs": graph.get("outputs") or [], "doc": graph.get("doc") or ""}


def _node(node: dict[str, Any], producer: dict[str, tuple[str, int]], values: dict[str, Any], status: str) -> dict[str, Any]:
    edges = []
    for index, name in enumerate(node.get("inputs") or []):
        if name in producer:
            source, output = producer[name]
            edges.append({"sourceNodeId": source, "sourceNodeOutputId": str(output), "targetNodeInputId": str(index)})
    attrs = [{"key": key, "value": _text(value)} for key, value in (node.get("attributes") or {}).items()]
    attrs += [{"key": key, "value": _text(node[key])} for key in ("name", "domain", "rule", "fused_from", "doc") if node.get(key)]
    entry = {
        "id": str(node["uid"]),
        "label": node.get("op") or "",
        "namespace": node_scope(node),
        "attrs": attrs,
        "incomingEdges": edges,
        "inputsMetadata": _metadata(node.get("inputs") or [], values),
        "outputsMetadata": _metadata(node.get("outputs") or [], values),
        "kind": "node",
        "status": status,
        **{key: node.get(key) for key in ("uid", "name", "op", "domain", "inputs", "outputs", "attributes", "rule", "fused_from", "doc", "meta")},
    }
    if status in STATUS_STYLE:
        entry["style"] = STATUS_STYLE[status]
    return entry


def _io_node(node_id: str, label: str, kind: str, name: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"id": node_id, "label": label, "namespace": "", "attrs": [{"key": "name", "value": name}],
            "incomingEdges": [], "outputsMetadata": _metadata([name], values), "inputsMetadata": [], "kind": kind, "name": name}


def _metadata(names: list[str], values: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    for index, name in enumerate(names):
        entry = values.get(name) or {}
        attrs = [{"key": "tensor_name", "value": name}]
        if entry.get("type"):
            attrs.append({"key": "tensor_shape", "value": str(entry["type"])})
        items.append({"id": str(index), "attrs": attrs})
    return items


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def node_data(sections: dict[str, Any]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per-node entries of the report sections, keyed by section then node name."""
    result: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for section in PER_NODE_SECTIONS:
        data = sections.get(section)
        if not isinstance(data, dict):
            continue
        rows = [row for key in ("layers", "blocking", "refused") for row in (data.get(key) or []) if isinstance(row, dict)]
        for row in rows:
            if row.get("node"):
                result.setdefault(section, {}).setdefault(str(row["node"]), []).append(row)
    return result
