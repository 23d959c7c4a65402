"""Calling a jitted model: weights placed on the device(s) once, inputs placed (sharded over the
batch with --devices), outputs back as numpy in the dtypes the graph declares."""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from compiler.ir import Graph, TensorType

from .sharding import Placement
from .static_inputs import StaticInput
from .xla_options import compiler_options


ASYNC_DISPATCH_FLAG = "jax_cpu_enable_async_dispatch"


def run_cpu_programs_inline() -> bool:
    """Turn off JAX's asynchronous CPU dispatch before the CPU client exists, so a call runs its
    program on the calling thread instead of handing it (and each of its kernels) to worker threads:
    every call waits for its numpy outputs anyway, and the hand-offs cost 20-100 us a call (the
    bundled transformer sample: 135 -> 40 us). Multi-device programs stay asynchronous (JAX's rule).
    A JAX_CPU_ENABLE_ASYNC_DISPATCH in the environment, or a client made before graphkiln's backend
    was imported, is left as it is. Returns whether the setting was applied."""
    if ASYNC_DISPATCH_FLAG.upper() in os.environ:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # a JAX without this module keeps its default
        return False
    if xla_bridge.backends_are_initialized():
        return False
    jax.config.update(ASYNC_DISPATCH_FLAG, False)
    return True


class JitRunner:
    """`function(params, *inputs)` jitted once, with params resident on the placement's devices."""

    def __init__(self, function: Callable[..., Any], params: Mapping[str, np.ndarray], placement: Placement,
                 graph: Graph):
        self.placement = placement
        self.host_params = dict(params)
        # inputs that only feed shapes are baked into the trace (see static_inputs.py)
        self.static_inputs = tuple(getattr(function, "static_inputs", ()))
        eager_ops = tuple(getattr(function, "eager_ops", ()))
        if eager_ops:  # output shapes depend on input values: XLA cannot compile it as one program
            warnings.warn(f"model runs op by op without jit: {', '.join(eager_ops)} give data-dependent output shapes "
                          "or use strings",
                          stacklevel=2)
            self._jitted = _eager(function)
        else:
            self._jitted = jax.jit(function, static_argnums=tuple(1 + i for i in self.static_inputs),
                                   **_options(placement.device.platform))
        self._device_params: dict[str, jax.Array] | None = None
        self._output_dtypes = [_declared_dtype(v) for v in graph.outputs]
        # committed weights (or a mesh's sharded inputs) fix where a jitted call runs; otherwise the
        # default device would, so it is set around the call (a context costs microseconds a call)
        self._pin_device = bool(eager_ops) or not self.host_params

    @property
    def device_params(self) -> dict[str, jax.Array]:
        if self._device_params is None:
            self._device_params = self.placement.place_params(self.host_params)
        return self._device_params

    def run_on_device(self, arrays: Sequence[Any]) -> list[Any]:
        """Outputs as jax arrays (still on the device; call block_until_ready to time them)."""
        if not self._pin_device:
            return self._jitted(self.device_params, *self._place(arrays))
        with jax.default_device(self.placement.device):
            return self._jitted(self.device_params, *self._place(arrays))

    def _place(self, arrays: Sequence[Any]) -> list[Any]:
        """Inputs placed on the devices; shape-only inputs wrapped as static jit arguments."""
        if not self.static_inputs:
            return self.placement.place_inputs(arrays)
        dynamic = [a for i, a in enumerate(arrays) if i not in self.static_inputs]
        placed = iter(self.placement.place_inputs(dynamic))
        return [StaticInput(a) if i in self.static_inputs else next(placed) for i, a in enumerate(arrays)]

    def __call__(self, arrays: Sequence[Any]) -> list[Any]:
        outputs = self.run_on_device(arrays)
        return [_to_host(output, dtype) for output, dtype in zip(outputs, self._output_dtypes + [None] * len(outputs))]

    def lower_abstract(self, inputs: Sequence[jax.ShapeDtypeStruct]) -> Any:
        """The jax `Lowered` from shapes alone, placed as calls place their arrays, so compiling it
        fills the persistent cache entry a later process running the same program will look up."""
        params = {name: jax.ShapeDtypeStruct(np.shape(array), array.dtype, sharding=self.placement.param_sharding(array))
                  for name, array in self.host_params.items()}
        if self.placement.mesh is not None:
            inputs = [jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=self.placement.input_sharding(spec)) for spec in inputs]
        with jax.default_device(self.placement.device):
            return self._jitted.lower(params, *inputs)

    def lower(self, arrays: Sequence[Any]) -> Any:
        """The jax `Lowered` for these inputs (for inspecting HLO and shardings)."""
        with jax.default_device(self.placement.device):
            return self._jitted.lower(self.device_params, *self._place(arrays))


def _options(platform: str) -> dict[str, Any]:
    """jax.jit's keyword for the platform's compiler options (none where there are none)."""
    options = compiler_options(platform)
    return {"compiler_options": options} if options else {}


def _eager(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` called directly on concrete jax arrays (each op runs eagerly)."""

    def concrete(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [concrete(item) for item in value]
        if value is None or isinstance(value, StaticInput) or np.asarray(value).dtype.kind in "OUS":
            return value  # strings stay numpy (host ops)
        return jax.numpy.asarray(value)

    def run(params: Any, *inputs: Any) -> Any:
        return function(params, *[concrete(value) for value in inputs])

    return run


def _declared_dtype(value: Any) -> np.dtype | None:
    if isinstance(value.type, TensorType) and value.type.dtype is not None:
        try:
            return np.dtype(value.type.dtype.numpy)
        except TypeError:
            return None
    return None


def _to_host(output: Any, dtype: np.dtype | None) -> Any:
    """numpy, in the declared dtype (JAX without x64 returns int32/float32 for 64-bit outputs)."""
    if output is None:  # an empty optional
        return None
    if isinstance(output, (list, tuple)):
        return [_to_host(item, None) for item in output]
    array = np.asarray(output)
    if dtype is not None and array.dtype != dtype and array.dtype != object:
        array = array.astype(dtype)
    return array
