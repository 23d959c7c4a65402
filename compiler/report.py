"""The compile report: pipeline, per-pass records, model statistics before/after, and sections
added by passes and backends (quantization error, pruning, simulator cycles...)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .ir import Graph
from .pass_manager import PassRecord


def graph_stats(graph: Graph) -> dict[str, Any]:
    """Node count, op histogram, parameter count and bytes of `graph`."""
    from .ir import constant_node_value

    ops = Counter(n.qualified_op for n in graph.nodes)
    params = weight_bytes = 0
    for value in graph.initializers.values():
        tensor = value.const_value
        params += tensor.size
        weight_bytes += tensor.nbytes
    every_node = 0
    for node in graph.all_nodes():  # one walk: Constant payloads and the count with subgraphs
        every_node += 1
        if node.op_type == "Constant" and not node.domain:
            array = constant_node_value(node)
            if array is not None:
                params += array.size
                weight_bytes += array.nbytes
    return {
        "nodes": len(graph.nodes),
        "nodes_including_subgraphs": every_node,
        "ops": dict(sorted(ops.items(), key=lambda item: (-item[1], item[0]))),
        "parameters": int(params),
        "weight_bytes": int(weight_bytes),
        "opset": dict(graph.opset_imports),
    }


@dataclass
class Report:
    model: str
    backend: str
    opt_level: int
    pipeline: str
    before: dict[str, Any]
    after: dict[str, Any] = field(default_factory=dict)
    passes: list[PassRecord] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    total_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "opt_level": self.opt_level,
            "pipeline": self.pipeline,
            "before": self.before,
            "after": self.after,
            "passes": [r.to_json() for r in self.passes],
            "log": self.log,
            "sections": self.sections,
            "artifacts": self.artifacts,
            "total_seconds": self.total_seconds,
        }

    def __iter__(self):
        return iter(self.passes)

    def __len__(self) -> int:
        return len(self.passes)

    def __getitem__(self, index: int) -> PassRecord:
        return self.passes[index]

    def summary(self) -> str:
        """A human-readable table of what every pass did."""
        lines = [
            f"{self.model}: {self.before.get('nodes')} -> {self.after.get('nodes')} nodes, "
            f"pipeline -O{self.opt_level} for backend {self.backend} in {self.total_seconds:.2f}s",
            f"{'pass':<34}{'time(ms)':>10}{'nodes':>14}  counters",
        ]
        for record in self.passes:
            counters = ", ".join(f"{k}={v}" for k, v in record.counters.items() if v)
            nodes = f"{record.nodes_before}->{record.nodes_after}"
            mark = "" if record.modified else " (no change)"
            lines.append(f"{record.label:<34}{record.seconds * 1000:>10.1f}{nodes:>14}  {counters}{mark}")
        for message in self.log:
            lines.append(f"note: {message}")
        return "\n".join(lines)
