"""Compact, JSON-ready pictures of a graph at one pipeline stage, for the visualizer and reports.
Nodes keep a stable `uid` across passes, so stages can be diffed (added/removed/changed)."""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import numpy as np

from .ir import AttrType, Graph, Node, Tensor, Value

_uids = itertools.count(1)
_weight_stats: "weakref.WeakKeyDictionary[Tensor, dict]" = weakref.WeakKeyDictionary()


def node_uid(node: Node) -> int:
    """A process-wide id for `node`, stable while the node lives."""
    uid = node.meta.get("uid")
    if uid is None:
        uid = node.meta["uid"] = next(_uids)
    return uid


def snapshot_graph(graph: Graph) -> dict[str, Any]:
    """Nodes (op, attributes, inputs/outputs, provenance), values (types) and weight statistics."""
    values: dict[str, dict[str, Any]] = {}

    def note_value(value: Value | None) -> str:
        if value is None:
            return ""
        name = value.name or "?"
        if name not in values:
            entry: dict[str, Any] = {"type": str(value.type) if value.type is not None else None}
            if value.dtype is not None:
                entry["dtype"] = value.dtype.name.lower()
            if value.shape is not None:
                entry["shape"] = [d if d is not None else "?" for d in value.shape]
            if value.const_value is not None:
                entry["weight"] = weight_stats(value.const_value)
            if value.meta:
                entry["meta"] = _jsonable(value.meta)
            values[name] = entry
        return name

    nodes = []
    for node in graph.nodes:
        nodes.append(
            {
                "uid": node_uid(node),
                "name": node.name or "",
                "op": node.op_type,
                "domain": node.domain,
                "inputs": [note_value(v) for v in node.inputs],
                "outputs": [note_value(v) for v in node.outputs],
                "attributes": {a.name: _attr_summary(a) for a in node.attributes.values()},
                "rule": node.meta.get("rule"),
                "fused_from": node.meta.get("fused_from"),
                "meta": _jsonable({k: v for k, v in node.meta.items() if k not in ("uid", "rule", "fused_from")}),
                "subgraph_nodes": sum(len(g.nodes) for g in node.subgraphs()) or None,
                "doc": node.doc_string or "",
            }
        )
    return {
        "name": graph.name,
        "doc": graph.doc_string or "",
        "inputs": [note_value(v) for v in graph.inputs],
        "outputs": [note_value(v) for v in graph.outputs],
        "nodes": nodes,
        "values": values,
    }


def weight_stats(tensor: Tensor) -> dict[str, Any]:
    """Shape, dtype, size and (for numeric tensors) min/max/mean/std/sparsity, cached per tensor."""
    cached = _weight_stats.get(tensor)
    if cached is not None:
        return cached
    stats: dict[str, Any] = {"dtype": tensor.dtype.name.lower(), "shape": list(tensor.shape), "bytes": tensor.nbytes}
    try:
        array = np.asarray(tensor.numpy())
        if array.dtype.kind in "fiu" or array.dtype.name in ("bfloat16", "int4", "uint4"):
            data = array.astype(np.float64)
            if data.size:
                stats.update(
                    min=float(data.min()), max=float(data.max()), mean=float(data.mean()),
                    std=float(data.std()), sparsity=float(np.mean(data == 0)),
                )
    except Exception:
        pass
    _weight_stats[tensor] = stats
    return stats


def _attr_summary(attr) -> Any:
    value = attr.value
    if attr.type in (AttrType.GRAPH, AttrType.GRAPHS):
        graphs = attr.graphs()
        return f"<{len(graphs)} subgraph(s), {sum(len(g.nodes) for g in graphs)} nodes>"
    if isinstance(value, Tensor):
        if value.size <= 16:
            try:
                return np.asarray(value.numpy()).tolist()
            except Exception:
                pass
        return f"<tensor {value.dtype.name.lower()}{list(value.shape)}>"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and len(value) > 64:
        return [*value[:64], "..."]
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"<array {value.dtype}{list(value.shape)}>"
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
