"""Pass instruments (as in MLIR and TVM): hooks around every pass for verification, numeric
checks, snapshots for the visualizer, numbered IR dumps and progress."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import PassFailure
from .ir import Graph, VerificationError
from .pass_infra import PROPERTIES, Pass, PassContext, PassResult

if TYPE_CHECKING:
    from .pass_manager import PassRecord


class PassInstrument:
    """Base: every hook is optional."""

    def before_pipeline(self, graph: Graph, ctx: PassContext) -> None: ...

    def before_pass(self, pass_: Pass, graph: Graph, ctx: PassContext) -> None: ...

    def after_pass(self, pass_: Pass, result: PassResult, record: "PassRecord", ctx: PassContext) -> None: ...

    def after_pipeline(self, graph: Graph, ctx: PassContext) -> None: ...


class VerifyInstrument(PassInstrument):
    """Runs verify() and the pass's `ensures` after every pass; a failure names the pass."""

    def after_pass(self, pass_, result, record, ctx) -> None:
        from .verify import verify

        try:
            verify(result.graph)
        except VerificationError as error:
            raise PassFailure(f"IR invalid after pass {pass_.name}: {error}", _history(record)) from None
        for prop in pass_.ensures:
            check = PROPERTIES.get(prop)
            if check is not None and not check(result.graph):
                raise PassFailure(f"pass {pass_.name} promised {prop!r} but the graph breaks it", _history(record))


class NumericCheckInstrument(PassInstrument):
    """--check-each-pass: runs the graph on fixed random inputs before the pipeline and after each
    pass that changed it, and fails at the first pass whose outputs drift."""

    def __init__(self, feeds: dict[str, Any] | None = None, rtol: float = 1e-4, atol: float = 1e-5):
        self.feeds = feeds
        self.rtol, self.atol = rtol, atol
        self.expected: list | None = None

    def before_pipeline(self, graph, ctx) -> None:
        from .reference import evaluate, random_inputs

        if self.feeds is None:
            self.feeds = random_inputs(graph, seed=0)
        self.expected = evaluate(graph, self.feeds)

    def after_pass(self, pass_, result, record, ctx) -> None:
        if not result.modified or self.expected is None:
            return
        from .reference import compare_outputs, evaluate

        rtol, atol = ctx.option("check_rtol", self.rtol), ctx.option("check_atol", self.atol)
        if getattr(pass_, "approximates", False):
            record.note = "numeric check skipped: the pass changes numerics by design"
            return
        actual = evaluate(result.graph, self.feeds)
        names = [v.name for v in result.graph.outputs]
        verdict = compare_outputs(self.expected, actual, rtol=rtol, atol=atol, names=names)
        record.max_error = verdict.max_abs_error
        if not verdict.ok:
            raise PassFailure(f"pass {pass_.name} changed the model's outputs: {verdict.message}", _history(record))


class SnapshotInstrument(PassInstrument):
    """Keeps a compact picture of the graph before the pipeline and after each pass (visualizer)."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, Any]] = []

    def before_pipeline(self, graph, ctx) -> None:
        from .snapshot import snapshot_graph

        self.snapshots.append({"stage": "input", "pass": None, "graph": snapshot_graph(graph)})

    def after_pass(self, pass_, result, record, ctx) -> None:
        from .snapshot import snapshot_graph

        record.snapshot_index = len(self.snapshots)
        self.snapshots.append({"stage": record.label, "pass": pass_.name, "graph": snapshot_graph(result.graph)})
        ctx.artifacts["snapshots"] = self.snapshots


class DumpInstrument(PassInstrument):
    """Writes numbered text dumps `NN_pass.txt` of the IR after each pass that changed it."""

    def __init__(self, folder: str, only_changed: bool = True):
        self.folder = folder
        self.only_changed = only_changed
        self.counter = 0

    def before_pipeline(self, graph, ctx) -> None:
        from .printer import format_graph

        os.makedirs(self.folder, exist_ok=True)
        self._write("input", format_graph(graph))

    def after_pass(self, pass_, result, record, ctx) -> None:
        from .printer import format_graph

        if result.modified or not self.only_changed:
            self._write(pass_.name, format_graph(result.graph))

    def _write(self, label: str, text: str) -> None:
        from .onnx_io import write_bytes_atomic

        write_bytes_atomic(os.path.join(self.folder, f"{self.counter:02d}_{label}.txt"), text + "\n")
        self.counter += 1


class ProgressInstrument(PassInstrument):
    """Reports each pass as it starts (the CLI shows it on stderr)."""

    def before_pass(self, pass_, graph, ctx) -> None:
        if ctx.progress is not None:
            ctx.progress(f"{pass_.name} ({len(graph.nodes)} nodes)")


def _history(record: "PassRecord") -> str:
    done = record.history
    tail = ", ".join(done[-6:]) if done else "none"
    return f"passes before it: {tail}; reproduce with --passes {record.reproducer}"
