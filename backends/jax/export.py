"""jax.export of a lowered model for cpu, gpu (CUDA) or tpu from any machine: symbolic dimensions of
the graph's inputs stay symbolic (jax.export.symbolic_shape), weights stay arguments."""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from compiler.errors import OptionError, UnsupportedError
from compiler.ir import Graph, TensorType

from . import symbolic_bounds

# our backend names -> jax.export platform names
EXPORT_PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
# jax.export platform names -> the names jax.devices() / jax.default_backend() use
RUNTIME_PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


def platform_present(platform: str) -> bool:
    """Whether this machine has devices of our backend/export `platform` (cpu, gpu, cuda, tpu)."""
    runtime = RUNTIME_PLATFORMS.get(platform, platform)
    if runtime == "cpu":
        return True
    if jax.default_backend() == runtime:
        return True
    try:
        return bool(jax.devices(runtime))
    except RuntimeError:
        return False


def local_platform() -> str:
    """The best platform this machine has, as jax names it (cpu, gpu, tpu)."""
    return jax.default_backend()


def input_values(graph: Graph) -> list:
    """The graph inputs the lowered function takes (those not backed by an initializer)."""
    return [v for v in graph.inputs if v.const_value is None]


def _symbol_name(dim: Any, taken: dict[str, str], counter: list[int]) -> str:
    """A valid jax.export symbol for an ONNX dim parameter (same parameter -> same symbol)."""
    if dim is None or dim == "":
        counter[0] += 1
        return f"_unnamed{counter[0]}"
    key = str(dim)
    if key not in taken:
        cleaned = re.sub(r"\W", "_", key)
        if not cleaned or cleaned[0].isdigit():
            cleaned = "d_" + cleaned
        while cleaned in taken.values():
            cleaned += "_"
        taken[key] = cleaned
    return taken[key]


def parse_static_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """`--shapes NAME=1x3x224x224` entries -> {name: dims}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        name, _, dims = item.partition("=")
        parts = dims.lower().split("x")
        if not name or not all(p.isdigit() for p in parts):
            raise OptionError(f"--shapes expects NAME=DIMS like input=1x3x224x224, got {item!r}")
        shapes[name] = tuple(int(p) for p in parts)
    return shapes


def input_specs(graph: Graph, static_shapes: Mapping[str, Sequence[int]] | None = None,
                constraints: Sequence[str] = ()) -> tuple[list[jax.ShapeDtypeStruct], dict[str, str]]:
    """ShapeDtypeStructs for the graph inputs with symbolic dims kept (one shared scope, with
    `constraints` such as "seq <= 512"), and the map ONNX dim name -> jax symbol."""
    scope = jax.export.SymbolicScope(tuple(constraints))
    taken: dict[str, str] = {}
    counter = [0]
    specs = []
    for value in input_values(graph):
        if not isinstance(value.type, TensorType) or value.shape is None or value.type.dtype is None:
            raise UnsupportedError(f"input {value.name!r} has no known tensor type and rank; cannot export it")
        fixed = (static_shapes or {}).get(value.name)
        if fixed is not None:
            if len(fixed) != len(value.shape):
                raise OptionError(f"--shapes {value.name}: rank {len(fixed)} given, the input has rank {len(value.shape)}")
            dims: list[Any] = list(fixed)
        else:
            dims = [d if isinstance(d, int) else _symbol_name(d, taken, counter) for d in value.shape]
        text = ", ".join(str(d) for d in dims)
        shape = jax.export.symbolic_shape(text, scope=scope) if dims else ()
        specs.append(jax.ShapeDtypeStruct(tuple(shape), _jax_dtype(value.type.dtype.numpy)))
    return specs, taken


def _jax_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype JAX will actually use for `dtype` (64-bit types narrow unless x64 is on)."""
    return jax.dtypes.canonicalize_dtype(dtype)


def param_specs(params: Mapping[str, np.ndarray]) -> dict[str, jax.ShapeDtypeStruct]:
    return {name: jax.ShapeDtypeStruct(array.shape, _jax_dtype(array.dtype)) for name, array in params.items()}


def export_function(
    function: Callable[..., Any],
    params: Mapping[str, np.ndarray],
    graph: Graph,
    platform: str,
    static_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[jax.export.Exported, dict[str, str], list[str]]:
    """Export `function(params, *inputs)` for one backend platform (cpu, gpu, tpu); returns the
    Exported, the ONNX dim name -> symbol map and the bounds on symbols the graph implies."""
    target = EXPORT_PLATFORMS.get(platform, platform)
    constraints: list[str] = []
    while True:
        specs, symbols = input_specs(graph, static_shapes, constraints)
        with symbolic_bounds.collecting() as implied:
            try:
                exported = jax.export.export(jax.jit(function), platforms=[target])(param_specs(params), *specs)
                return exported, symbols, constraints
            except UnsupportedError:
                raise
            except Exception as error:  # jax reports shape-polymorphism limits as assorted exception types
                failure = error
        new = [bound for bound in implied if bound not in constraints]
        if not new:  # retry only with bounds the graph itself implies (a slice of a constant table)
            break
        constraints += new
    reason = " ".join(str(failure).split())[:300]
    hint = "fix the symbolic dims with --shapes NAME=DIMS" if symbols else None
    raise UnsupportedError(f"jax.export for {target} failed: {type(failure).__name__}: {reason}", hint) from None


def stablehlo_text(exported: jax.export.Exported) -> str:
    """The exported module as StableHLO text (what `stablehlo.mlir` holds)."""
    return exported.mlir_module()


def check_bounds(exported: jax.export.Exported, arrays: Sequence[Any], constraints: Sequence[str]) -> None:
    """One clear error when the inputs' sizes break a bound the graph implies (``seq <= 512``);
    jax.export itself reports it as a failure to refine shapes."""
    sizes: dict[str, int] = {}
    avals = exported.in_avals[len(exported.in_avals) - len(arrays):]
    for aval, array in zip(avals, arrays):
        for dim, size in zip(aval.shape, np.shape(array)):
            if not isinstance(dim, int):
                sizes.setdefault(str(dim), int(size))
    for constraint in constraints:
        symbol, _, limit = (part.strip() for part in constraint.partition("<="))
        if symbol in sizes and sizes[symbol] > int(limit):
            raise OptionError(f"input dim {symbol}={sizes[symbol]} is over {limit}, the most this model takes",
                              f"the graph slices a constant table of {limit} rows by {symbol}")
