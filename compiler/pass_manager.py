"""The pass manager: runs a pipeline over a graph, fixed-point groups included, enforcing each
pass's contract, timing it, counting nodes and calling the instruments around it."""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import KilnError, PassFailure
from .instruments import PassInstrument
from .ir import Graph
from .pass_infra import PROPERTIES, PassContext, PassResult, get_pass
from .pipeline import FixedPoint, PassStep, Pipeline, Step


@dataclass
class PassRecord:
    """One pass execution, as the report and the visualizer show it."""

    name: str
    label: str
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    modified: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    iteration: int = 0
    note: str = ""
    max_error: float | None = None
    snapshot_index: int | None = None
    history: list[str] = field(default_factory=list)
    reproducer: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("history")
        data.pop("reproducer")
        return data


class PassManager:
    """`PassManager(pipeline, ctx, instruments).run(graph) -> (graph, records)`."""

    def __init__(self, pipeline: Pipeline, ctx: PassContext | None = None, instruments: list[PassInstrument] | None = None):
        self.pipeline = pipeline
        self.ctx = ctx or PassContext()
        self.instruments = list(instruments or [])
        self.records: list[PassRecord] = []
        self._history: list[str] = []
        # passes that last ran on the graph as it is now and changed nothing: running them again
        # cannot change it (passes are deterministic), so a fixed point skips them and says so
        self._unchanged_by: set[str] = set()
        self.skipped: collections.Counter = collections.Counter()

    def run(self, graph: Graph) -> tuple[Graph, list[PassRecord]]:
        for name in self.pipeline.pass_names():
            get_pass(name)  # fail early, before any work, on an unknown name
        for instrument in self.instruments:
            instrument.before_pipeline(graph, self.ctx)
        for step in self.pipeline.steps:
            graph, _ = self._run_step(step, graph, iteration=0)
        if self.skipped:
            runs = ", ".join(f"{name} x{count}" for name, count in sorted(self.skipped.items()))
            self.ctx.note(f"skipped {sum(self.skipped.values())} re-runs of passes on a graph they had already "
                          f"left unchanged: {runs}")
        for instrument in self.instruments:
            instrument.after_pipeline(graph, self.ctx)
        return graph, self.records

    def _run_step(self, step: Step, graph: Graph, iteration: int) -> tuple[Graph, bool]:
        if isinstance(step, PassStep):
            return self._run_pass(step.name, graph, iteration)
        return self._run_fixed_point(step, graph)

    def _run_fixed_point(self, group: FixedPoint, graph: Graph) -> tuple[Graph, bool]:
        """Repeat the group until no step changes the graph. `max_iterations` bounds the rounds that
        change it without making it smaller than it has been: a deep model whose shape chains resolve
        one block a round keeps shrinking and goes on; passes undoing each other stop the pipeline.
        The node count falls at most once per node, so this ends."""
        any_change, smallest, stalled, iteration = False, _count(graph), 0, 0
        while True:
            iteration += 1
            changed = False
            for step in group.steps:
                graph, modified = self._run_step(step, graph, iteration)
                changed |= modified
            any_change |= changed
            if not changed:
                return graph, any_change
            if _count(graph) < smallest:
                smallest, stalled = _count(graph), 0
            else:
                stalled += 1
            if stalled >= group.max_iterations:
                raise PassFailure(
                    f"passes {group} did not reach a fixed point: {stalled} rounds in a row changed the graph "
                    f"without making it smaller ({iteration} rounds in all)",
                    "two passes may be undoing each other; disable one with --disable",
                )

    def _run_pass(self, name: str, graph: Graph, iteration: int) -> tuple[Graph, bool]:
        if iteration > 0 and name in self._unchanged_by:
            self.skipped[name] += 1
            return graph, False
        pass_ = get_pass(name)
        label = name if iteration == 0 else f"{name}#{iteration}"
        record = PassRecord(name=name, label=label, iteration=iteration, nodes_before=_count(graph))
        record.history = list(self._history)
        record.reproducer = ",".join(self._history[-12:] + [name])
        for prop in pass_.requires:
            check = PROPERTIES.get(prop)
            if check is not None and not check(graph):
                raise PassFailure(f"pass {name} requires {prop!r}, which the graph does not have", _before(self._history))
        for instrument in self.instruments:
            instrument.before_pass(pass_, graph, self.ctx)
        start = time.perf_counter()
        constants_before = set(map(id, graph.initializers.values())) if pass_.pins_shapes else set()
        try:
            result = pass_.run(graph, self.ctx)
        except KilnError as error:
            if isinstance(error, PassFailure):
                raise
            raise PassFailure(f"pass {name}: {error.one_line()}", _before(self._history)) from error
        except Exception as error:
            raise PassFailure(f"pass {name} crashed: {type(error).__name__}: {error}", _before(self._history)) from error
        if not isinstance(result, PassResult):
            raise PassFailure(f"pass {name} returned {type(result).__name__}, not a PassResult")
        if pass_.in_place and result.graph is not graph:
            raise PassFailure(f"pass {name} declares in_place but returned a different graph")
        if result.modified:
            self._refresh_types(pass_, result.graph, constants_before)
        record.seconds = time.perf_counter() - start
        record.nodes_after = _count(result.graph)
        record.modified = result.modified
        record.counters = dict(result.counters)
        self.records.append(record)
        for instrument in self.instruments:
            instrument.after_pass(pass_, result, record, self.ctx)
        self._history.append(name)
        if result.modified or result.graph is not graph:
            self._unchanged_by.clear()
        else:
            self._unchanged_by.add(name)
        return result.graph, result.modified

    @staticmethod
    def _refresh_types(pass_, graph: Graph, constants_before: set[int]) -> None:
        needs = pass_.changes_shapes or any(
            v.type is None and v.name != "" and v.uses for n in graph.nodes for v in n.outputs
        ) or (pass_.pins_shapes and _pins_unknown_dims(graph, constants_before))
        if needs:
            from .shape_inference import infer_types

            infer_types(graph)


def _pins_unknown_dims(graph: Graph, constants_before: set[int]) -> bool:
    """Whether a constant the pass made is read by a node with an output dim that is neither a
    number nor a real symbol (a Slice end, an Expand shape now known: inference can tell it)."""
    from .shape_inference import is_unknown_dim

    fresh = [v for v in graph.initializers.values() if id(v) not in constants_before]
    return any(
        out.shape is not None and any(is_unknown_dim(d) for d in out.shape)
        for value in fresh for node in value.consumers for out in node.outputs
    )


def _count(graph: Graph) -> int:
    return len(graph.nodes)


def _before(history: list[str]) -> str:
    return "passes before it: " + (", ".join(history[-6:]) if history else "none")
