"""Backends are found here by name (cpu, gpu, tpu, onnx, tensorrt, asic); backend packages
register themselves, the compiler never imports them directly."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import ModelLoadError, OptionError, OutputError
from .ir import Graph, TensorType
from .pass_infra import PassContext


@dataclass(frozen=True)
class _InputSpec:
    """One runtime input: its name, whether it is a tensor (else a sequence or optional), the dtype
    it must have, its dims (ints fixed, None free) and the declared shape for messages."""

    name: str
    tensor: bool
    dtype: Any  # a numpy dtype or scalar type, None where unchecked
    dims: tuple[int | None, ...] | None
    declared: Any

    def bind(self, value: Any) -> Any:
        if not self.tensor:
            return _sequence_or_optional(value)  # a list of arrays, or None
        array = np.asarray(value)
        if self.dtype is None or array.dtype == object:
            return array
        if array.dtype != self.dtype:
            if not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
                raise OptionError(f"input {self.name!r} must be {self.dtype}, got {array.dtype}")
            array = array.astype(self.dtype)
        if self.dims is not None:
            if len(self.dims) != array.ndim:
                raise OptionError(f"input {self.name!r} must have rank {len(self.dims)} {self.declared!r}, got shape {array.shape}")
            for axis, (want, got) in enumerate(zip(self.dims, array.shape)):
                if want is not None and want != got:
                    raise OptionError(f"input {self.name!r} dim {axis} must be {want}, got {got} (shape {array.shape})")
        return array


class CompiledModel:
    """The result of compile(): call it with numpy arrays; `report` says what the compiler did;
    `save(folder)` writes the optimized ONNX, the backend's artifacts and report.json."""

    backend_name = "base"

    def __init__(self, graph: Graph, report: "Any", ctx: PassContext):
        self.graph = graph
        self.report = report
        self.ctx = ctx

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self._input_specs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.graph.outputs]

    @functools.cached_property
    def _input_specs(self) -> tuple["_InputSpec", ...]:
        """What each runtime input must be, read off the graph once (binding runs on every call)."""
        specs = []
        for value in (v for v in self.graph.inputs if v.const_value is None):
            tensor = isinstance(value.type, TensorType) or value.type is None
            dtype = value.type.dtype.numpy if isinstance(value.type, TensorType) and value.type.dtype else None
            shape = value.type.shape if isinstance(value.type, TensorType) else None
            dims = None if shape is None else tuple(d if isinstance(d, int) else None for d in shape)
            specs.append(_InputSpec(value.name, tensor, dtype, dims, shape))
        return tuple(specs)

    def bind_inputs(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[np.ndarray]:
        """Positional and/or by-name inputs -> one array per graph input, checked for count, dtype
        and rank (one clear error per mistake)."""
        specs = self._input_specs
        if not kwargs and len(args) == len(specs):  # every input by position: the common call
            return [spec.bind(value) for spec, value in zip(specs, args)]
        names = self.input_names
        if len(args) > len(specs):
            raise OptionError(f"model takes {len(specs)} inputs ({', '.join(names)}), got {len(args)}")
        bound: dict[str, Any] = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise OptionError(f"model has no input named {key!r}", f"inputs are: {', '.join(names)}")
            if key in bound:
                raise OptionError(f"input {key!r} given twice")
            bound[key] = value
        if len(bound) != len(specs):
            raise OptionError(f"missing model input(s): {', '.join(n for n in names if n not in bound)}")
        return [spec.bind(bound[spec.name]) for spec in specs]

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        raise NotImplementedError

    def save(self, folder: str) -> str:
        """Write the artifact folder atomically: everything goes to a temporary sibling folder that
        replaces `folder` only once complete. The parent folder must exist."""
        from .onnx_io import export_model, save_model, write_bytes_atomic

        folder = os.path.abspath(os.fspath(folder))
        parent = os.path.dirname(folder)
        if not os.path.isdir(parent):
            raise OutputError(f"output folder {parent} does not exist", "create it first")
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise OutputError(f"{folder} exists and is not a folder", "choose another -o")
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.kiln-", dir=parent)
        try:
            model = export_model(self.graph, decompose_custom=self.ctx.option("decompose_custom", False))
            save_model(model, os.path.join(staging, "model.onnx"))
            self.save_artifacts(staging)
            manifest = {"backend": self.backend_name, "inputs": self.input_names, "outputs": self.output_names}
            manifest.update(self.manifest())
            self.report.artifacts = manifest
            write_bytes_atomic(os.path.join(staging, "report.json"), json.dumps(self.report.to_json(), indent=1, default=str))
            _swap_into_place(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    def save_artifacts(self, folder: str) -> None:
        """Backend-specific files beside model.onnx (none by default)."""

    def manifest(self) -> dict[str, Any]:
        return {}


def _sequence_or_optional(value: Any) -> Any:
    """A sequence input as a list of numpy arrays (an optional one may be None or a tensor)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_sequence_or_optional(item) for item in value]
    return np.asarray(value)


def _swap_into_place(staging: str, folder: str) -> None:
    """Rename the finished staging folder onto `folder`, replacing an older result."""
    os.chmod(staging, 0o777 & ~_umask())
    if os.path.isdir(folder):
        retired = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-", dir=os.path.dirname(folder))
        os.rmdir(retired)
        os.replace(folder, retired)
        os.replace(staging, folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class BackendSpec:
    """A registered backend: how to compile for it and how to load its saved artifacts."""

    name: str
    compile: Callable[[Graph, PassContext, Any], CompiledModel]
    load_artifact: Callable[[str, dict], CompiledModel] | None = None
    pipeline_family: str | None = None  # presets to use (e.g. "jax" for cpu/gpu/tpu)
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


_BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    _BACKENDS[spec.name] = spec
    return spec


def get_backend(name: str) -> BackendSpec:
    from .plugins import load_plugins

    load_plugins()
    spec = _BACKENDS.get(name)
    if spec is None:
        known = ", ".join(sorted(_BACKENDS)) or "none"
        raise OptionError(f"unknown backend {name!r}", f"choose one of: {known}")
    return spec


def registered_backends() -> list[str]:
    from .plugins import load_plugins

    load_plugins()
    return sorted(_BACKENDS)


def load_artifact(folder: str) -> CompiledModel:
    """Reload a folder written by CompiledModel.save with the backend named in its report."""
    path = os.path.join(folder, "report.json")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{folder} is not a kiln output folder (no report.json)", "pass a folder written by kiln compile -o")
    try:
        with open(path) as handle:
            report = json.load(handle)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from None
    manifest = report.get("artifacts") or {}
    spec = get_backend(manifest.get("backend", "onnx"))
    if spec.load_artifact is None:
        raise ModelLoadError(f"backend {spec.name!r} cannot reload saved artifacts")
    return spec.load_artifact(folder, report)
