"""Where a model's arrays live: one device, or a jax.sharding Mesh ("batch" x "model") for
`--devices N [--model-parallel M]`. Inputs are split along their first (batch) dimension over the
"batch" axis; weights are replicated, except large 2-D matrices, which are split over the "model"
axis (tensor/model parallelism). XLA's SPMD partitioner inserts the collectives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from compiler.errors import OptionError

BATCH_AXIS = "batch"
MODEL_AXIS = "model"
MODEL_PARALLEL_MIN_ELEMENTS = 1 << 18  # 2-D weights at least this big are split over "model"


@dataclass
class Placement:
    """One device (mesh None) or a batch x model mesh, and how each array is placed on it."""

    device: jax.Device
    mesh: Mesh | None = None
    model_parallel_min_elements: int = MODEL_PARALLEL_MIN_ELEMENTS
    notes: list[str] = field(default_factory=list)

    @property
    def device_count(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.size

    @property
    def batch_parallel(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape[BATCH_AXIS]

    @property
    def model_parallel(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape[MODEL_AXIS]

    def param_sharding(self, array: Any) -> Any:
        """The weight's Sharding: on the one device, replicated, or split over "model" along a
        divisible axis of a large 2-D weight."""
        if self.mesh is None:
            return SingleDeviceSharding(self.device)
        spec = PartitionSpec()
        parts = self.model_parallel
        if parts > 1 and np.ndim(array) == 2 and np.size(array) >= self.model_parallel_min_elements:
            rows, columns = np.shape(array)
            if columns % parts == 0:
                spec = PartitionSpec(None, MODEL_AXIS)
            elif rows % parts == 0:
                spec = PartitionSpec(MODEL_AXIS, None)
        return NamedSharding(self.mesh, spec)

    def input_sharding(self, array: Any) -> Any:
        """On the one device, or split along the first dimension over "batch" when it divides
        evenly, else replicated."""
        if self.mesh is None:
            return SingleDeviceSharding(self.device)
        parts = self.batch_parallel
        if np.ndim(array) >= 1 and parts > 1 and np.shape(array)[0] % parts == 0:
            spec = PartitionSpec(BATCH_AXIS, *([None] * (np.ndim(array) - 1)))
        else:
            spec = PartitionSpec()
        return NamedSharding(self.mesh, spec)

    def place_params(self, params: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """Weights on the device(s), once, so calls do not copy them again."""
        return {name: jax.device_put(array, self.param_sharding(array)) for name, array in params.items()}

    def place_inputs(self, arrays: Sequence[Any]) -> list[Any]:
        """Inputs sharded over the mesh; on one device numpy arrays go to jit as they are (its C++
        path copies them faster than jax.device_put, and the committed weights fix the device)."""
        if self.mesh is None:
            return list(arrays)
        return [jax.device_put(array, self.input_sharding(array)) for array in arrays]

    def describe(self) -> str:
        if self.mesh is None:
            return f"1 {self.device.platform} device"
        return (f"{self.device_count} {self.device.platform} devices "
                f"(mesh batch={self.batch_parallel} x model={self.model_parallel})")

    def sharded_params(self, params: Mapping[str, Any]) -> list[str]:
        """Names of the weights that are split over the "model" axis."""
        names = []
        for name, array in params.items():
            sharding = self.param_sharding(array)
            if isinstance(sharding, NamedSharding) and any(axis is not None for axis in sharding.spec):
                names.append(name)
        return names


def make_placement(platform: str, devices: int | None = None, model_parallel: int | None = None,
                   model_parallel_min_elements: int | None = None) -> Placement:
    """A Placement on `platform` (cpu/gpu/tpu) over `devices` devices, `model_parallel` of them
    along the model axis."""
    count = int(devices or 1)
    model = int(model_parallel or 1)
    if count < 1 or model < 1:
        raise OptionError(f"--devices and --model-parallel must be positive, got {count} and {model}")
    if count % model:
        raise OptionError(f"--model-parallel {model} must divide --devices {count}")
    available = jax.devices(platform)
    if count > len(available):
        hint = ("on the CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate N devices"
                if platform == "cpu" else None)
        raise OptionError(f"--devices {count} asks for {count} {platform} devices; this machine has {len(available)}", hint)
    minimum = MODEL_PARALLEL_MIN_ELEMENTS if model_parallel_min_elements is None else int(model_parallel_min_elements)
    if count == 1:
        return Placement(available[0], None, minimum)
    grid = np.array(available[:count], dtype=object).reshape(count // model, model)
    return Placement(available[0], Mesh(grid, (BATCH_AXIS, MODEL_AXIS)), minimum)
