"""The lowering table: (domain, op type, opset range) -> a JAX rule `(ctx, *inputs, **attrs)`.

A rule gets the node's inputs (None for absent optional ones) and its attributes as keyword
arguments (ints, floats, str, lists, numpy arrays for tensors, IR Graphs for subgraphs). Inputs
known at trace time arrive as numpy arrays (possibly object arrays holding symbolic dims under
jax.export); everything else is a jax array or tracer. A rule returns one output or a tuple."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from compiler.errors import UnsupportedError
from compiler.ir import Graph, Node, TensorType, ValueType

LoweringRule = Callable[..., Any]
StaticKernel = Callable[..., Any]


@dataclass
class _Entry:
    since: int
    until: int | None  # exclusive
    rule: LoweringRule


_RULES: dict[tuple[str, str], list[_Entry]] = {}
_STATIC: dict[tuple[str, str], StaticKernel] = {}


def lowering(op_type: str, *, domain: str = "", since: int = 1, until: int | None = None) -> Callable[[LoweringRule], LoweringRule]:
    """Register a rule for `op_type` in opsets [since, until) of `domain`."""

    def register(rule: LoweringRule) -> LoweringRule:
        entries = _RULES.setdefault((domain, op_type), [])
        entries.append(_Entry(since, until, rule))
        entries.sort(key=lambda e: e.since)
        return rule

    return register


def static_kernel(op_type: str, *, domain: str = "") -> Callable[[StaticKernel], StaticKernel]:
    """Register a numpy kernel used when every input is known at trace time; it must accept
    object arrays of symbolic dims (shape arithmetic under jax.export)."""

    def register(kernel: StaticKernel) -> StaticKernel:
        _STATIC[(domain, op_type)] = kernel
        return kernel

    return register


def find_lowering(domain: str, op_type: str, opset: int) -> LoweringRule:
    """The rule for `op_type` at `opset`; a missing one raises UnsupportedError naming what exists."""
    _ensure_loaded()
    entries = _RULES.get((domain, op_type))
    if entries:
        for entry in reversed(entries):
            if entry.since <= opset and (entry.until is None or opset < entry.until):
                return entry.rule
        ranges = ", ".join(f"[{e.since}, {e.until or 'latest'})" for e in entries)
        raise UnsupportedError(
            f"no JAX lowering for {_qualified(domain, op_type)} at opset {opset}",
            f"lowerings exist for opsets {ranges}",
        )
    raise UnsupportedError(f"no JAX lowering for {_qualified(domain, op_type)} (opset {opset})", "no opset range is lowered")


def has_lowering(domain: str, op_type: str) -> bool:
    _ensure_loaded()
    return (domain, op_type) in _RULES


def find_static_kernel(domain: str, op_type: str) -> StaticKernel | None:
    _ensure_loaded()
    return _STATIC.get((domain, op_type))


def lowered_ops() -> dict[tuple[str, str], list[tuple[int, int | None]]]:
    _ensure_loaded()
    return {key: [(e.since, e.until) for e in entries] for key, entries in _RULES.items()}


def _qualified(domain: str, op_type: str) -> str:
    return f"{domain}::{op_type}" if domain else op_type


def _ensure_loaded() -> None:
    from . import ops  # noqa: F401  (registers the rule families)


@dataclass
class LoweringContext:
    """What a rule may ask about the node it lowers."""

    node: Node
    opset: int
    precision: str = "fp32"
    platform: str = "cpu"
    lower_subgraph: Callable[[Graph], Callable[..., list]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    native: bool = False  # the native CPU kernels (native/) may run fp32 products and attention

    @property
    def name(self) -> str:
        return self.node.name or self.node.op_type

    @property
    def input_types(self) -> list[ValueType | None]:
        return [v.type if v is not None else None for v in self.node.inputs]

    def output_needed(self, index: int) -> bool:
        """Whether output `index` is read by a node or is a graph output."""
        outputs = self.node.outputs
        value = outputs[index] if index < len(outputs) else None
        return value is not None and bool(value.uses or value.is_graph_output())

    @property
    def output_types(self) -> list[ValueType | None]:
        return [v.type for v in self.node.outputs]

    def output_dtype(self, index: int = 0) -> np.dtype | None:
        """The numpy dtype the IR says output `index` has (None when unknown)."""
        value_type = self.node.outputs[index].type
        if isinstance(value_type, TensorType) and value_type.dtype:
            return value_type.dtype.numpy
        return None

    def num_outputs(self) -> int:
        return len(self.node.outputs)

    def output_used(self, index: int) -> bool:
        value = self.node.outputs[index] if index < len(self.node.outputs) else None
        return value is not None and value.name != "" and (bool(value.uses) or value.is_graph_output())

    def fail(self, reason: str) -> UnsupportedError:
        """An error naming this node, for rules that meet a case they cannot lower."""
        return UnsupportedError(f"cannot lower {self.node.op_type} node {self.name!r}: {reason}")


def is_static(value: Any) -> bool:
    """True when `value` is known at trace time (a numpy array, not a jax array or tracer)."""
    return isinstance(value, np.ndarray) or isinstance(value, (int, float, np.number))


def static_ints(value: Any) -> tuple:
    """A static 1-D value as a tuple of ints (or symbolic dims under jax.export)."""
    if not is_static(value):
        raise UnsupportedError("a shape-like input is computed at run time; it must be known while tracing")
    flat = np.asarray(value).reshape(-1)
    return tuple(int(v) if isinstance(v, (int, np.integer)) else v for v in flat.tolist())
