"""Packs a compile report into the visualizer's payload: every distinct node version once, each
stage as a delta of node versions and values from the stage before, and a layered layout per
stage whose graph changed (stages a pass left unchanged point at the earlier one)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .layout import layered_layout
from .scopes import node_scope
from .stages import Stage, node_signature, report_stages

PAYLOAD_VERSION = 1
LAYER_HEIGHT = 64  # pixels between layer tops; boxes are NODE_HEIGHT tall
NODE_HEIGHT = 34


def node_width(label: str) -> int:
    """Box width for a label (the browser draws the same boxes)."""
    return int(min(220, max(72, 7.2 * len(label) + 28)))


def pass_records(report: Any) -> list[dict[str, Any]]:
    """The report's pass records as plain dicts, each with the index of its stage."""
    records = []
    for index, record in enumerate(getattr(report, "passes", []) or []):
        data = record.to_json() if hasattr(record, "to_json") else dict(record)
        data["stage"] = data.get("snapshot_index") if data.get("snapshot_index") is not None else index + 1
        records.append(data)
    return records


def report_meta(report: Any) -> dict[str, Any]:
    """Model name, backend, pipeline and whole-graph statistics before/after."""
    return {
        "model": str(getattr(report, "model", "") or ""),
        "backend": str(getattr(report, "backend", "") or ""),
        "opt_level": getattr(report, "opt_level", None),
        "pipeline": str(getattr(report, "pipeline", "") or ""),
        "total_seconds": float(getattr(report, "total_seconds", 0.0) or 0.0),
        "before": getattr(report, "before", {}) or {},
        "after": getattr(report, "after", {}) or {},
        "log": list(getattr(report, "log", []) or []),
    }


def report_sections(report: Any) -> dict[str, Any]:
    """Sections other than the snapshots (quantization, pruning, asic, ...)."""
    return {k: v for k, v in (getattr(report, "sections", {}) or {}).items() if k != "snapshots"}


class _Packer:
    def __init__(self) -> None:
        self.versions: list[dict[str, Any]] = []
        self.version_ids: dict[tuple[int, str], int] = {}
        self.order: list[int] = []
        self.values: dict[str, Any] = {}
        self.previous_x: dict[str, float] = {}

    def version(self, node: dict[str, Any]) -> int:
        key = (node["uid"], node_signature(node) + repr(node.get("rule")) + repr(node.get("fused_from")))
        vid = self.version_ids.get(key)
        if vid is None:
            vid = self.version_ids[key] = len(self.versions)
            entry = dict(node)
            entry["scope"] = node_scope(node)
            entry["w"] = node_width(node.get("op") or "")
            self.versions.append(entry)
        return vid

    def stage(self, stage: Stage) -> dict[str, Any]:
        graph = stage.graph
        ids = [self.version(node) for node in graph["nodes"]]
        present = set(ids)
        kept = [vid for vid in self.order if vid in present]
        known = set(kept)
        added = [vid for vid in ids if vid not in known]
        removed = [vid for vid in self.order if vid not in present]
        self.order = kept + added
        values = graph.get("values") or {}
        changed_values = {name: entry for name, entry in values.items() if self.values.get(name) != entry}
        dropped_values = [name for name in self.values if name not in values]
        self.values = dict(values)
        started = time.perf_counter()
        layout = self.layout(graph, ids)
        return {
            "add": added,
            "remove": removed,
            "inputs": list(graph.get("inputs") or []),
            "outputs": list(graph.get("outputs") or []),
            "values_set": changed_values,
            "values_drop": dropped_values,
            "doc": graph.get("doc") or "",
            "layout": layout,
            "layout_seconds": round(time.perf_counter() - started, 4),
        }

    def layout(self, graph: dict[str, Any], ids: list[int]) -> dict[str, Any]:
        """Layout in topological order (inputs, nodes, outputs), stored in payload order
        (the stage's node list, then inputs, then outputs)."""
        inputs, outputs = list(graph.get("inputs") or []), list(graph.get("outputs") or [])
        keys = [f"in:{name}" for name in inputs] + [f"uid:{node['uid']}" for node in graph["nodes"]] + [f"out:{name}" for name in outputs]
        widths = [node_width(name) for name in inputs] + [self.versions[vid]["w"] for vid in ids] + [node_width(name) for name in outputs]
        edges = _edges(graph, inputs, outputs)
        seed = np.array([self.previous_x.get(key, math.nan) for key in keys])
        result = layered_layout(np.asarray(widths, dtype=np.float64), edges, None if np.isnan(seed).all() else seed)
        self.previous_x = dict(zip(keys, result.x.tolist()))
        slot_of_vid = {vid: slot for slot, vid in enumerate(self.order)}
        node_count = len(self.order)
        stored = [node_count + i for i in range(len(inputs))]
        stored += [slot_of_vid[vid] for vid in ids]
        stored += [node_count + len(inputs) + i for i in range(len(outputs))]
        total = len(keys)
        x = [0] * total
        layer = [0] * total
        for topo, slot in enumerate(stored):
            x[slot] = int(round(result.x[topo]))
            layer[slot] = int(result.layer[topo])
        routes = [[stored[s], stored[t], *[int(round(v)) for v in bends]] for (s, t), bends in result.routes.items()]
        return {"x": x, "layer": layer, "routes": routes}


def _edges(graph: dict[str, Any], inputs: list[str], outputs: list[str]) -> np.ndarray:
    producer: dict[str, int] = {name: index for index, name in enumerate(inputs)}
    offset = len(inputs)
    pairs: list[tuple[int, int]] = []
    for index, node in enumerate(graph["nodes"]):
        for name in node.get("inputs") or []:
            if name in producer:
                pairs.append((producer[name], offset + index))
        for name in node.get("outputs") or []:
            if name:
                producer[name] = offset + index
    base = offset + len(graph["nodes"])
    for index, name in enumerate(outputs):
        if name in producer:
            pairs.append((producer[name], base + index))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def pack_report(report: Any) -> dict[str, Any]:
    """The whole payload the HTML page decodes (the JSON export is compiler.viz.export)."""
    packer = _Packer()
    stages = []
    for stage in report_stages(report):
        entry: dict[str, Any] = {"label": stage.label, "pass": stage.pass_name, "same_as": stage.same_as}
        if stage.same_as is None:
            entry.update(packer.stage(stage))
        stages.append(entry)
    return {
        "version": PAYLOAD_VERSION,
        "meta": report_meta(report),
        "passes": pass_records(report),
        "stages": stages,
        "nodes": packer.versions,
        "sections": report_sections(report),
        "geometry": {"layer_height": LAYER_HEIGHT, "node_height": NODE_HEIGHT},
    }
