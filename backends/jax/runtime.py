"""Calling a jitted model: weights placed on the device(s) once, inputs placed (sharded over the
batch with --devices), outputs back as numpy in the dtypes the graph declares."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from compiler.ir import Graph, TensorType

from .sharding import Placement


class JitRunner:
    """`function(params, *inputs)` jitted once, with params resident on the placement's devices."""

    def __init__(self, function: Callable[..., Any], params: Mapping[str, np.ndarray], placement: Placement,
                 graph: Graph):
        self.placement = placement
        self.host_params = dict(params)
        self._jitted = jax.jit(function)
        self._device_params: dict[str, jax.Array] | None = None
        self._output_dtypes = [_declared_dtype(v) for v in graph.outputs]

    @property
    def device_params(self) -> dict[str, jax.Array]:
        if self._device_params is None:
            self._device_params = self.placement.place_params(self.host_params)
        return self._device_params

    def run_on_device(self, arrays: Sequence[Any]) -> list[Any]:
        """Outputs as jax arrays (still on the device; call block_until_ready to time them)."""
        with jax.default_device(self.placement.device):
            return self._jitted(self.device_params, *self.placement.place_inputs(arrays))

    def __call__(self, arrays: Sequence[Any]) -> list[Any]:
        outputs = self.run_on_device(arrays)
        return [_to_host(output, dtype) for output, dtype in zip(outputs, self._output_dtypes + [None] * len(outputs))]

    def lower(self, arrays: Sequence[Any]) -> Any:
        """The jax `Lowered` for these inputs (for inspecting HLO and shardings)."""
        with jax.default_device(self.placement.device):
            return self._jitted.lower(self.device_params, *self.placement.place_inputs(arrays))


def _declared_dtype(value: Any) -> np.dtype | None:
    if isinstance(value.type, TensorType) and value.type.dtype is not None:
        try:
            return np.dtype(value.type.dtype.numpy)
        except TypeError:
            return None
    return None


def _to_host(output: Any, dtype: np.dtype | None) -> Any:
    """numpy, in the declared dtype (JAX without x64 returns int32/float32 for 64-bit outputs)."""
    if isinstance(output, (list, tuple)):
        return [_to_host(item, None) for item in output]
    array = np.asarray(output)
    if dtype is not None and array.dtype != dtype and array.dtype != object:
        array = array.astype(dtype)
    return array
