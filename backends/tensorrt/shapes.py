"""Static input shapes from --shapes NAME=DIMS and TensorRT optimization profiles (min/opt/max)
derived from them or from the model's symbolic dimensions."""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from compiler.errors import OptionError
from compiler.ir import Graph, Value

DEFAULT_PROFILE = {"min": 1, "opt": 8, "max": 64}  # per symbolic dim when no --shapes is given


def parse_shapes(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, tuple[int, ...]]:
    """['input=1x3x224x224', ...] (or a mapping name -> dims) -> {name: dims}; for a range
    NAME=MIN:OPT:MAX the opt dims (the profile keeps all three, see parse_shape_ranges)."""
    return {name: ranges["opt"] for name, ranges in parse_shape_ranges(items).items()}


def parse_shape_ranges(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, dict[str, tuple[int, ...]]]:
    """--shapes NAME=DIMS (static) or NAME=MIN:OPT:MAX (a TensorRT profile range) -> {name:
    {"min", "opt", "max"}}; one clear error for a malformed item."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {name: {key: tuple(int(d) for d in dims) for key in ("min", "opt", "max")} for name, dims in items.items()}
    ranges: dict[str, dict[str, tuple[int, ...]]] = {}
    for item in items:
        name, _, text = str(item).partition("=")
        parts = text.strip().split(":")
        if not name or len(parts) not in (1, 3) or not all(re.fullmatch(r"\d+(x\d+)*", p) for p in parts):
            raise OptionError(f"--shapes expects NAME=DIMS like input=1x3x224x224 (or NAME=MIN:OPT:MAX), got {item!r}")
        dims = [tuple(int(d) for d in p.split("x")) for p in (parts * 3 if len(parts) == 1 else parts)]
        if len({len(d) for d in dims}) != 1 or any(not a <= b <= c for a, b, c in zip(*dims)):
            raise OptionError(f"--shapes {name}: MIN:OPT:MAX must have one rank and min <= opt <= max, got {text!r}")
        ranges[name.strip()] = dict(zip(("min", "opt", "max"), dims))
    return ranges


def graph_inputs(graph: Graph) -> list[Value]:
    return [v for v in graph.inputs if v.const_value is None]


def symbols_from_shapes(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Bind the symbolic dims of the graph inputs to the --shapes sizes, checking every given
    shape against the input's rank and fixed dims (one clear error per mismatch)."""
    inputs = {v.name: v for v in graph_inputs(graph)}
    symbols: dict[str, int] = {}
    for name, dims in shapes.items():
        if name not in inputs:
            raise OptionError(f"--shapes names {name!r}, which is not a model input", f"inputs are: {', '.join(inputs)}")
        declared = inputs[name].shape
        if declared is None:
            continue
        if len(declared) != len(dims):
            raise OptionError(f"--shapes {name}: the input has rank {len(declared)}, got {len(dims)} dims")
        for axis, (want, got) in enumerate(zip(declared, dims)):
            if isinstance(want, int) and want != got:
                raise OptionError(f"--shapes {name}: dim {axis} is fixed at {want}, got {got}")
            if isinstance(want, str):
                if symbols.get(want, got) != got:
                    raise OptionError(f"--shapes gives symbol {want!r} two sizes ({symbols[want]} and {got})")
                symbols[want] = got
    return symbols


def dynamic_inputs(graph: Graph) -> dict[str, list[Any]]:
    """Inputs with a symbolic or unknown dim -> their declared shapes."""
    return {v.name: list(v.shape) for v in graph_inputs(graph)
            if v.shape is not None and any(not isinstance(d, int) for d in v.shape)}


def optimization_profile(graph: Graph, ranges: Mapping[str, Mapping[str, tuple[int, ...]]]) -> dict[str, Any]:
    """The shapes TensorRT builds for: --shapes ranges as given (static when min = opt = max for
    every input), symbolic dims of inputs not named taking DEFAULT_PROFILE."""
    symbols = symbols_from_shapes(graph, {name: r["opt"] for name, r in ranges.items()})
    for key in ("min", "max"):  # the same checks (fixed dims, one size per symbol) for the bounds
        symbols_from_shapes(graph, {name: r[key] for name, r in ranges.items()})
    profile: dict[str, Any] = {}
    missing = []
    for value in graph_inputs(graph):
        if value.name in ranges:
            profile[value.name] = {key: list(ranges[value.name][key]) for key in ("min", "opt", "max")}
            continue
        if value.shape is None:
            missing.append(value.name)
            continue
        entry = {}
        for key in ("min", "opt", "max"):
            entry[key] = [d if isinstance(d, int) else symbols.get(d, DEFAULT_PROFILE[key]) for d in value.shape]
        profile[value.name] = entry
    static = all(p["min"] == p["max"] for p in profile.values()) and not missing
    return {"static": static, "inputs": profile, "unknown_rank": missing}
