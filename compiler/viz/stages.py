"""The pipeline stages of a report (the input graph, then the graph after each pass) and the
difference between two stages, matched by the stable node uid of compiler.snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import OptionError

# Fields whose change makes a node "changed" (same uid, different content).
COMPARED_FIELDS = ("op", "domain", "inputs", "outputs", "attributes")


@dataclass
class Stage:
    """One picture of the graph: `graph` is a compiler.snapshot dict; `pass_name` is None for
    the input stage; `same_as` is the index of an earlier stage with an identical graph."""

    index: int
    label: str
    pass_name: str | None
    graph: dict[str, Any]
    same_as: int | None = None


def report_stages(report: Any) -> list[Stage]:
    """The stages kept by SnapshotInstrument in `report.sections["snapshots"]`; stages equal to
    the one before them point at it with `same_as` (a pass that changed nothing)."""
    snapshots = (getattr(report, "sections", None) or {}).get("snapshots")
    if not snapshots:
        raise OptionError(
            "the report has no pass snapshots to visualize",
            "compile with keep_snapshots=True (kiln viz and kiln compile --report do this)",
        )
    stages: list[Stage] = []
    previous_key = None
    for index, snapshot in enumerate(snapshots):
        graph = snapshot["graph"]
        key = graph_key(graph)
        stage = Stage(index, str(snapshot.get("stage") or f"stage {index}"), snapshot.get("pass"), graph)
        if previous_key == key:
            earlier = stages[-1]
            stage.same_as = earlier.same_as if earlier.same_as is not None else earlier.index
        stages.append(stage)
        previous_key = key
    return stages


def node_signature(node: dict[str, Any]) -> str:
    """The compared content of a node as one string (equal strings: unchanged node). repr, not
    JSON: snapshots build attributes in the node's own order, and repr is several times faster."""
    return repr(tuple(node.get(name) for name in COMPARED_FIELDS))


def graph_key(graph: dict[str, Any]) -> str:
    """A string equal for two snapshots exactly when their nodes, values and interface are."""
    values = sorted((graph.get("values") or {}).items())
    return repr((graph.get("inputs"), graph.get("outputs"), [(n["uid"], node_signature(n)) for n in graph["nodes"]], values))


def diff_graphs(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[int]]:
    """uids added (only in `after`), removed (only in `before`) and changed (in both, with a
    different op, domain, inputs, outputs or attributes), each in graph order."""
    old = {node["uid"]: node for node in before["nodes"]}
    new = {node["uid"]: node for node in after["nodes"]}
    return {
        "added": [node["uid"] for node in after["nodes"] if node["uid"] not in old],
        "removed": [node["uid"] for node in before["nodes"] if node["uid"] not in new],
        "changed": [
            node["uid"]
            for node in after["nodes"]
            if node["uid"] in old and node_signature(node) != node_signature(old[node["uid"]])
        ],
    }
