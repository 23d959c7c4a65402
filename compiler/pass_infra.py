"""The pass contract: a pass is a small registered class whose `run(graph, ctx)` returns a
PassResult; it declares whether it works in place, what it requires and what it ensures."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from .errors import OptionError
from .ir import Graph, TensorType


@dataclass
class PassResult:
    """What a pass did: the (possibly new) graph, whether it changed, and named counters."""

    graph: Graph
    modified: bool
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class PassContext:
    """Options and services shared by the passes of one pipeline run (like TVM's PassContext)."""

    opt_level: int = 2
    backend: str = "onnx"
    options: dict[str, Any] = field(default_factory=dict)
    verify_each_pass: bool = False
    check_each_pass: bool = False
    keep_snapshots: bool = False
    debug_rewrites: bool = False
    disabled_rules: set[str] = field(default_factory=set)
    progress: Callable[[str], None] | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    def note(self, message: str) -> None:
        """Record a message for the report (e.g. a skipped pass and why)."""
        self.log.append(message)


OFF_WORDS = ("0", "false", "off", "no")


def switched_off(setting: Any) -> bool:
    """Whether an option or environment value turns a feature off (0, false, off or no; None does not)."""
    return setting is not None and str(setting).lower() in OFF_WORDS


class Pass:
    """Base class of passes. Subclasses set `name` and implement `run`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    in_place: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()
    ensures: ClassVar[tuple[str, ...]] = ()
    changes_shapes: ClassVar[bool] = False
    # makes constants of values that decide other values' dims (Slice ends, Expand shapes, Reshape
    # targets): types are inferred again after it where some dim is still unknown
    pins_shapes: ClassVar[bool] = False

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


class GraphwisePass(Pass):
    """A pass that transforms each graph (the main one and every subgraph) on its own and reports
    one count, under `counter`: subclasses implement `transform(graph) -> count`."""

    counter: ClassVar[str] = "changes"

    def transform(self, graph: Graph) -> int:
        raise NotImplementedError

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        count = sum(self.transform(g) for g in graph.self_and_subgraphs())
        return PassResult(graph, bool(count), {self.counter: count})


_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make the pass available by its `name` to pipelines and the CLI."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    existing = _PASSES.get(cls.name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"pass name {cls.name!r} is taken by {existing.__qualname__}")
    _PASSES[cls.name] = cls
    return cls


def get_pass(name: str) -> Pass:
    from .plugins import load_plugins

    load_plugins()
    cls = _PASSES.get(name)
    if cls is None:
        known = ", ".join(sorted(_PASSES)) or "none registered"
        raise OptionError(f"unknown pass {name!r}", f"known passes: {known}")
    return cls()


def registered_passes() -> dict[str, type[Pass]]:
    from .plugins import load_plugins

    load_plugins()
    return dict(_PASSES)


# ---- properties a pass can require or ensure ----------------------------------------------

def _types_known(graph: Graph) -> bool:
    return all(
        isinstance(v.type, TensorType) and v.type.dtype
        for n in graph.nodes for v in n.outputs if v.name != "" and (v.uses or v.is_graph_output())
        if isinstance(v.type, TensorType) or v.type is None
    )


def _standard_onnx(graph: Graph) -> bool:
    return not any(n.domain == "ai.graphkiln" for n in graph.all_nodes())


def _no_subgraphs(graph: Graph) -> bool:
    return not any(n.subgraphs() for n in graph.nodes)


PROPERTIES: dict[str, Callable[[Graph], bool]] = {
    "types_known": _types_known,
    "standard_onnx": _standard_onnx,
    "no_subgraphs": _no_subgraphs,
}


def timed_run(pass_: Pass, graph: Graph, ctx: PassContext) -> tuple[PassResult, float]:
    start = time.perf_counter()
    result = pass_.run(graph, ctx)
    return result, time.perf_counter() - start
