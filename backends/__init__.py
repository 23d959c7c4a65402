"""Backends of graphkiln; importing this package registers them with compiler.backend_registry."""

from . import onnx  # noqa: F401
